"""The ``multi2vec-clip`` wire format: parsing a ``/vectorize`` body, decoding its images, shaping errors.

Weaviate sends ``{"texts": [...], "images": [...]}`` (either field may be missing or ``null``) and expects
``{"textVectors": [...], "imageVectors": [...]}`` back, or ``{"error": "..."}`` with a status >= 400 (see
the contract in weaviate/weaviate ``modules/multi2vec-clip/clients``).

Images arrive as base64 of the file bytes. They are decoded by the core's ``load_base64_image``, not its generic
``load_image``: that one also opens file paths and fetches URLs, which a network server must never do on behalf of a
remote caller (server-side file read, SSRF).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from bge_siglip_vectorizer import ImageTooLargeError, InvalidInputError, InvalidTextError
from bge_siglip_vectorizer.inputs import ImageLimits, load_base64_image, validate_text

__all__ = [
    "ApiError",
    "VectorizeRequest",
    "parse_vectorize_body",
    "decode_request",
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


def decode_request(request: VectorizeRequest, limits: ImageLimits) -> tuple[list[str], list[Image.Image]]:
    """Validate every text and decode every image of one request (run in a worker thread, not the event loop).

    The first bad item raises a typed error whose ``index`` is its position in ``texts`` or ``images``.
    """
    texts = [validate_text(item, i) for i, item in enumerate(request.texts)]
    images = [load_base64_image(item, i, limits) for i, item in enumerate(request.images)]
    return texts, images


def error_status(exc: InvalidInputError) -> int:
    """HTTP status for a bad item: 413 for too-large images, 400 for everything else."""
    return 413 if isinstance(exc, ImageTooLargeError) else 400


def describe_input_error(exc: InvalidInputError) -> str:
    """``"images[2]: not an image (...)"``: names the request field and position Weaviate sent."""
    field_name = "texts" if isinstance(exc, InvalidTextError) else "images"
    where = field_name if exc.index is None else f"{field_name}[{exc.index}]"
    return f"{where}: {exc.reason}"
