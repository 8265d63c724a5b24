"""Turning any accepted image input into one decoded, validated RGB ``PIL.Image``; validating texts.

Accepted image inputs: a file path (``str`` / ``os.PathLike``, ``file://`` URIs too), an ``http(s)://`` URL, raw
``bytes``, a base64 string or ``data:image/...;base64,`` URI, a ``PIL.Image.Image`` and a numpy ``uint8`` array of
shape ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``.

Every failure is an :class:`~bge_siglip_vectorizer.errors.InvalidImageError` (or subclass) naming the item; no
exception from PIL, numpy or httpx escapes.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union
from urllib.parse import unquote, urlparse

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import (
    ImageFetchError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidTextError,
    UnsupportedImageTypeError,
)

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

# PIL's own decompression-bomb threshold (~89.5 MP); ours is checked from the header, before any pixel is decoded.
DEFAULT_MAX_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)
DEFAULT_URL_TIMEOUT_S = 10.0
DEFAULT_MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I)
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")
# Magic numbers of the formats PIL decodes most often; used to tell a base64 payload from a file name.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*", b"\x00\x00\x00")


@dataclass(frozen=True)
class ImageLimits:
    """Safety limits applied to every decoded or downloaded image."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    url_timeout_s: float = DEFAULT_URL_TIMEOUT_S
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    allow_urls: bool = True


DEFAULT_LIMITS = ImageLimits()


def load_image(item: Any, index: int | None = None, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode ``item`` into an RGB image, EXIF orientation applied, or raise an ``InvalidImageError`` naming it."""
    if isinstance(item, Image.Image):
        return _finish(item, index, None, limits)
    if isinstance(item, np.ndarray):
        return _from_array(item, index)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(item), index, None, limits)
    if isinstance(item, os.PathLike):
        return _open_path(Path(item), index, limits)
    if isinstance(item, str):
        return _from_string(item, index, limits)
    raise UnsupportedImageTypeError(
        f"unsupported image input of type {type(item).__name__}; expected a path, URL, bytes, base64 string, "
        "data URI, PIL.Image or numpy uint8 HWC array",
        index=index,
    )


def validate_text(item: Any, index: int | None = None, allow_empty: bool = False) -> str:
    """Return ``item`` if it is a non-blank string (any string with ``allow_empty``), else raise
    ``InvalidTextError`` naming it."""
    if not isinstance(item, str):
        raise InvalidTextError(f"expected a string, got {type(item).__name__}", index=index)
    if not allow_empty and not item.strip():
        raise InvalidTextError("empty text", index=index)
    try:
        item.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Lone surrogates ("\ud800") are valid Python str but no text: tokenizers raise a bare TypeError on them.
        raise InvalidTextError(
            f"not valid Unicode text: {exc.reason} at character {exc.start} ({item[exc.start]!r})", index=index
        ) from None
    return item


def load_base64_image(text: Any, index: int | None = None, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode base64 file bytes (optionally a ``data:image/...;base64,`` URI; line-wrapped and URL-safe base64 too).

    Unlike :func:`load_image` this never opens a path or fetches a URL: the entry point for servers, which must not
    read files or make requests on a remote caller's behalf.
    """
    if not isinstance(text, str):
        raise InvalidImageError(f"expected a base64 string, got {type(text).__name__}", index=index)
    stripped = text.strip()
    data_uri = _DATA_URI.match(stripped)
    if data_uri:
        if not data_uri.group("b64"):
            raise InvalidImageError("data URI is not base64-encoded (expected ';base64,')", index=index, source=stripped)
        stripped = stripped[data_uri.end():]
    if not stripped:
        raise InvalidImageError("empty image string", index=index)
    source = text.strip() if data_uri else "<base64>"
    return _decode_bytes(_b64decode(stripped, index, source), index, source, limits)


def _from_string(text: str, index: int | None, limits: ImageLimits) -> Image.Image:
    stripped = text.strip()
    source = stripped
    if _DATA_URI.match(stripped):
        return load_base64_image(stripped, index, limits)
    try:
        scheme = urlparse(stripped).scheme.lower() if "://" in stripped[:16] else ""
    except ValueError as exc:  # e.g. an unbalanced IPv6 bracket
        raise ImageFetchError(f"malformed URL ({exc})", index=index, source=source) from None
    if scheme in ("http", "https"):
        return _decode_bytes(_fetch(stripped, index, limits), index, source, limits)
    if scheme == "file":
        return _open_path(Path(unquote(urlparse(stripped).path)), index, limits)
    if scheme:
        raise ImageFetchError(
            f"unsupported URL scheme {scheme!r} (supported: http, https, file, data)", index=index, source=source
        )
    if os.path.exists(stripped):
        return _open_path(Path(stripped), index, limits)
    compact = "".join(stripped.split())
    if len(compact) >= 16 and _BASE64_CHARS.match(compact):
        payload = _b64bytes(compact)
        if payload is not None and (payload.startswith(_IMAGE_MAGIC) or len(compact) >= 256):
            return _decode_bytes(payload, index, "<base64>", limits)
    raise InvalidImageError(
        "no such file (and not an http(s) URL, data URI or base64 image)", index=index, source=source
    )


def _pad_b64(text: str) -> str:
    return text + "=" * (-len(text) % 4)


def _b64bytes(compact: str) -> bytes | None:
    """Decode standard or URL-safe base64 (padding optional); ``None`` if it is not base64."""
    altchars = b"-_" if ("-" in compact or "_" in compact) else None
    try:
        return base64.b64decode(_pad_b64(compact), altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None


def _b64decode(text: str, index: int | None, source: str) -> bytes:
    compact = "".join(text.split())  # base64 wrapped at 76 columns (MIME style) is still valid
    payload = _b64bytes(compact)
    if payload is None:
        raise InvalidImageError("bad base64 (invalid characters or length)", index=index, source=source)
    return payload


def _open_path(path: Path, index: int | None, limits: ImageLimits) -> Image.Image:
    source = str(path)
    if not path.exists():
        raise InvalidImageError("no such file", index=index, source=source)
    if path.is_dir():
        raise InvalidImageError("is a directory, not an image file", index=index, source=source)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidImageError(f"unreadable file ({exc.strerror or exc})", index=index, source=source) from None
    return _decode_bytes(data, index, source, limits)


def _decode_bytes(data: bytes, index: int | None, source: str | None, limits: ImageLimits) -> Image.Image:
    if not data:
        raise InvalidImageError("empty image data", index=index, source=source)
    try:
        with warnings.catch_warnings():
            # Our own pixel limit below replaces PIL's warning; PIL's hard error is still caught.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc), index=index, source=source) from None
    except UnidentifiedImageError:
        raise InvalidImageError("not an image (unrecognised format)", index=index, source=source) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageError(f"corrupt image header ({exc})", index=index, source=source) from None
    return _finish(image, index, source, limits)


def _finish(image: Image.Image, index: int | None, source: str | None, limits: ImageLimits) -> Image.Image:
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of {limits.max_pixels:,} "
            "(decompression-bomb guard; raise max_image_pixels to allow it)",
            index=index,
            source=source,
        )
    if width < 1 or height < 1:
        raise InvalidImageError(f"image has no pixels ({width}x{height})", index=index, source=source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image) or image
            return to_rgb(image)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc), index=index, source=source) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        message = str(exc)
        reason = "truncated image data" if "truncated" in message else f"corrupt image data ({message})"
        raise InvalidImageError(reason, index=index, source=source) from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB exactly as transformers' image processors do (``convert_to_rgb``).

    Images with transparency are composited onto white, so a transparent PNG does not turn black.
    """
    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _from_array(array: np.ndarray, index: int | None) -> Image.Image:
    if array.dtype != np.uint8:
        raise InvalidImageError(
            f"numpy image must be uint8 (got {array.dtype}); scale floats to 0..255 and cast first", index=index
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        mode = "L"
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        mode = "RGB" if array.shape[2] == 3 else "RGBA"
    else:
        raise InvalidImageError(
            f"numpy image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {array.shape}", index=index
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise InvalidImageError(f"numpy image has no pixels (shape {array.shape})", index=index)
    return to_rgb(Image.fromarray(np.ascontiguousarray(array), mode=mode))


def _fetch(url: str, index: int | None, limits: ImageLimits) -> bytes:
    if not limits.allow_urls:
        raise ImageFetchError("URL inputs are disabled (allow_urls=False)", index=index, source=url)
    import httpx  # imported lazily: most callers never fetch URLs

    cap = limits.max_download_bytes
    # httpx's timeout bounds each read; the deadline also stops a server that trickles bytes forever.
    deadline = time.monotonic() + limits.url_timeout_s
    try:
        with httpx.Client(timeout=limits.url_timeout_s, follow_redirects=True) as client:
            with client.stream("GET", url) as response:
                if response.status_code >= 400:
                    raise ImageFetchError(f"HTTP {response.status_code}", index=index, source=url)
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > cap:
                    raise ImageTooLargeError(
                        f"download of {int(declared):,} bytes exceeds the cap of {cap:,} bytes", index=index, source=url
                    )
                chunks: list[bytes] = []
                received = 0
                for chunk in response.iter_bytes():
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("total download time exceeded")
                    received += len(chunk)
                    if received > cap:
                        raise ImageTooLargeError(
                            f"download exceeds the cap of {cap:,} bytes", index=index, source=url
                        )
                    chunks.append(chunk)
    except httpx.TimeoutException:
        raise ImageFetchError(
            f"timed out after {limits.url_timeout_s:g}s", index=index, source=url
        ) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is not an HTTPError
        raise ImageFetchError(f"download failed ({type(exc).__name__}: {exc})", index=index, source=url) from None
    return b"".join(chunks)


IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".jfif", ".ppm", ".pgm", ".tga", ".ico"}
)


def list_image_files(paths: Union[str, os.PathLike, "list[str | os.PathLike]"], recursive: bool = True) -> list[Path]:
    """Expand files and folders into a sorted list of image files (by extension, hidden files and folders skipped);
    files given directly are kept as they are."""
    roots = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: list[Path] = []
    for root in roots:
        root = Path(root).expanduser()
        if root.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(
                sorted(
                    p
                    for p in root.glob(pattern)
                    if p.suffix.lower() in IMAGE_EXTENSIONS
                    and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(root).parts)
                )
            )
        else:
            found.append(root)  # a missing file is reported by load_image with its index
    return found
