"""The FastAPI application: Weaviate's ``multi2vec-clip`` inference API in front of the core ``Vectorizer``.

Endpoints: ``POST /vectorize``, ``GET /meta``, ``GET /.well-known/ready`` (204 once the model is loaded, 503 before),
``GET /.well-known/live`` (204). Every error is ``{"error": "..."}``: Weaviate parses the body as JSON before it
looks at the status, and FastAPI's default ``{"detail": ...}`` would reach the user as an empty message.

Weaviate relays ``/meta`` to every user of ``/v1/meta`` and ``/vectorize`` errors to whoever inserted or queried, so
neither carries server internals: no model path in ``/meta``, and unexpected errors are logged here and answered
with a generic message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any, AsyncIterator, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from bge_siglip_vectorizer import InvalidInputError, Vectorizer

from . import __version__
from .batching import DynamicBatcher, Overloaded, QueueTimeout, ShuttingDown
from .protocol import ApiError, decode_request, describe_input_error, error_status, parse_vectorize_body
from .settings import ServerSettings

__all__ = ["create_app", "ServerState", "load_vectorizer"]

logger = logging.getLogger("bge_siglip_weaviate.server")

Loader = Callable[[], Vectorizer]


def load_vectorizer(settings: ServerSettings) -> Vectorizer:
    """The server's own Vectorizer (not the process-shared one: its ``stats`` then count only served work)."""
    # Images reach the core as base64 only (see protocol.py), and the settings refuse URL fetching in any case.
    return Vectorizer.from_pretrained(settings.model, **dataclasses.asdict(settings.vectorizer_options()))


class ServerState:
    """The model, the batcher and the loading status of one application instance."""

    def __init__(
        self,
        settings: ServerSettings,
        loader: Loader,
        on_load_failed: Callable[[BaseException], None] | None = None,
        owns_vectorizer: bool = True,
    ) -> None:
        self.settings = settings
        self._loader = loader
        self._on_load_failed = on_load_failed
        self._owns_vectorizer = owns_vectorizer  # False when the caller passed its own Vectorizer: not ours to close
        # Full-size decoded images held at once, across all request threads (each is dropped once patchified).
        self.decode_slots = threading.BoundedSemaphore(settings.decode_slots)
        self.vectorizer: Vectorizer | None = None
        self.batcher: DynamicBatcher | None = None
        self.load_error: str | None = None
        self.loaded = threading.Event()
        self._thread: threading.Thread | None = None

    def start_loading(self) -> None:
        # In the background: the HTTP port opens at once, so probes get 503 "loading" instead of connection refused.
        self._thread = threading.Thread(target=self._load, name="bge-siglip-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            vectorizer = self._loader()
            self.batcher = DynamicBatcher(vectorizer, self.settings)
            self.vectorizer = vectorizer
            logger.info("model loaded in %.1fs: %r", time.perf_counter() - started, vectorizer)
        except BaseException as exc:  # noqa: BLE001 - reported through /.well-known/ready and the callback
            # The details (paths, ...) go to the log only; callers learn the exception type.
            self.load_error = type(exc).__name__
            logger.error("model failed to load: %s: %s", type(exc).__name__, exc)
            if self._on_load_failed is not None:
                self._on_load_failed(exc)
        finally:
            self.loaded.set()

    def require_ready(self) -> tuple[Vectorizer, DynamicBatcher]:
        if self.vectorizer is None or self.batcher is None:
            if self.load_error is not None:
                raise ApiError(503, f"model failed to load ({self.load_error}; see the server log)")
            raise ApiError(503, "model is loading; retry when /.well-known/ready answers 204", {"Retry-After": "1"})
        return self.vectorizer, self.batcher

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.batcher is not None:
            self.batcher.close()
        if self.vectorizer is not None and self._owns_vectorizer:
            self.vectorizer.close()  # its decode threads


def create_app(
    settings: ServerSettings,
    *,
    vectorizer: Vectorizer | None = None,
    loader: Loader | None = None,
    on_load_failed: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """Build the application. The model is loaded at start-up (lifespan) in a background thread.

    ``vectorizer``: use this instance instead of loading ``settings.model``; ``loader``: a callable returning one.
    """
    if vectorizer is not None:
        loader = lambda: vectorizer  # noqa: E731
    state = ServerState(
        settings, loader or (lambda: load_vectorizer(settings)), on_load_failed, owns_vectorizer=vectorizer is None
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start_loading()
        yield
        # uvicorn runs this after the in-flight requests have been answered; the batcher drains what is left.
        await run_in_threadpool(state.close)

    app = FastAPI(
        title="bge-siglip multi2vec-clip inference",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.server = state
    _install_error_handlers(app)

    def require_api_key(request: Request) -> None:
        expected = settings.api_key
        if expected is None:
            return
        candidates = [request.headers.get("x-api-key")]
        authorization = request.headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            candidates.append(authorization[7:].strip())
        for supplied in candidates:
            if supplied and hmac.compare_digest(supplied.encode(), expected.encode()):
                return
        raise ApiError(
            401, "missing or invalid API key (send 'Authorization: Bearer <key>' or 'X-API-Key: <key>')",
            {"WWW-Authenticate": "Bearer"},
        )

    @app.get("/.well-known/live")
    async def live() -> Response:
        return Response(status_code=204)

    @app.get("/.well-known/ready")
    async def ready() -> Response:
        state.require_ready()
        return Response(status_code=204)

    @app.get("/meta", dependencies=[Depends(require_api_key)])
    async def meta() -> JSONResponse:
        vectorizer, batcher = state.require_ready()
        description = vectorizer.describe()
        # Weaviate shows this to every user of /v1/meta: no server filesystem paths.
        description.pop("source", None)
        description["server"] = {
            "package": "bge-siglip-weaviate",
            "version": __version__,
            "protocol": "multi2vec-clip",
            **batcher.describe(),
            # Forward passes the model actually ran: fewer than requests means cross-request batching worked.
            "encode_stats": asdict(vectorizer.stats),
        }
        return JSONResponse(description)

    @app.post("/vectorize", dependencies=[Depends(require_api_key)])
    async def vectorize(request: Request) -> JSONResponse:
        vectorizer, batcher = state.require_ready()
        batcher.check_capacity()  # refuse before buffering the body when the queue is already full
        body = await _read_body(request, settings.max_body_bytes)
        parsed = parse_vectorize_body(body)
        del body  # up to max_body_bytes: not kept while the request waits for decoding and the worker
        if parsed.size == 0:
            return JSONResponse({"textVectors": [], "imageVectors": []})
        if parsed.size > settings.max_items_per_request:
            raise ApiError(
                413, f"request has {parsed.size} items; this server accepts at most {settings.max_items_per_request}"
            )
        ticket = batcher.admit(parsed.size)
        try:
            # Decode, validate and patchify in a worker thread, before queuing: a bad item fails only its own
            # request, and the queue holds small uint8 patches, never full-size images.
            texts, images = await run_in_threadpool(decode_request, parsed, vectorizer, state.decode_slots)
            del parsed  # the base64 strings are no longer needed while the job waits
            future = ticket.submit(texts, images)
        except BaseException:
            ticket.cancel()
            raise
        text_vectors, image_vectors = await asyncio.wrap_future(future)
        return JSONResponse({"textVectors": text_vectors.tolist(), "imageVectors": image_vectors.tolist()})

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    too_large = ApiError(413, f"request body larger than the server's limit of {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large  # refuse before reading a byte
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # chunked bodies carry no length: count while reading
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": ...}``, FastAPI's own 404/405/422 included."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(InvalidInputError)
    async def invalid_input(request: Request, exc: InvalidInputError) -> JSONResponse:
        return _error(error_status(exc), describe_input_error(exc))

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": "1"})

    @app.exception_handler(QueueTimeout)
    async def queue_timeout(request: Request, exc: QueueTimeout) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": "1"})

    @app.exception_handler(ShuttingDown)
    async def shutting_down(request: Request, exc: ShuttingDown) -> JSONResponse:
        return _error(503, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "; ".join(str(err.get("msg", err)) for err in exc.errors()) or "invalid request")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The details stay in the server log: Weaviate would show them to whoever inserted or queried.
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal error (see the server log)")
