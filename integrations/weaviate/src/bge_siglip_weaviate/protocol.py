"""The ``multi2vec-clip`` wire format: parsing a ``/vectorize`` body, decoding its items, shaping errors.

Weaviate sends ``{"texts": [...], "images": [...]}`` (either field may be missing or ``null``) and expects
``{"textVectors": [...], "imageVectors": [...]}`` back, or ``{"error": "..."}`` with a status >= 400 (see
the contract in weaviate/weaviate ``modules/multi2vec-clip/clients``).

Images arrive as base64 of the file bytes. They are turned into bytes by the core's ``decode_base64``, not its generic
``load_image``: that one also opens file paths and fetches URLs, which a network server must never do on behalf of a
remote caller (server-side file read, SSRF). Only the OpenAI-compatible API may fetch ``http(s)`` URLs, and only
when the operator allows them (``--allow-urls``); the core's URL fetching and its guards then apply.

Memory: a decoded image can be hundreds of MB (a 48.8 MP phone photo is 146 MB of RGB pixels), so each image is
patchified right after it is decoded and only its uint8 patches (at most ``max_num_patches`` x 768 bytes) are kept;
the full-size image is dropped before the next one is decoded, and a semaphore bounds how many full-size images all
requests together decode at once.

Texts: every string that is valid Unicode is accepted by ``/vectorize``, ``""`` and blank ones included. Weaviate's
``multi2vec-clip`` module sends every string value of a vectorised text field, empty ones too, and the reference
container embeds them.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any, ContextManager

from bge_siglip_vectorizer import (
    ImageFetchError,
    ImageTooLargeError,
    InvalidInputError,
    InvalidTextError,
    PatchedImage,
    Vectorizer,
    decode_base64,
    validate_text,
)

__all__ = [
    "ApiError",
    "VectorizeRequest",
    "DecodedRequest",
    "parse_json_object",
    "parse_vectorize_body",
    "decode_request",
    "prepare_image",
    "error_status",
    "describe_input_error",
    "printable",
]


class ApiError(Exception):
    """An error answered with ``status`` in the endpoint's error shape (and optional extra headers).

    ``param`` and ``code`` fill the fields of OpenAI's error object; ``/vectorize`` answers ``{"error": message}``.
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, *,
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.param = param
        self.code = code


@dataclass
class VectorizeRequest:
    """A parsed request: raw texts and image strings, in request order (``options``: the endpoint's own fields)."""

    texts: list[Any] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)
    options: Any = None

    @property
    def size(self) -> int:
        return len(self.texts) + len(self.images)


@dataclass
class DecodedRequest:
    """Validated texts (with their token counts) and prepared images, ready for the batch queue."""

    texts: list[str]
    token_counts: list[int]
    images: list[PatchedImage]


def printable(message: str) -> str:
    """``message`` with anything that is not valid Unicode (lone surrogates) escaped: an error that quotes a bad
    input must still be encodable as UTF-8 JSON, or rendering it fails and takes the connection with it."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def parse_json_object(body: bytes, example: str) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 ``ApiError`` (never a 500: nesting too deep is bad input too)."""
    try:
        payload = json.loads(body) if body.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise ApiError(400, "request body is not valid JSON (nested too deeply)") from None
    if not isinstance(payload, dict):
        raise ApiError(400, f"request body must be a JSON object like {example}, got {type(payload).__name__}")
    return payload


def parse_vectorize_body(body: bytes) -> VectorizeRequest:
    """Parse the JSON body; a missing or ``null`` field is an empty list (Weaviate omits empty ones)."""
    payload = parse_json_object(body, '{"texts": [...], "images": [...]}')
    lists: dict[str, list[Any]] = {}
    for key in ("texts", "images"):
        value = payload.get(key)
        if value is None:
            value = []
        if not isinstance(value, list):
            raise ApiError(400, f"'{key}' must be a list, got {type(value).__name__}")
        lists[key] = value
    return VectorizeRequest(texts=lists["texts"], images=lists["images"])


def decode_request(
    request: VectorizeRequest,
    vectorizer: Vectorizer,
    decode_slots: threading.Semaphore | None = None,
    *,
    allow_empty_texts: bool = True,
    allow_urls: bool = False,
) -> DecodedRequest:
    """Validate every text and prepare every image of one request (run in a worker thread, not the event loop).

    Images are decoded one at a time, each under one of ``decode_slots``, and turned into patches before the next
    is decoded. The first bad item raises a typed error whose ``index`` is its position in ``texts`` or ``images``.
    """
    texts = [validate_text(item, i, allow_empty=allow_empty_texts) for i, item in enumerate(request.texts)]
    counts = vectorizer.count_tokens(texts) if texts else []
    images = [prepare_image(item, i, vectorizer, decode_slots, allow_urls) for i, item in enumerate(request.images)]
    return DecodedRequest(texts, counts, images)


def prepare_image(
    item: Any, index: int, vectorizer: Vectorizer, decode_slots: threading.Semaphore | None = None,
    allow_urls: bool = False,
) -> PatchedImage:
    """Decode one base64 image (or, with ``allow_urls``, fetch an http(s) URL) and patchify it at once; only the
    patches outlive the call. Nothing else is ever opened: no file paths."""
    is_url = isinstance(item, str) and item.lstrip()[:8].lower().startswith(("http://", "https://"))
    if is_url and not allow_urls:
        raise ImageFetchError("image URLs are not fetched by this server (its operator can allow them with "
                              "--allow-urls); send the image as base64 or a data URI", index=index)
    slot: ContextManager[Any] = decode_slots if decode_slots is not None else contextlib.nullcontext()
    with slot:
        # A URL is fetched by the core, with its own limits and guards; base64 becomes file bytes here, never a path.
        # The core then decodes either like any file (reduced where the format allows, within its pixel budget).
        try:
            source = item.strip() if is_url else decode_base64(item, index)
            return vectorizer.prepare_images([source], show_progress=False)[0]
        except InvalidInputError as exc:
            error = exc.at(index)  # the core numbered it 0 in its one-item list
    # Raised outside the handler: no __context__ chain keeping the decode frames (and the image) alive.
    raise error


def error_status(exc: InvalidInputError) -> int:
    """HTTP status for a bad item: 413 for too-large images, 400 for everything else."""
    return 413 if isinstance(exc, ImageTooLargeError) else 400


def describe_input_error(exc: InvalidInputError, field_name: str | None = None) -> str:
    """``"images[2]: not an image (...)"``: names the request field (``field_name``, else ``texts``/``images``)
    and the position the caller sent."""
    field_name = field_name or ("texts" if isinstance(exc, InvalidTextError) else "images")
    where = field_name if exc.index is None else f"{field_name}[{exc.index}]"
    return printable(f"{where}: {exc.reason}")
