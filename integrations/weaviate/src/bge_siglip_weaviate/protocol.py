"""The ``multi2vec-clip`` wire format: parsing a ``/vectorize`` body, decoding its images, shaping errors.

Weaviate sends ``{"texts": [...], "images": [...]}`` (either field may be missing or ``null``) and expects
``{"textVectors": [...], "imageVectors": [...]}`` back, or ``{"error": "..."}`` with a status >= 400 (see
the contract in weaviate/weaviate ``modules/multi2vec-clip/clients``).

Images arrive as base64 of the file bytes. They are decoded by the core's ``load_base64_image``, not its generic
``load_image``: that one also opens file paths and fetches URLs, which a network server must never do on behalf of a
remote caller (server-side file read, SSRF).

Memory: a decoded image can be hundreds of MB (a 9000x9000 PNG is ~344 KB of base64 and 243 MB of RGB pixels), so
each image is patchified right after it is decoded and only its uint8 patches (at most ``max_num_patches`` x 768
bytes) are kept; the full-size image is dropped before the next one is decoded, and a semaphore bounds how many
full-size images all requests together decode at once.

Texts: every string is accepted, ``""`` and blank ones included. Weaviate's ``multi2vec-clip`` module sends every
string value of a vectorised text field, empty ones too, and the reference container embeds them.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any, ContextManager

from bge_siglip_vectorizer import (
    ImageTooLargeError,
    InvalidInputError,
    InvalidTextError,
    PatchedImage,
    Vectorizer,
    load_base64_image,
    validate_text,
)

__all__ = [
    "ApiError",
    "VectorizeRequest",
    "parse_vectorize_body",
    "decode_request",
    "prepare_base64_image",
    "error_status",
    "describe_input_error",
]


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with ``status`` (and optional extra headers)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class VectorizeRequest:
    """A parsed ``/vectorize`` body: raw texts and base64 image strings, in request order."""

    texts: list[Any] = field(default_factory=list)
    images: list[Any] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.texts) + len(self.images)


def parse_vectorize_body(body: bytes) -> VectorizeRequest:
    """Parse the JSON body; a missing or ``null`` field is an empty list (Weaviate omits empty ones)."""
    try:
        payload = json.loads(body) if body.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise ApiError(400, f'request body must be a JSON object like {{"texts": [...], "images": [...]}}, got {type(payload).__name__}')
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
) -> tuple[list[str], list[PatchedImage]]:
    """Validate every text and prepare every image of one request (run in a worker thread, not the event loop).

    Images are decoded one at a time, each under one of ``decode_slots``, and turned into patches before the next
    is decoded. The first bad item raises a typed error whose ``index`` is its position in ``texts`` or ``images``.
    """
    texts = [validate_text(item, i, allow_empty=True) for i, item in enumerate(request.texts)]
    images = [prepare_base64_image(item, i, vectorizer, decode_slots) for i, item in enumerate(request.images)]
    return texts, images


def prepare_base64_image(
    item: Any, index: int, vectorizer: Vectorizer, decode_slots: threading.Semaphore | None = None
) -> PatchedImage:
    """Decode one base64 image and patchify it at once; only the patches outlive the call."""
    slot: ContextManager[Any] = decode_slots if decode_slots is not None else contextlib.nullcontext()
    with slot:
        image = load_base64_image(item, index, vectorizer.limits)
        try:
            return vectorizer.prepare_images([image], show_progress=False)[0]
        except InvalidInputError as exc:
            error = exc.at(index)  # the core numbered it 0 in its one-item list
        finally:
            del image  # the full-size image goes before the slot is given back
    # Raised outside the handler: no __context__ chain keeping the decode frames (and the image) alive.
    raise error


def error_status(exc: InvalidInputError) -> int:
    """HTTP status for a bad item: 413 for too-large images, 400 for everything else."""
    return 413 if isinstance(exc, ImageTooLargeError) else 400


def describe_input_error(exc: InvalidInputError) -> str:
    """``"images[2]: not an image (...)"``: names the request field and position Weaviate sent."""
    field_name = "texts" if isinstance(exc, InvalidTextError) else "images"
    where = field_name if exc.index is None else f"{field_name}[{exc.index}]"
    return f"{where}: {exc.reason}"
