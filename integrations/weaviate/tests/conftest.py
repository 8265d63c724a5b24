"""Fixtures: the real inference server (uvicorn, real sockets on 127.0.0.1) running in a thread of the test process.

In-process so tests can read the server's own counters and hold its batcher; everything the tests send or read
still goes over real HTTP. The tiny model (``bge_siglip_model_dir``) comes from the core's pytest plugin.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import uvicorn

from bge_siglip_vectorizer.testing.images import encode_image, sample_image
from bge_siglip_weaviate.app import create_app
from bge_siglip_weaviate.server import uvicorn_config
from bge_siglip_weaviate.settings import ServerSettings

READY_TIMEOUT_S = 120.0


@dataclass
class RunningServer:
    url: str
    app: Any
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def state(self):
        return self.app.state.server

    @property
    def batcher(self):
        return self.state.batcher

    @property
    def vectorizer(self):
        return self.state.vectorizer

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while time.monotonic() < deadline:
                if client.get("/.well-known/ready").status_code == 204:
                    return
                time.sleep(0.05)
        raise TimeoutError(f"server at {self.url} not ready after {READY_TIMEOUT_S}s: {self.state.load_error}")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def start_server_thread(settings: ServerSettings, **app_options: Any) -> RunningServer:
    """uvicorn on a socket bound to a free port on 127.0.0.1, serving ``create_app(settings, ...)`` in a thread."""
    app = create_app(settings, **app_options)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # bound before the thread starts: no race for the port
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, settings, log_level="warning", timeout_graceful_shutdown=30))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    return RunningServer(f"http://127.0.0.1:{port}", app, server, thread)


@pytest.fixture(scope="session")
def server_settings(bge_siglip_model_dir: Path) -> Callable[..., ServerSettings]:
    def make(**options: Any) -> ServerSettings:
        return ServerSettings(model=str(bge_siglip_model_dir), device="cpu", **options)

    return make


@pytest.fixture(scope="session")
def server(server_settings) -> Iterator[RunningServer]:
    """The default server (batching on), shared by the protocol tests."""
    running = start_server_thread(server_settings())
    running.wait_ready()
    yield running
    running.stop()


@pytest.fixture
def start_server(server_settings) -> Iterator[Callable[..., RunningServer]]:
    """Factory for a server with its own settings (and fresh counters); stopped after the test."""
    started: list[RunningServer] = []

    def start(wait_ready: bool = True, app_options: dict[str, Any] | None = None, **options: Any) -> RunningServer:
        # Pinned unless a test asks for the adaptive default (max_batch_size=None): measuring the batch sizes at
        # every start would cost seconds each; the shared `server` and test_batch_sizes.py measure for real.
        options.setdefault("max_batch_size", 32)
        running = start_server_thread(server_settings(**options), **(app_options or {}))
        started.append(running)
        if wait_ready:
            running.wait_ready()
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def client(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


@pytest.fixture(scope="session")
def png_b64() -> Callable[..., str]:
    """``png_b64(seed, width, height, mode="RGB", fmt="PNG")``: base64 of an encoded sample image."""

    def make(seed: int = 0, width: int = 48, height: int = 40, mode: str = "RGB", fmt: str = "PNG") -> str:
        return base64.b64encode(encode_image(sample_image(width, height, mode, seed=seed), fmt)).decode("ascii")

    return make


def wait_until(condition: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Poll until ``condition()`` holds (a state the test needs, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., None]:
    return wait_until


def raw_exchange(url: str, requests: list[bytes], timeout: float = 60.0) -> list[tuple[int, bytes]]:
    """Send ``requests`` (whole HTTP/1.1 requests) one after another on ONE connection; each answer's status and
    body, or ``(-1, b"")`` once the server has closed the connection. httpx would silently reconnect."""
    host, port = url.removeprefix("http://").split(":")
    answers: list[tuple[int, bytes]] = []
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        reader = sock.makefile("rb")
        for request in requests:
            try:
                sock.sendall(request)
                status_line = reader.readline()
            except OSError:
                status_line = b""
            if not status_line:
                answers.append((-1, b""))
                continue
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answers.append((int(status_line.split()[1]), reader.read(length)))
    return answers


def http_post(path: str, body: bytes) -> bytes:
    """A whole HTTP/1.1 POST request with a JSON body, as bytes (for :func:`raw_exchange`)."""
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.fixture(scope="session")
def raw_http() -> Any:
    """``raw_http.exchange(url, [request, ...])`` and ``raw_http.post(path, body)``: one real connection."""
    from types import SimpleNamespace

    return SimpleNamespace(exchange=raw_exchange, post=http_post)
