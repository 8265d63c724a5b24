"""Running the page: uvicorn on one socket, the model and the store loading in the background."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

from bge_siglip_vectorizer import VectorizerOptions

from .command import UIOptions

__all__ = ["serve", "bind", "make_server"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (``port`` 0: a free one), bound before the server starts so its URL is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def make_server(app: Any, log_level: str = "warning") -> Any:
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, server_header=False, timeout_graceful_shutdown=5))


def serve(options: UIOptions, model_options: VectorizerOptions | None = None) -> int:
    """Serve the page until Ctrl-C; the exit status is 1 if the port cannot be had."""
    from .app import UIState, create_app, is_loopback

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        sock = bind(options.host, options.port)
    except OSError as exc:
        print(f"bge-siglip ui: cannot listen on {options.host}:{options.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    state = UIState(options, model_options)
    print(f"bge-siglip ui: open {url_of(sock)} in your browser (Ctrl-C stops)", file=sys.stderr, flush=True)
    if not is_loopback(options.host):
        print(f"bge-siglip ui: listening on {options.host}: anyone who can reach this machine can search and see "
              "the images", file=sys.stderr)
    server = make_server(create_app(state))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    return 0

