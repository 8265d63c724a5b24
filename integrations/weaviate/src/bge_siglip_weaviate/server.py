"""``bge-siglip serve`` / ``bge-siglip-serve``: run the multi2vec-clip inference server with uvicorn.

The core CLI mounts this as a subcommand::

    from bge_siglip_weaviate.server import add_arguments, run
    add_arguments(subparsers.add_parser("serve", help=...))   # adds --model too
    ... return run(args)

Every option also reads a ``BGE_SIGLIP_<OPTION>`` environment variable (e.g. ``BGE_SIGLIP_MODEL``,
``BGE_SIGLIP_API_KEY``, ``BGE_SIGLIP_MAX_BATCH_SIZE``), so a container needs no command line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from typing import Any, Iterator, Sequence

from .settings import ServerSettings, env

__all__ = ["add_arguments", "run", "main", "settings_from_args"]

_DEFAULTS = ServerSettings(model="-")


def _int(name: str, default: int | None) -> int | None:
    value = env(name)
    return int(value) if value not in (None, "") else default


def _float(name: str, default: float) -> float:
    value = env(name)
    return float(value) if value not in (None, "") else default


def _flag(name: str) -> bool:
    return (env(name) or "").strip().lower() in ("1", "true", "yes", "on")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the server's options to ``parser`` (``--model`` included) and return it."""
    model = env("MODEL")
    parser.add_argument(
        "--model", required=model is None, default=model,
        help="model directory (from `bge-siglip` save/convert) or hub id [env BGE_SIGLIP_MODEL]",
    )
    parser.add_argument("--host", default=env("HOST", "127.0.0.1"), help="bind address; 0.0.0.0 in a container [127.0.0.1]")
    parser.add_argument("--port", type=int, default=_int("PORT", 8080), help="port [8080, like the reference container]")
    parser.add_argument("--device", default=env("DEVICE"), help="cpu, cuda, cuda:1, mps [best available]")
    parser.add_argument("--dtype", default=env("DTYPE"), help="float32, float16, bfloat16 [model default]")
    parser.add_argument("--max-num-patches", type=int, default=_int("MAX_NUM_PATCHES", None),
                        help="image detail/speed trade-off: 64, 256, 1024 ... [saved value]")
    parser.add_argument("--max-image-pixels", type=int,
                        default=_int("MAX_IMAGE_PIXELS", _DEFAULTS.max_image_pixels),
                        help="refuse larger images with 413, checked before decoding (decompression-bomb guard) "
                             "[%(default)s]")
    batching = parser.add_argument_group("cross-request batching")
    batching.add_argument("--max-batch-size", type=int, default=_int("MAX_BATCH_SIZE", _DEFAULTS.max_batch_size),
                          help="most items (texts + images) encoded together [%(default)s]")
    batching.add_argument("--max-wait-ms", type=float, default=_float("MAX_WAIT_MS", _DEFAULTS.max_wait_ms),
                          help="how long a batch waits for more requests once it has one [%(default)s]")
    batching.add_argument("--no-batching", action="store_true", default=_flag("NO_BATCHING"),
                          help="one request per forward round, like the reference container (for benchmarks)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-queue", type=int, dest="max_queue_items",
                        default=_int("MAX_QUEUE", _DEFAULTS.max_queue_items),
                        help="items admitted and unanswered before answering 503 [%(default)s]")
    limits.add_argument("--max-items-per-request", type=int,
                        default=_int("MAX_ITEMS_PER_REQUEST", _DEFAULTS.max_items_per_request),
                        help="texts + images in one request, else 413 [%(default)s]")
    limits.add_argument("--max-body-mb", type=float, default=_float("MAX_BODY_MB", _DEFAULTS.max_body_bytes / 2**20),
                        help="request body size limit in MiB, else 413 [%(default)s]")
    limits.add_argument("--max-queue-wait-s", type=float,
                        default=_float("MAX_QUEUE_WAIT_S", _DEFAULTS.max_queue_wait_s),
                        help="answer 503 instead of computing a request that waited longer for the batch worker; "
                             "keep it below Weaviate's MODULES_CLIENT_TIMEOUT (50s) [%(default)s]")
    limits.add_argument("--max-concurrent-decodes", type=int,
                        default=_int("MAX_CONCURRENT_DECODES", _DEFAULTS.max_concurrent_decodes),
                        help="images decoded at full size at once, across all requests [number of CPUs]")
    security = parser.add_argument_group("security")
    security.add_argument("--api-key", default=env("API_KEY"),
                          help="require 'Authorization: Bearer KEY' or 'X-API-Key: KEY' on /vectorize and /meta "
                               "(Weaviate itself sends none) [env BGE_SIGLIP_API_KEY; off]")
    server = parser.add_argument_group("process")
    server.add_argument("--graceful-timeout", type=float, default=_float("GRACEFUL_TIMEOUT", 30.0),
                        help="seconds in-flight requests get to finish on SIGTERM [%(default)s]")
    server.add_argument("--log-level", default=env("LOG_LEVEL", "info"),
                        choices=["critical", "error", "warning", "info", "debug"], help="[%(default)s]")
    return parser


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The :class:`ServerSettings` an argparse namespace from :func:`add_arguments` describes."""
    return ServerSettings(
        model=str(args.model),
        device=args.device,
        dtype=args.dtype,
        max_num_patches=args.max_num_patches,
        max_image_pixels=args.max_image_pixels,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        batching=not args.no_batching,
        max_queue_items=args.max_queue_items,
        max_items_per_request=args.max_items_per_request,
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_queue_wait_s=args.max_queue_wait_s,
        max_concurrent_decodes=args.max_concurrent_decodes,
        api_key=args.api_key,
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM (in-flight requests finish first). Exit status 1 if the model fails to load."""
    import uvicorn

    from .app import create_app

    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"bge-siglip serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    failed: list[BaseException] = []
    server: Any = None

    def on_load_failed(exc: BaseException) -> None:
        # Fail fast: an orchestrator restarts or reports a dead container; a live-but-never-ready one hides the cause.
        failed.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failed=on_load_failed)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=args.graceful_timeout,
        # Our handler answers every error as JSON; uvicorn's access log is enough for requests.
        server_header=False,
    )
    server = uvicorn.Server(config)
    with _signals_end_quietly():
        server.run()
    if failed:
        return 1
    return 0 if server.started else 1


class _Stopped(Exception):
    """SIGTERM arrived (and uvicorn has already shut down gracefully)."""


def _stop(signum: int, frame: Any) -> None:
    raise _Stopped()


@contextlib.contextmanager
def _signals_end_quietly() -> Iterator[None]:
    """Turn the end of a signal-triggered shutdown into a normal return (exit status 0).

    uvicorn handles SIGINT/SIGTERM itself (stop accepting, finish in-flight requests, lifespan shutdown) and then
    re-raises the signal with the previous handler restored, which would kill the process with status -15 or print
    a KeyboardInterrupt traceback. With this handler in place, the re-raised signal just unwinds to :func:`run`.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        yield
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None, prog: str = "bge-siglip-serve") -> int:
    """Entry point of ``bge-siglip-serve`` (and of ``bge-siglip serve``, which passes its own ``prog``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Weaviate multi2vec-clip compatible inference server for BGE-SigLIP, with cross-request batching.",
    )
    add_arguments(parser)
    return run(parser.parse_args(list(argv) if argv is not None else None))


if __name__ == "__main__":
    sys.exit(main())
