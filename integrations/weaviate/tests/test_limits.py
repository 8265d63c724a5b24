"""Overload, size limits, API key, readiness while loading, graceful shutdown: all over real HTTP."""

from __future__ import annotations

import base64
import io
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import httpx
import pytest

import numpy as np
from PIL import Image

from bge_siglip_vectorizer import ImageLimits, Vectorizer


def _assert_error(response: httpx.Response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    for needle in needles:
        assert needle in body["error"], body["error"]


def test_overload_is_back_pressure_in_arrival_order(start_server, wait_for) -> None:
    # Weaviate never retries a 503: a full queue holds further requests (in order) instead of refusing them.
    running = start_server(max_queue_items=4, max_items_per_request=4)
    url = running.url + "/vectorize"
    with ThreadPoolExecutor(3) as pool, running.batcher.hold():
        first = pool.submit(httpx.post, url, json={"texts": ["a", "b", "c"]}, timeout=60)
        wait_for(lambda: running.batcher.pending_items == 3, what="first request admitted")
        second = pool.submit(httpx.post, url, json={"texts": ["d", "e"]}, timeout=60)  # 3 + 2 > 4: held
        wait_for(lambda: running.batcher.waiting_requests == 1, what="second request held")
        # 3 + 1 would fit, but it arrived after the held one: it waits behind it, so nobody starves.
        third = pool.submit(httpx.post, url, json={"texts": ["f"]}, timeout=60)
        wait_for(lambda: running.batcher.waiting_requests == 2, what="third request held")
        assert running.batcher.pending_items == 3 and not second.done() and not third.done()
    assert [len(f.result().json()["textVectors"]) for f in (first, second, third)] == [3, 2, 1]
    meta = httpx.get(running.url + "/meta").json()["server"]
    assert (meta["held_for_room"], meta["rejected_overloaded"], meta["pending_items"]) == (2, 0, 0)


def test_a_request_held_past_its_waiting_budget_is_503(start_server, wait_for) -> None:
    running = start_server(max_queue_items=2, max_items_per_request=2, max_queue_wait_s=0.5)
    url = running.url + "/vectorize"
    with ThreadPoolExecutor(1) as pool, running.batcher.hold():
        first = pool.submit(httpx.post, url, json={"texts": ["a", "b"]}, timeout=60)
        wait_for(lambda: running.batcher.pending_items == 2, what="first request admitted")
        refused = httpx.post(url, json={"texts": ["c"]}, timeout=60)  # held 0.5 s, still no room
        _assert_error(refused, 503, "waited", "room in the queue", "0.5s")
        assert refused.headers["retry-after"] == "1"
        assert running.batcher.waiting_requests == 0  # it gave up its place in line
    # The admitted one waited as long for the held worker: the same budget, so it is not computed either.
    _assert_error(first.result(), 503, "batch worker")
    meta = httpx.get(running.url + "/meta").json()["server"]
    assert (meta["rejected_overloaded"], meta["expired"], meta["encode_stats"]["texts"]) == (1, 1, 0)
    assert httpx.post(url, json={"texts": ["c"]}, timeout=60).status_code == 200  # room again


def test_a_request_that_waited_too_long_for_the_worker_is_503_not_computed(start_server, wait_for) -> None:
    # Weaviate gives up after MODULES_CLIENT_TIMEOUT (50 s); work that waited longer than --max-queue-wait-s is not
    # computed.
    running = start_server(max_queue_wait_s=0.2)
    url = running.url + "/vectorize"
    with ThreadPoolExecutor(1) as pool, running.batcher.hold():
        stale = pool.submit(httpx.post, url, json={"texts": ["too late"]}, timeout=60)
        wait_for(lambda: running.batcher.queued_requests == 1, what="request queued")
        time.sleep(0.3)  # past the limit while the worker is held (a lower bound, not a timing assertion)
    _assert_error(stale.result(), 503, "waited", "0.2s")
    assert stale.result().headers["retry-after"] == "1"
    meta = httpx.get(running.url + "/meta").json()["server"]
    assert meta["expired"] == 1 and meta["max_queue_wait_s"] == 0.2
    assert meta["encode_stats"]["texts"] == 0  # answered without running the model
    assert running.batcher.pending_items == 0  # its capacity was given back
    fresh = httpx.post(url, json={"texts": ["on time"]}, timeout=60)
    assert fresh.status_code == 200 and len(fresh.json()["textVectors"]) == 1


def test_a_requests_own_decoding_is_not_waiting(start_server, bge_siglip_model_dir, png_b64) -> None:
    # A valid request with many images on an idle server decodes for longer than the waiting limit; no retry could
    # fix a 503 for it, so its own decode time must not count (it was 503 "overloaded" once).
    def slow_decoding() -> Vectorizer:
        vectorizer = Vectorizer.from_pretrained(bge_siglip_model_dir, device="cpu")
        prepare = vectorizer.prepare_images

        def slow(images, show_progress=None):
            time.sleep(0.1)  # like a big photo's decode
            return prepare(images, show_progress=show_progress)

        vectorizer.prepare_images = slow  # type: ignore[method-assign]
        return vectorizer

    running = start_server(max_queue_wait_s=0.5, app_options={"loader": slow_decoding})
    images = [png_b64(30 + i, 32, 24) for i in range(12)]  # >= 1.2 s of decoding
    started = time.monotonic()
    response = httpx.post(running.url + "/vectorize", json={"images": images}, timeout=120)
    assert time.monotonic() - started > 1.0  # the decoding really took longer than the limit
    assert response.status_code == 200, response.text
    assert len(response.json()["imageVectors"]) == 12


def test_unexpected_errors_are_logged_not_echoed(start_server, bge_siglip_model_dir, caplog, raw_http) -> None:
    def broken_vectorizer() -> Vectorizer:
        vectorizer = Vectorizer.from_pretrained(bge_siglip_model_dir, device="cpu")

        def fail(*args, **kwargs):
            raise RuntimeError("secret detail at /srv/private/model")

        vectorizer.encode_texts = fail  # type: ignore[method-assign]
        return vectorizer

    running = start_server(app_options={"loader": broken_vectorizer})
    with caplog.at_level(logging.ERROR, logger="bge_siglip_weaviate"):
        response = httpx.post(running.url + "/vectorize", json={"texts": ["x"]}, timeout=60)
    assert response.status_code == 500
    assert response.json() == {"error": "internal error (see the server log)"}
    assert "secret" in caplog.text  # the details are in the server's log
    # Still serving, on the same keep-alive connection too (Weaviate's Go client reuses its connections).
    (first, _), (second, body) = raw_http.exchange(running.url, [
        raw_http.post("/vectorize", b'{"texts": ["x"]}'), raw_http.post("/vectorize", b'{"images": []}'),
    ])
    assert (first, second) == (500, 200), body


def test_default_image_pixel_limit_is_the_cores(server) -> None:
    # The server refuses no image the library accepts (PIL's ~89.5 MP decompression-bomb bound).
    assert server.state.settings.max_image_pixels is None
    assert server.vectorizer.limits.max_pixels == ImageLimits().max_pixels > 48_771_072


def test_a_48_megapixel_phone_photo_embeds(client, bge_siglip_vectorizer) -> None:
    # 8064x6048, what 48 MP phone cameras write: once 413 from a 40 MP server default the core does not have.
    photo = Image.linear_gradient("L").resize((8064, 6048)).convert("RGB")
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=80)
    del photo
    data = buffer.getvalue()
    response = client.post("/vectorize", json={"images": [base64.b64encode(data).decode()]}, timeout=120)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["imageVectors"], bge_siglip_vectorizer.encode_images([data]),
                               atol=1e-5)


def test_body_too_large_is_413_json(start_server, png_b64) -> None:
    running = start_server(max_body_bytes=2048)
    big = {"images": [png_b64(1, 200, 200)]}
    _assert_error(httpx.post(running.url + "/vectorize", json=big), 413, "2048")

    def chunks():  # no Content-Length: the limit is enforced while reading
        yield b'{"texts": ["'
        for _ in range(10):
            yield b"x" * 500
        yield b'"]}'

    _assert_error(httpx.post(running.url + "/vectorize", content=chunks()), 413)
    assert httpx.post(running.url + "/vectorize", json={"texts": ["small"]}).status_code == 200


def test_too_many_items_is_413(start_server) -> None:
    running = start_server(max_items_per_request=3)
    _assert_error(httpx.post(running.url + "/vectorize", json={"texts": ["a", "b", "c", "d"]}), 413, "at most 3")


def test_image_over_the_pixel_limit_is_413_naming_it(start_server, png_b64) -> None:
    running = start_server(max_image_pixels=40 * 40)
    body = {"images": [png_b64(1, 30, 30), png_b64(2, 100, 100)]}
    _assert_error(httpx.post(running.url + "/vectorize", json=body), 413, "images[1]")


def test_api_key(start_server) -> None:
    running = start_server(api_key="s3cret")
    url = running.url
    body = {"texts": ["hello"]}
    response = httpx.post(url + "/vectorize", json=body)
    _assert_error(response, 401, "API key")
    assert response.headers["www-authenticate"] == "Bearer"
    _assert_error(httpx.post(url + "/vectorize", json=body, headers={"Authorization": "Bearer wrong"}), 401)
    _assert_error(httpx.post(url + "/vectorize", json=body, headers={"X-API-Key": "s3cret-not"}), 401)
    _assert_error(httpx.get(url + "/meta"), 401)
    assert httpx.post(url + "/vectorize", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert httpx.post(url + "/vectorize", json=body, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert httpx.get(url + "/meta", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert httpx.post(url + "/v1/embeddings", json={"model": "bge-siglip", "input": "hi"},
                      headers={"Authorization": "Bearer s3cret"}).status_code == 200
    # probes stay open: Weaviate and orchestrators call them without credentials
    assert httpx.get(url + "/.well-known/ready").status_code == 204
    assert httpx.get(url + "/.well-known/live").status_code == 204


def test_a_non_ascii_api_key_sent_as_utf8_works(start_server) -> None:
    running = start_server(api_key="clé-ü")
    body = {"texts": ["hello"]}
    for header in ("Authorization", "X-API-Key"):
        value = ("Bearer " if header == "Authorization" else "") + "clé-ü"
        response = httpx.post(running.url + "/vectorize", json=body, headers={header: value.encode("utf-8")})
        assert response.status_code == 200, (header, response.text)
    wrong = httpx.post(running.url + "/vectorize", json=body, headers={"X-API-Key": "clé-ü".encode("latin-1")})
    _assert_error(wrong, 401)  # the same characters in another encoding are other bytes


def test_not_ready_until_the_model_is_loaded(start_server, bge_siglip_model_dir, wait_for) -> None:
    release = threading.Event()

    def slow_loader() -> Vectorizer:
        release.wait(60)  # the real load, started only when the test has checked the loading state
        return Vectorizer.from_pretrained(bge_siglip_model_dir, device="cpu")

    running = start_server(wait_ready=False, app_options={"loader": slow_loader})
    try:
        _assert_error(httpx.get(running.url + "/.well-known/ready"), 503, "loading")
        assert httpx.get(running.url + "/.well-known/live").status_code == 204
        _assert_error(httpx.post(running.url + "/vectorize", json={"texts": ["x"]}), 503, "loading")
        # Weaviate shows /meta in its own /v1/meta: 200 with what is known, not an error body.
        meta = httpx.get(running.url + "/meta")
        assert meta.status_code == 200 and "error" not in meta.json()
        assert meta.json()["server"]["status"] == "loading" and meta.json()["model"] == "bge-siglip"
    finally:
        release.set()
    running.wait_ready()
    assert httpx.post(running.url + "/vectorize", json={"texts": ["x"]}).status_code == 200


def test_load_failure_is_reported_by_ready(start_server) -> None:
    failures: list[BaseException] = []

    def broken_loader() -> Vectorizer:
        return Vectorizer.from_pretrained("/nonexistent/model/dir", device="cpu")

    running = start_server(wait_ready=False, app_options={"loader": broken_loader, "on_load_failed": failures.append})
    assert running.state.loaded.wait(60)
    assert len(failures) == 1
    _assert_error(httpx.get(running.url + "/.well-known/ready"), 503, "failed to load")
    response = httpx.post(running.url + "/vectorize", json={"texts": ["x"]})
    _assert_error(response, 503, "failed to load", "server log")
    assert "/nonexistent" not in response.text  # Weaviate shows this to whoever inserted: no server paths
    meta = httpx.get(running.url + "/meta")
    assert meta.status_code == 200 and meta.json()["server"]["status"].startswith("failed to load")
    assert "/nonexistent" not in meta.text


def test_graceful_shutdown_finishes_in_flight_requests(start_server, wait_for) -> None:
    running = start_server()
    host, port = urlparse(running.url).hostname, urlparse(running.url).port

    def refuses_connections() -> bool:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return False
        except OSError:
            return True

    with ThreadPoolExecutor(1) as pool, running.batcher.hold():
        in_flight = pool.submit(httpx.post, running.url + "/vectorize", json={"texts": ["in flight"]}, timeout=60)
        wait_for(lambda: running.batcher.queued_requests == 1, what="request queued")
        running.server.should_exit = True  # what SIGTERM does
        wait_for(refuses_connections, what="listening socket closed")
        assert running.thread.is_alive()  # still waiting for the in-flight request
    response = in_flight.result()
    assert response.status_code == 200 and len(response.json()["textVectors"]) == 1
    running.thread.join(60)
    assert not running.thread.is_alive()


@pytest.mark.parametrize(
    "options",
    [{"max_batch_size": 0}, {"max_queue_items": 0}, {"max_items_per_request": 10, "max_queue_items": 5},
     {"max_wait_ms": -1}, {"max_body_bytes": 0}, {"max_queue_wait_s": 0}, {"max_concurrent_decodes": 0},
     {"max_image_pixels": 0}, {"max_body_bytes": 2**20, "max_pending_body_bytes": 2**19},
     {"header_timeout_s": 0}, {"body_timeout_s": 0}, {"batch_gain_margin": 2}, {"adaptive_max_batch_size": 0}],
)
def test_settings_are_validated(server_settings, options) -> None:
    with pytest.raises(ValueError):
        server_settings(**options)
