"""The FastAPI application: Weaviate's ``multi2vec-clip`` inference API (and an OpenAI-compatible embeddings API,
:mod:`.openai_api`) in front of the core ``Vectorizer``.

Endpoints: ``POST /vectorize``, ``GET /meta``, ``GET /.well-known/ready`` (204 once the model is loaded, 503 before),
``GET /.well-known/live`` (204), ``POST /v1/embeddings``, ``GET /v1/models``. Every ``/vectorize``-side error is
``{"error": "..."}``: Weaviate parses the body as JSON before it looks at the status, and FastAPI's default
``{"detail": ...}`` would reach the user as an empty message. Under ``/v1/`` errors take OpenAI's shape.

Weaviate relays ``/meta`` to every user of ``/v1/meta`` and ``/vectorize`` errors to whoever inserted or queried, so
neither carries server internals: no model path in ``/meta``, and unexpected errors are logged here and answered
with a generic message. ``/meta`` answers 200 even while the model loads (with what is known), since Weaviate would
show an error body there as its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from bge_siglip_vectorizer import InvalidInputError, Vectorizer

from . import __version__
from .admission import WaitBudget
from .batching import BatchResult, DynamicBatcher, Overloaded, QueueTimeout, ShuttingDown
from .protocol import (
    ApiError,
    DecodedRequest,
    VectorizeRequest,
    decode_request,
    describe_input_error,
    error_status,
    parse_vectorize_body,
    printable,
)
from .settings import ServerSettings

__all__ = ["create_app", "ServerState", "load_vectorizer", "serve_request"]

logger = logging.getLogger("bge_siglip_weaviate.server")

Loader = Callable[[], Vectorizer]


def load_vectorizer(settings: ServerSettings) -> Vectorizer:
    """The server's own Vectorizer (not the process-shared one: its ``stats`` then count only served work)."""
    # Images reach the core as base64 only, or as http(s) URLs where the operator allows them (see protocol.py).
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
        self.started_at = int(time.time())
        self._thread: threading.Thread | None = None

    def start_loading(self) -> None:
        # In the background: the HTTP port opens at once, so probes get 503 "loading" instead of connection refused.
        self._thread = threading.Thread(target=self._load, name="bge-siglip-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            vectorizer = self._loader()
            loaded = time.perf_counter()
            # Measures the forward batch sizes worth making on this hardware (unless pinned): before "ready".
            self.batcher = DynamicBatcher(vectorizer, self.settings)
            self.vectorizer = vectorizer
            logger.info("model loaded in %.1fs: %r", loaded - started, vectorizer)
            logger.info("%s (chosen in %.1fs)", self.batcher.sizes.summary(), time.perf_counter() - loaded)
        except BaseException as exc:  # noqa: BLE001 - reported through /.well-known/ready and the callback
            # The details (paths, ...) go to the log only; callers learn the exception type.
            self.load_error = type(exc).__name__
            logger.error("model failed to load: %s: %s", type(exc).__name__, exc)
            if self._on_load_failed is not None:
                self._on_load_failed(exc)
        finally:
            self.loaded.set()

    @property
    def status(self) -> str:
        if self.batcher is not None:
            return "ready"
        if self.load_error is not None:
            return f"failed to load ({self.load_error}; see the server log)"
        return "loading"

    def require_ready(self) -> tuple[Vectorizer, DynamicBatcher]:
        if self.vectorizer is None or self.batcher is None:
            if self.load_error is not None:
                raise ApiError(503, f"model {self.status}")
            raise ApiError(503, "model is loading; retry when /.well-known/ready answers 204", {"Retry-After": "1"})
        return self.vectorizer, self.batcher

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.batcher is not None:
            self.batcher.close()
        if self.vectorizer is not None and self._owns_vectorizer:
            self.vectorizer.close()  # its decode threads


async def serve_request(
    request: Request,
    state: ServerState,
    parse: Callable[[bytes, Vectorizer], VectorizeRequest],
    *,
    allow_empty_texts: bool = True,
    allow_urls: bool = False,
) -> tuple[VectorizeRequest, DecodedRequest, BatchResult] | None:
    """Read, parse, admit, decode and queue one request; its vectors once the batch worker has run.

    The one path of ``/vectorize`` and ``/v1/embeddings``: the same limits and back-pressure. ``None`` when the
    request has no items. Waiting (for its turn to buffer the body, for room in the queue, for the worker) counts
    against ``max_queue_wait_s``; reading and decoding the request's own body does not.
    """
    settings = state.settings
    vectorizer, batcher = state.require_ready()
    budget = WaitBudget(settings.max_queue_wait_s)
    reserved = _body_reservation(request, settings.max_body_bytes)
    await batcher.reserve_body(reserved, budget)  # not read before its turn: TCP holds the rest meanwhile
    try:
        body = await _read_body(request, settings.max_body_bytes, settings.body_timeout_s)
        parsed = parse(body, vectorizer)
        del body  # up to max_body_bytes: not kept while the request waits for decoding and the worker
        if parsed.size == 0:
            return None
        if parsed.size > settings.max_items_per_request:
            raise ApiError(
                413, f"request has {parsed.size} items; this server accepts at most {settings.max_items_per_request}"
            )
        ticket = await batcher.admit(parsed.size, budget)
        try:
            if await request.is_disconnected():  # gave up while held (Weaviate's timeout): not worth decoding
                raise ClientDisconnect()
            # Decode, validate and patchify in a worker thread, before queuing: a bad item fails only its own
            # request, and the queue holds small uint8 patches, never full-size images.
            decoded = await run_in_threadpool(
                decode_request, parsed, vectorizer, state.decode_slots,
                allow_empty_texts=allow_empty_texts, allow_urls=allow_urls,
            )
        except BaseException:
            ticket.cancel()
            raise
        parsed.texts, parsed.images = [], []  # the raw strings are no longer needed while the job waits
    finally:
        batcher.release_body(reserved)
    future = ticket.submit(decoded.texts, decoded.images, decoded.token_counts)
    return parsed, decoded, await asyncio.wrap_future(future)


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
    from .openai_api import add_openai_routes

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
    expected_key = settings.api_key.encode("utf-8") if settings.api_key is not None else None

    def require_api_key(request: Request) -> None:
        if expected_key is None:
            return
        candidates = [request.headers.get("x-api-key")]
        authorization = request.headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            candidates.append(authorization[7:].strip())
        for supplied in candidates:
            # Starlette decodes header bytes as latin-1; the bytes sent are compared with the key's UTF-8.
            if supplied and hmac.compare_digest(supplied.encode("latin-1"), expected_key):
                return
        raise ApiError(
            401, "missing or invalid API key (send 'Authorization: Bearer <key>' or 'X-API-Key: <key>')",
            {"WWW-Authenticate": "Bearer"}, code="invalid_api_key",
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
        server = {"package": "bge-siglip-weaviate", "version": __version__, "protocol": "multi2vec-clip",
                  "status": state.status}
        if state.vectorizer is None or state.batcher is None:
            # 200 with what is known: Weaviate shows /meta in its own /v1/meta, an error body included.
            return JSONResponse({"model": settings.served_model_name, "server": server})
        description = state.vectorizer.describe()
        # Weaviate shows this to every user of /v1/meta: no server filesystem paths.
        description.pop("source", None)
        description["server"] = {**server, **state.batcher.describe()}
        return JSONResponse(description)

    @app.post("/vectorize", dependencies=[Depends(require_api_key)])
    async def vectorize(request: Request) -> JSONResponse:
        served = await serve_request(request, state, lambda body, _: parse_vectorize_body(body))
        if served is None:
            return JSONResponse({"textVectors": [], "imageVectors": []})
        _, _, (text_vectors, image_vectors) = served
        return JSONResponse({"textVectors": text_vectors.tolist(), "imageVectors": image_vectors.tolist()})

    add_openai_routes(app, state, require_api_key)
    return app


def _body_reservation(request: Request, limit: int) -> int:
    """Bytes to reserve for the body before reading it: its declared length, or the limit when unknown."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise ApiError(413, f"request body larger than the server's limit of {limit} bytes")  # before a byte
        return int(declared)
    return limit


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    too_large = ApiError(413, f"request body larger than the server's limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():  # chunked bodies carry no length: count while reading
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout_s)
    except asyncio.TimeoutError:
        # The rest of a trickled body is not waited for; the connection cannot be reused after it.
        raise ApiError(408, f"request body not received within {timeout_s:g}s", {"Connection": "close"}) from None
    return b"".join(chunks)


def _error(request: Request, status: int, message: str, headers: dict[str, str] | None = None, *,
           param: str | None = None, code: str | None = None) -> JSONResponse:
    message = printable(message)
    if request.url.path.startswith("/v1/"):
        from .openai_api import openai_error

        return JSONResponse(openai_error(status, message, param, code), status_code=status, headers=headers)
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": ...}`` (OpenAI's error object under ``/v1/``), FastAPI's own 404/405/422 too."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(request, exc.status, exc.message, exc.headers, param=exc.param, code=exc.code)

    @app.exception_handler(InvalidInputError)
    async def invalid_input(request: Request, exc: InvalidInputError) -> JSONResponse:
        return _error(request, error_status(exc), describe_input_error(exc))

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return _error(request, 503, str(exc), {"Retry-After": "1"}, code="overloaded")

    @app.exception_handler(QueueTimeout)
    async def queue_timeout(request: Request, exc: QueueTimeout) -> JSONResponse:
        return _error(request, 503, str(exc), {"Retry-After": "1"}, code="overloaded")

    @app.exception_handler(ShuttingDown)
    async def shutting_down(request: Request, exc: ShuttingDown) -> JSONResponse:
        return _error(request, 503, str(exc))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=400)  # nobody reads it; not an error of the server's

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(request, 422, "; ".join(str(err.get("msg", err)) for err in exc.errors()) or "invalid request")

    app.add_middleware(_UnexpectedErrors)


class _UnexpectedErrors:
    """Answer an unexpected exception with a 500 in the endpoint's error shape, and keep the connection.

    A handler registered for ``Exception`` would run in Starlette's outermost middleware, which re-raises after
    answering, and uvicorn then closes the connection: the next request a client sends on it (Weaviate's Go
    client reuses connections) fails. Caught here, inside that middleware, the exception ends with the answer.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:  # noqa: BLE001 - anything the handlers did not map
            request = Request(scope)
            # The details stay in the server log: Weaviate would show them to whoever inserted or queried.
            logger.exception("unexpected error on %s %s", request.method, request.url.path)
            if started:
                raise  # half an answer is out: only closing the connection tells the client
            await _error(request, 500, "internal error (see the server log)")(scope, receive, send)
