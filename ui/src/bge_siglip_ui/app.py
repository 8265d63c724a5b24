"""The page's web application: the static page and a small JSON API in front of the core and one store.

Endpoints (all under the page's own origin; nothing here fetches from the network):

* ``GET /`` and ``/static/*``: the page (plain HTML, CSS and JS shipped in the package).
* ``GET /api/status``: the model (loading / ready / failed, with the typed error), the store (what it is, how many
  items, why it is missing) and the folder index's progress.
* ``POST /api/upload``: an image as the raw request body (bytes only; never a path or URL), decoded and embedded
  by the core; answers ``{"ref": "upload:<hash>"}`` for searches.
* ``GET /api/search?text=&image=&weight=&offset=&limit=``: text, image (``upload:<hash>`` or ``item:<id>`` for
  "more like this") or both (``weight`` = the image's share, 0..1, for ``Vectorizer.encode_query``); one page of
  hits with score, name, thumbnail and image URLs. Query vectors are cached, so the next page costs one store query.
* ``GET /api/thumb?id=`` / ``GET /api/image?id=``: the thumbnail (made once, cached by content) / the full image of
  an item *of the store*, looked up by id; the caller names no path.

Errors are ``{"error": "...", "type": "InvalidImageError"}`` with 400 (bad input), 404 (no such item), 413 (upload
too big), 503 (model or store not ready, saying why) or 500; the page shows them as text. When the page listens on
a loopback address it answers only requests whose ``Host`` is a loopback name, so a web page elsewhere cannot read
it through DNS rebinding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from bge_siglip_vectorizer import (
    BGESigLIPError,
    InvalidInputError,
    Vectorizer,
    VectorizerOptions,
)

from .command import UIOptions
from .files import FileIds, default_cache_dir
from .gallery import FolderIndex
from .stores import MAX_DEPTH, Hit, Store, StoreError, open_store

__all__ = ["UIState", "create_app", "ApiError"]

logger = logging.getLogger("bge_siglip_ui")

#: Hits per page the API gives at most (the page asks for fewer).
MAX_LIMIT = 100
#: Formats every browser shows as they are; other files are converted (PNG) for the full-image view.
BROWSER_FORMATS = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".jfif": "image/jpeg", ".png": "image/png",
                   ".gif": "image/gif", ".webp": "image/webp", ".bmp": "image/bmp", ".ico": "image/x-icon"}
#: The page's own origin only: the browser itself refuses to load anything from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
#: Longest side of a converted full-size view (a screen's worth; the file itself is never changed).
FULL_VIEW = 4096


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "Error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class _LRU(OrderedDict):
    """A small least-recently-used map with a size budget (``weigh(value)``)."""

    def __init__(self, max_items: int, max_weight: float = float("inf"),
                 weigh: Callable[[Any], float] = lambda value: 0) -> None:
        super().__init__()
        self.max_items, self.max_weight, self.weigh, self.weight = max_items, max_weight, weigh, 0.0
        self.lock = threading.Lock()

    def get_item(self, key: Any) -> Any:
        with self.lock:
            if key not in self:
                return None
            self.move_to_end(key)
            return self[key]

    def put(self, key: Any, value: Any) -> None:
        with self.lock:
            if key in self:
                self.weight -= self.weigh(self.pop(key))
            self[key] = value
            self.weight += self.weigh(value)
            while len(self) > self.max_items or (self.weight > self.max_weight and len(self) > 1):
                _, dropped = self.popitem(last=False)
                self.weight -= self.weigh(dropped)


class UIState:
    """The model, the store and the caches behind one page. :meth:`start` loads the model, opens the store and
    indexes the folder in a background thread, so the page answers (with the progress) from the first second."""

    def __init__(self, options: UIOptions, model_options: VectorizerOptions | None = None, *,
                 vectorizer: Vectorizer | None = None, show_progress: bool | None = None) -> None:
        self.options = options
        self.model_options = model_options or VectorizerOptions()
        self.limits = self.model_options.limits()
        self.cache_dir = (Path(options.cache_dir).expanduser() if options.cache_dir else default_cache_dir()).resolve()
        self.show_progress = options.progress if show_progress is None else show_progress
        self.vectorizer: Vectorizer | None = vectorizer
        self.model_error: str | None = None
        self.store: Store | None = None
        self.store_state = "waiting for the model"
        self.store_error: str | None = None
        self.index: FolderIndex | None = None
        self.file_ids: FileIds | None = None
        self.thumbnails: Any = None
        self.uploads = _LRU(32, 256 * 1024 * 1024, weigh=len)  # upload hash -> bytes (for composed queries)
        self.queries = _LRU(256)  # (text, image ref, weight) -> query vector
        #: Bytes an upload may have: the core's cap on a downloaded image.
        self.upload_limit = self.limits.max_download_bytes
        self._thread: threading.Thread | None = None
        self.done = threading.Event()

    # ---------------------------------------------------------------------------------------------- start-up
    def start(self) -> None:
        self._thread = threading.Thread(target=self._prepare, name="bge-siglip-ui-start", daemon=True)
        self._thread.start()

    def _prepare(self) -> None:
        from .thumbnails import Thumbnails

        try:
            self.file_ids = FileIds(self.cache_dir / "files.sqlite")
            self.thumbnails = Thumbnails(self.cache_dir / "thumbnails", self.limits)
            if self.vectorizer is None:
                try:
                    self.vectorizer = Vectorizer.from_pretrained(self.options.model,
                                                                 **dataclasses.asdict(self.model_options))
                except Exception as exc:  # noqa: BLE001 - shown on the page and the terminal
                    self.model_error = _describe(exc)
                    self.store_state = "no model"
                    logger.error("model %s failed to load: %s", self.options.model, self.model_error)
                    return
                logger.info("model loaded: %r", self.vectorizer)
            self._open_store(self.vectorizer)
        finally:
            self.done.set()

    def _open_store(self, vectorizer: Vectorizer) -> None:
        options = self.options
        self.store_state = "opening"
        try:
            if options.folder is not None:
                self.index = FolderIndex(options.folder, self.cache_dir, vectorizer, self.file_ids,  # type: ignore[arg-type]
                                         batch_size=options.batch_size)
                self.store = self.index.store
                self.store_state = "indexing"
                logger.info("indexing %s into %s", self.index.folder, self.index.dir)
                progress = self.index.sync(show_progress=self.show_progress)
                self.store_state = "ready"
                logger.info("%s: %d files, %d embedded, %d unchanged, %d removed, %d failed", self.index.folder,
                            progress.files, progress.done - progress.failed, progress.unchanged, progress.removed,
                            progress.failed)
            elif options.store is not None:
                self.store = open_store(options.store, vectorizer)
                self.store_state = "ready"
            else:
                self.store_state = "none"
                self.store_error = "no images to search: start the page with --folder DIR or --store TARGET"
        except Exception as exc:  # noqa: BLE001 - shown on the page and the terminal
            self.store_state = "failed"
            self.store_error = _describe(exc)
            logger.error("%s", self.store_error)

    def close(self) -> None:
        if self.index is not None:
            self.index.stop()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.store is not None:
            self.store.close()
        if self.file_ids is not None:
            self.file_ids.close()

    # ---------------------------------------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        vectorizer = self.vectorizer
        model: dict[str, Any] = {"name": self.options.model}
        if vectorizer is not None:
            model.update(state="ready", dim=vectorizer.dim, backend=vectorizer.backend.name,
                         device=vectorizer.backend.device)
        else:
            model.update(state="failed" if self.model_error else "loading", error=self.model_error)
        store: dict[str, Any] = {"state": self.store_state, "error": self.store_error}
        if self.store is not None:
            store["target"] = self.store.target
            try:
                store["count"] = self.store.count()
            except Exception as exc:  # noqa: BLE001 - e.g. a store server that went away: said on the page
                store["error"] = _describe(exc)
        if self.index is not None:
            store["folder"] = str(self.index.folder)
        return {"model": model, "store": store,
                "indexing": self.index.progress.snapshot() if self.index is not None else None}

    def ready(self) -> tuple[Vectorizer, Store]:
        if self.vectorizer is None:
            raise ApiError(503, f"the model failed to load: {self.model_error}" if self.model_error
                           else "the model is still loading", "ModelNotReady")
        if self.store is None:
            if self.store_error:
                raise ApiError(503, self.store_error, "StoreNotReady")
            raise ApiError(503, "the store is still opening", "StoreNotReady")
        return self.vectorizer, self.store

    # ---------------------------------------------------------------------------------------------- queries
    def add_upload(self, data: bytes) -> str:
        """Keep an uploaded image (bytes) and embed it now, so the search that follows costs one store query."""
        vectorizer, _ = self.ready()
        ref = "upload:" + hashlib.blake2b(data, digest_size=16).hexdigest()
        if self.queries.get_item((None, ref, None)) is None:
            self.queries.put((None, ref, None), vectorizer.encode_query(image=data))
        self.uploads.put(ref, data)
        return ref

    def query_vector(self, text: str | None, image: str | None, weight: float) -> np.ndarray:
        vectorizer, store = self.ready()
        key = (text, image, round(weight, 3) if text is not None and image is not None else None)
        cached = self.queries.get_item(key)
        if cached is not None:
            return cached
        if image is None:
            vector = vectorizer.encode_query(text=text)
        elif image.startswith("item:") and text is None:
            vector = store.vector(image[5:])  # the stored vector: "more like this" embeds nothing
            if vector is None:
                raise ApiError(404, f"no item {image[5:]!r} in {store.target}", "NotFound")
        else:
            data = self._image_bytes(store, image)
            weights = (1.0 - weight, weight) if text is not None else (1.0, 1.0)
            vector = vectorizer.encode_query(text=text, image=data, weights=weights)
        self.queries.put(key, vector)
        return vector

    def _image_bytes(self, store: Store, image: str) -> bytes:
        if image.startswith("upload:"):
            data = self.uploads.get_item(image)
            if data is None:
                raise ApiError(404, "that uploaded image is no longer held by the server; drop it again",
                               "NotFound")
            return data
        if image.startswith("item:"):
            record = store.record(image[5:])
            if record is None:
                raise ApiError(404, f"no item {image[5:]!r} in {store.target}", "NotFound")
            file = record.local_file
            if file is None:
                raise ApiError(400, f"{record.name}: its image file is not on this machine, so it cannot be "
                                    "combined with text; search by it alone", "NoLocalFile")
            return file.read_bytes()
        raise ApiError(400, f"image must be 'upload:<hash>' or 'item:<id>', got {image[:40]!r}", "InvalidQuery")

    def search(self, text: str | None, image: str | None, weight: float, offset: int, limit: int) -> dict[str, Any]:
        text = text if text and text.strip() else None
        image = image or None
        if text is None and image is None:
            raise ApiError(400, "type something to search for, or give an image", "EmptyQuery")
        if not 0.0 <= weight <= 1.0:
            raise ApiError(400, f"weight must be between 0 and 1, got {weight}", "InvalidQuery")
        if offset < 0 or not 1 <= limit <= MAX_LIMIT:
            raise ApiError(400, f"offset must be >= 0 and limit 1..{MAX_LIMIT}", "InvalidQuery")
        limit = max(0, min(limit, MAX_DEPTH - offset))
        started = time.perf_counter()
        vector = self.query_vector(text, image, weight)
        encoded = time.perf_counter()
        _, store = self.ready()
        hits = store.search(vector, offset, limit) if limit else []
        searched = time.perf_counter()
        return {
            "hits": [self._hit(hit) for hit in hits],
            "offset": offset,
            "more": len(hits) == limit and offset + limit < MAX_DEPTH,
            "timing_ms": {"query": round(1000 * (encoded - started), 1),
                          "search": round(1000 * (searched - encoded), 1)},
        }

    @staticmethod
    def _hit(hit: Hit) -> dict[str, Any]:
        record = hit.record
        has_file = record.local_file is not None
        key = quote(record.id, safe="")
        return {"id": record.id, "score": round(hit.score, 4), "kind": record.kind, "name": record.name,
                "text": record.text, "thumb": f"/api/thumb?id={key}" if has_file else None,
                "image": f"/api/image?id={key}" if has_file else None}

    def local_file(self, item_id: str) -> Path:
        _, store = self.ready()
        record = store.record(item_id)
        if record is None:
            raise ApiError(404, f"no item {item_id!r} in {store.target}", "NotFound")
        file = record.local_file
        if file is None:
            raise ApiError(404, f"{record.name}: no image file of it on this machine", "NoLocalFile")
        return file

    def thumbnail(self, item_id: str) -> tuple[Path, str]:
        file = self.local_file(item_id)
        key = self.file_ids.id(file) if self.file_ids is not None else None
        if key is None:
            raise ApiError(404, f"{file.name}: cannot be read", "NoLocalFile")
        return self.thumbnails.get(key, file), key


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _error_response(exc: BaseException) -> JSONResponse:
    if isinstance(exc, ApiError):
        status, message, kind = exc.status, exc.message, exc.kind
    elif isinstance(exc, (InvalidInputError, ValueError)):
        status, message, kind = 400, str(exc), type(exc).__name__
    elif isinstance(exc, StoreError):
        status, message, kind = 503, str(exc), type(exc).__name__
    elif isinstance(exc, BGESigLIPError):
        status, message, kind = 500, str(exc), type(exc).__name__
    else:
        logger.exception("unexpected error")
        status, message, kind = 500, f"{type(exc).__name__}: {exc}", "InternalError"
    return JSONResponse({"error": message, "type": kind}, status_code=status)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def create_app(state: UIState, start: bool = True) -> FastAPI:
    """The application for ``state`` (``start``: load the model and open the store when the app starts)."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if start:
            state.start()
        yield
        await run_in_threadpool(state.close)

    app = FastAPI(title="bge-siglip ui", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    guard_host = is_loopback(state.options.host)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        if guard_host and _host_name(request.headers.get("host", "")).lower() not in LOOPBACK_NAMES:
            return JSONResponse({"error": "this page answers only to localhost / 127.0.0.1 (it listens on a loopback "
                                          "address)", "type": "Forbidden"}, status_code=403)
        try:
            response = await call_next(request)
        except Exception as exc:  # noqa: BLE001 - every error is JSON the page can show
            response = _error_response(exc)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(BGESigLIPError)
    async def core_error(_request: Request, exc: BGESigLIPError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(ValueError)
    async def value_error(_request: Request, exc: ValueError) -> JSONResponse:
        return _error_response(exc)

    static = resources.files("bge_siglip_ui") / "static"

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return Response((static / "index.html").read_bytes(), media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(packages=[("bge_siglip_ui", "static")]), name="static")

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        return state.status()

    @app.get("/api/search")
    def search(text: str = "", image: str = "", weight: float = 0.5, offset: int = 0, limit: int = 48):
        return state.search(text, image, weight, offset, limit)

    @app.post("/api/upload")
    async def upload(request: Request):
        upload_limit = state.upload_limit
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > upload_limit:
            raise ApiError(413, f"the image is {int(declared):,} bytes; the limit is {upload_limit:,}", "TooLarge")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > upload_limit:
                raise ApiError(413, f"the image is over the limit of {upload_limit:,} bytes", "TooLarge")
        if not body:
            raise ApiError(400, "no image in the request (send the file's bytes as the body)", "EmptyUpload")
        ref = await run_in_threadpool(state.add_upload, bytes(body))
        return {"ref": ref}

    @app.get("/api/thumb")
    def thumb(id: str) -> Response:  # noqa: A002 - the query parameter's name
        path, key = state.thumbnail(id)
        return FileResponse(path, media_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=86400", "ETag": f'"{key}"'})

    @app.get("/api/image")
    def image(id: str) -> Response:  # noqa: A002
        file = state.local_file(id)
        media_type = BROWSER_FORMATS.get(file.suffix.lower())
        if media_type is not None:
            return FileResponse(file, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})
        return Response(_as_png(file, state), media_type="image/png")

    return app


def _as_png(file: Path, state: UIState) -> bytes:
    """A file browsers do not show (TIFF, PPM, TGA, ...), decoded by the core and sent as PNG (at most 4096 px)."""
    import io

    from .thumbnails import decode_within

    image = decode_within(file, state.limits, FULL_VIEW)
    image.thumbnail((FULL_VIEW, FULL_VIEW))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()

