"""Shared fixtures for the core tests: a real HTTP server on 127.0.0.1 serving test images."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bge_siglip_vectorizer.testing.images import encode_image, sample_image


class _ImageHandler(BaseHTTPRequestHandler):
    routes: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802 - http.server API
        if self.path == "/slow.png":
            body = self.routes["/ok.png"]
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            # Trickle: each read is quick, the whole download is slow.
            try:
                for offset in range(0, len(body), 64):
                    self.wfile.write(body[offset : offset + 64])
                    self.wfile.flush()
                    time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as the timeout test wants
            return
        body = self.routes.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture(scope="session")
def image_server():
    """Base URL of a local HTTP server with /ok.png, /big.png (~large), /slow.png (trickles) and 404s."""
    ok = encode_image(sample_image(96, 64, seed=7), "PNG")
    _ImageHandler.routes = {"/ok.png": ok, "/big.png": encode_image(sample_image(900, 900, seed=8), "PNG")}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
