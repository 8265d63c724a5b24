"""Hostile or broken clients, over real sockets: each gets a bounded, clean answer and never harms another.

Half-sent requests and trickled bodies (slowloris), bodies nested 100k deep, texts that are not valid Unicode.
Wall-time bounds are generous (the machine is shared); what is asserted is that the server acts, not how fast.
"""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest


def _error(response: httpx.Response, status: int, *needles: str) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    message = message if isinstance(message, str) else message["message"]
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize(("path", "body"), [("/vectorize", b"["), ("/v1/embeddings", b'{"input": ')])
def test_json_nested_100k_deep_is_400(client, path, body) -> None:
    # json.loads raises RecursionError on it: once a 500 "internal error".
    response = client.post(path, content=body * 100_000)
    _error(response, 400, "nested too deeply")


def test_lone_surrogate_is_400_naming_the_item_and_the_connection_stays_usable(server, raw_http) -> None:
    # JSON may carry "\ud800" (a lone surrogate): a Python str, but no text. It once gave 500 and closed the
    # keep-alive connection, so the next request a client sent on it failed.
    (status, body), (after, _) = raw_http.exchange(server.url, [
        raw_http.post("/vectorize", b'{"texts": ["fine", "a\\ud800"]}'),
        raw_http.post("/vectorize", b'{"texts": ["next request on the same connection"]}'),
    ])
    assert status == 400 and json.loads(body)["error"].startswith("texts[1]: not valid Unicode"), body
    assert after == 200


@pytest.mark.parametrize("image", ["data:image/png;base64,\ud800", "\ud800" * 20])
def test_lone_surrogate_in_an_image_string_is_400(client, image) -> None:
    response = client.post("/vectorize", content=json.dumps({"images": [image]}).encode())
    _error(response, 400, "images[0]")


def test_bad_text_requests_cost_no_forward_passes_of_others(start_server, wait_for) -> None:
    # 10% of requests carry a lone surrogate. They are refused while decoding, before they can join a batch, so the
    # good ones share forward passes as if the bad ones had not been sent (once: every request of a failed batch
    # was retried alone, 409 -> 1579 forwards).
    running = start_server(max_batch_size=32)
    bodies = [json.dumps({"texts": [f"caption {i}"] + (["a\ud800"] if i % 10 == 0 else [])}).encode()
              for i in range(20)]
    with ThreadPoolExecutor(len(bodies)) as pool, running.batcher.hold():
        futures = [pool.submit(httpx.post, running.url + "/vectorize", content=b, timeout=60) for b in bodies]
        wait_for(lambda: running.batcher.queued_requests == 18, what="the good requests queued")
        wait_for(lambda: sum(f.done() for f in futures) == 2, what="the bad requests answered")
    statuses = [f.result().status_code for f in futures]
    assert statuses == [400 if i % 10 == 0 else 200 for i in range(20)]
    assert all("texts[1]" in futures[i].result().json()["error"] for i in (0, 10))
    stats = httpx.get(running.url + "/meta").json()["server"]["encode_stats"]
    assert (stats["text_batches"], stats["texts"]) == (1, 18)  # one forward for the 18 good texts


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if sock.recv(1024) == b"":
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def test_half_sent_requests_are_closed_after_the_header_timeout(start_server) -> None:
    running = start_server(header_timeout_s=1.0)
    host, port = running.url.removeprefix("http://").split(":")
    sockets = []
    for n in range(20):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(b"POST /vectorize HTTP/1.1\r\nHost: x\r\n" if n % 2 else b"POS")  # never finished
        sockets.append(sock)
    deadline = time.monotonic() + 30  # generous: the machine is shared
    try:
        assert all(_closed_by_server(sock, deadline) for sock in sockets)  # once: open until the client left
    finally:
        for sock in sockets:
            sock.close()
    assert httpx.post(running.url + "/vectorize", json={"texts": ["still serving"]}, timeout=60).status_code == 200


def test_a_request_in_progress_is_not_cut_by_the_header_timeout(start_server, wait_for, raw_http) -> None:
    running = start_server(header_timeout_s=0.5)
    with ThreadPoolExecutor(1) as pool, running.batcher.hold():
        # Two requests on one connection; the first waits for the held worker longer than the header timeout.
        answers = pool.submit(raw_http.exchange, running.url, [
            raw_http.post("/vectorize", b'{"texts": ["slow"]}'), raw_http.post("/vectorize", b'{"texts": ["b"]}'),
        ])
        wait_for(lambda: running.batcher.queued_requests == 1, what="request queued")
        time.sleep(1.0)  # past the header timeout (a lower bound, not a timing assertion)
    assert [status for status, _ in answers.result()] == [200, 200]


def test_a_trickled_body_gets_408_after_the_body_timeout(start_server) -> None:
    running = start_server(body_timeout_s=1.0)
    host, port = running.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /vectorize HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        sock.settimeout(0.2)
        answer = b""
        deadline = time.monotonic() + 30  # generous: the machine is shared
        while time.monotonic() < deadline and b"\r\n\r\n" not in answer:
            try:
                sock.sendall(b" ")  # one byte at a time: each read succeeds, the body never completes
                answer += sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"connection: close" in answer.lower()
        assert _closed_by_server(sock, time.monotonic() + 30)
    assert httpx.post(running.url + "/vectorize", json={"texts": ["still serving"]}, timeout=60).status_code == 200
