"""``bge-siglip serve`` / ``bge-siglip-serve``: run the multi2vec-clip inference server with uvicorn.

``COMMAND`` joins the core's ``bge-siglip`` command through the ``bge_siglip.commands`` entry point. Every option
is a field of :class:`~bge_siglip_weaviate.settings.ServerSettings` and also reads a ``BGE_SIGLIP_<OPTION>``
environment variable (e.g. ``BGE_SIGLIP_MODEL``, ``BGE_SIGLIP_API_KEY``, ``BGE_SIGLIP_MAX_BATCH_SIZE``), so a
container needs no command line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from typing import Any, Iterator, Sequence

from bge_siglip_vectorizer import Command, add_options, options_from_args

from .settings import ENV_PREFIX, ServerSettings

__all__ = ["add_arguments", "run", "main", "settings_from_args", "uvicorn_config", "header_deadline_protocol", "COMMAND"]

DESCRIPTION = "Weaviate multi2vec-clip compatible inference server for BGE-SigLIP, with cross-request batching."


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the server's options to ``parser`` (``--model`` included) and return it."""
    return add_options(parser, ServerSettings, env_prefix=ENV_PREFIX)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    """The :class:`ServerSettings` an argparse namespace from :func:`add_arguments` describes."""
    return options_from_args(ServerSettings, args)


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM (in-flight requests finish first). Exit status 1 if the model fails to load."""
    import uvicorn

    from .app import create_app

    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"bge-siglip serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    failed: list[BaseException] = []
    server: Any = None

    def on_load_failed(exc: BaseException) -> None:
        # Fail fast: an orchestrator restarts or reports a dead container; a live-but-never-ready one hides the cause.
        failed.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failed=on_load_failed)
    server = uvicorn.Server(uvicorn_config(app, settings))
    with _signals_end_quietly():
        server.run()
    if failed:
        return 1
    return 0 if server.started else 1


def uvicorn_config(app: Any, settings: ServerSettings, **overrides: Any) -> Any:
    """The ``uvicorn.Config`` the server runs with (tests and the benchmark use it too): the settings' address,
    log level and shutdown grace, and connections that must send their request headers within
    ``settings.header_timeout_s`` (request bodies have their own deadline in the application)."""
    import uvicorn

    options: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.graceful_timeout,
        server_header=False,
        http=header_deadline_protocol(settings.header_timeout_s),
    )
    return uvicorn.Config(app, **{**options, **overrides})


def header_deadline_protocol(timeout_s: float) -> type:
    """uvicorn's HTTP protocol with a deadline for request headers (a slowloris guard uvicorn lacks).

    uvicorn closes *idle* keep-alive connections (``timeout_keep_alive``), but its timer stops at the first byte
    received: a client that sends half a request line, or trickles headers, holds the connection forever. Here a
    timer is armed when the connection opens and again after every answer; if no new request has started (its
    headers complete) when it fires, the connection is closed. A request in progress is never cut.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderDeadlineProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _header_timer: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_header_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_deadline()
            super().connection_lost(exc)

        def _arm_header_deadline(self) -> None:
            self._disarm_header_deadline()
            self._header_timer = self.loop.call_later(timeout_s, self._header_deadline_passed, self.cycle)

        def _disarm_header_deadline(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_deadline_passed(self, armed_cycle: Any) -> None:
            self._header_timer = None
            idle = self.cycle is None or self.cycle.response_complete
            if self.cycle is armed_cycle and idle and not self.transport.is_closing():
                self.transport.close()  # no request began since the timer was armed

    return HeaderDeadlineProtocol


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
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(list(argv) if argv is not None else None))


COMMAND = Command(
    help="run the Weaviate multi2vec-clip compatible inference server", description=DESCRIPTION,
    add_arguments=add_arguments, run=run,
)


if __name__ == "__main__":
    sys.exit(main())
