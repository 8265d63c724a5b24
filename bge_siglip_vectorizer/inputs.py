"""Turning any accepted image input into one decoded, validated RGB ``PIL.Image``; validating texts.

Accepted image inputs: a file path (``str`` / ``os.PathLike``, ``file://`` URIs too), an ``http(s)://`` URL, raw
``bytes``, a base64 string or ``data:image/...;base64,`` URI, a ``PIL.Image.Image`` and a numpy ``uint8`` array of
shape ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``.

Every failure is an :class:`~bge_siglip_vectorizer.errors.InvalidImageError` (or subclass) naming the item; no
exception from PIL, numpy or the HTTP stack escapes. Every item is bounded:

* **pixels**: ``max_pixels`` is checked from the header before any pixel is decoded, for every input kind (arrays
  and PIL images too). Pillow's own decompression-bomb guard, which also runs inside some decoders (GIF frames,
  TIFF tiles, crops), follows the same limit while *our* decodes run: it is consulted through one function, which
  this module wraps once so that inside our decodes it applies the call's limit (a context variable: per thread,
  no global value is ever changed) and everywhere else behaves exactly as Pillow's own.
* **local paths**: only regular files, at most ``max_file_bytes``; devices, FIFOs, sockets and directories are
  refused from ``stat`` and an ``O_NONBLOCK`` open, so nothing ever blocks on them. ``allow_local_files=False``
  refuses paths and ``file://`` URIs without touching the file system.
* **URLs**: see :mod:`bge_siglip_vectorizer.fetch` (one deadline, public destinations only by default, bounded
  body); ``allow_urls=False`` refuses ``http(s)://`` and ``file://``.
* **memory**: :class:`OpenedImage` splits reading the header from decoding, so a caller can first ask for a reduced
  decode (:meth:`OpenedImage.reduce_for`: JPEG DCT scaling, the decoded image never smaller than what the caller
  will resize to) and reserve the pixels the decode will hold in a :class:`PixelBudget`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import ctypes
import functools
import io
import os
import re
import stat
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Union
from urllib.parse import unquote, urlparse

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import (
    ImageFetchError,
    ImageTooLargeError,
    InvalidImageError,
    InvalidInputError,
    InvalidTextError,
    UnsupportedImageTypeError,
    require,
)
from .fetch import Resolver, fetch_url, is_url, normalize_private_allowance

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

# PIL's own decompression-bomb threshold (~89.5 MP); ours is checked from the header, before any pixel is decoded.
DEFAULT_MAX_PIXELS = int(1024 * 1024 * 1024 // 4 // 3)
DEFAULT_URL_TIMEOUT_S = 10.0
DEFAULT_MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
# Local files are read lazily by the decoder (never whole into memory); the cap refuses absurd files early. An
# uncompressed 16-bit 48 MP TIFF is ~290 MB.
DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_REDIRECTS = 5

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*)(?P<b64>;base64)?,", re.I)
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")
# Magic numbers of the formats PIL decodes most often; used to tell a base64 payload from a file name.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*", b"\x00\x00\x00")
# ISO-BMFF brands (bytes 8-12 after "ftyp") of HEIF/HEIC (phones) and AVIF.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_ORIENTATION = 0x0112
# EXIF orientation -> the transposition that shows the image upright (as PIL.ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Formats whose decoder can emit a reduced image directly (libjpeg's DCT scaling through Image.draft).
_DRAFTABLE = frozenset({"JPEG", "MPO"})


@dataclass(frozen=True)
class ImageLimits:
    """Safety limits applied to every decoded, read or downloaded image.

    ``allow_private_urls``: ``False`` (default) refuses URLs whose address is loopback, private, link-local, ...;
    ``True`` allows them all; a tuple of host names and networks (``"10.0.0.0/8"``) allows those. ``resolver``
    replaces DNS for URL hosts (tests use it to map names to private addresses without any traffic).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    url_timeout_s: float = DEFAULT_URL_TIMEOUT_S
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    allow_urls: bool = True
    allow_local_files: bool = True
    allow_private_urls: Union[bool, tuple[str, ...]] = False
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    resolver: Resolver | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_private_urls", normalize_private_allowance(self.allow_private_urls))


DEFAULT_LIMITS = ImageLimits()


# ------------------------------------------------------------------------------------------- Pillow's own guard
_GUARD_LIMIT: contextvars.ContextVar[int | None] = contextvars.ContextVar("bge_siglip_max_pixels", default=None)


def _install_pillow_guard() -> None:
    pillow_check = getattr(Image, "_decompression_bomb_check", None)
    if pillow_check is None or getattr(pillow_check, "follows_bge_siglip_limit", False):
        return  # a Pillow without the hook (our own header check still applies), or installed already

    def check(size: tuple[int, int], *args: Any, **kwargs: Any) -> None:
        limit = _GUARD_LIMIT.get()
        if limit is None:  # not inside one of our decodes: Pillow's behaviour, unchanged
            return pillow_check(size, *args, **kwargs)
        if max(1, size[0]) * max(1, size[1]) > limit:
            raise Image.DecompressionBombError(_too_many_pixels(size[0], size[1], limit))
        return None

    check.follows_bge_siglip_limit = True  # type: ignore[attr-defined]
    Image._decompression_bomb_check = check


_install_pillow_guard()


@contextlib.contextmanager
def _pixel_guard(limit: int) -> Iterator[None]:
    token = _GUARD_LIMIT.set(limit)
    try:
        yield
    finally:
        _GUARD_LIMIT.reset(token)


# ------------------------------------------------------------------------------------------- public entry points
def load_image(item: Any, index: int | None = None, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode ``item`` into an RGB image at full resolution, EXIF orientation applied, or raise an
    ``InvalidImageError`` naming it."""
    with open_image(item, index, limits) as opened:
        return opened.decode().image


def open_image(item: Any, index: int | None = None, limits: ImageLimits = DEFAULT_LIMITS) -> "OpenedImage":
    """Identify ``item`` and check its size from the header, without decoding a pixel (URLs are fetched here).
    Close the result (it is a context manager) or decode it."""
    if isinstance(item, FetchedImage):
        return _open_bytes(item.data, index, item.url, limits)
    if isinstance(item, Image.Image):
        return OpenedImage(item, index, None, limits)
    if isinstance(item, np.ndarray):
        return _open_array(item, index, limits)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return _open_bytes(bytes(item), index, None, limits)
    if isinstance(item, os.PathLike):
        return _open_path(Path(item), index, limits)
    if isinstance(item, str):
        return _open_string(item, index, limits)
    raise UnsupportedImageTypeError(
        f"unsupported image input of type {type(item).__name__}; expected a path, URL, bytes, base64 string, "
        "data URI, PIL.Image or numpy uint8 HWC array",
        index=index,
    )


@dataclass(frozen=True)
class FetchedImage:
    """The body of an image URL, fetched already (by the fetch threads), with the URL for error messages."""

    data: bytes
    url: str


@dataclass(frozen=True)
class DecodedImage:
    """A decoded RGB image, EXIF orientation applied, that may have been decoded at a reduced scale.

    ``size`` is the ``(width, height)`` of the full-resolution (oriented) image; ``box`` the region of ``image``
    that covers it (``Image.resize(box=...)``), ``None`` when ``image`` is the full image itself."""

    image: Image.Image
    size: tuple[int, int]
    box: tuple[float, float, float, float] | None = None


class OpenedImage:
    """One image input, identified and size-checked, not decoded yet: :meth:`reduce_for`, :attr:`pixels`,
    :meth:`decode`. A context manager (closes the file it reads from)."""

    def __init__(self, image: Image.Image | None, index: int | None, source: str | None, limits: ImageLimits, *,
                 array: np.ndarray | None = None, file: Any = None, ours: bool = False) -> None:
        self._image = image
        self._array = array
        self._file = file
        self._ours = ours  # opened by us from bytes or a file: may be decoded reduced (never a caller's image)
        self._box: tuple[float, float, float, float] | None = None
        self._full_size: tuple[int, int] | None = None
        self.index = index
        self.source = source
        self._limits = limits
        width, height = image.size if image is not None else (array.shape[1], array.shape[0])
        _check_pixels(width, height, index, source, limits)

    @property
    def pixels(self) -> int:
        """Pixels the decode will hold (after any reduction): what a :class:`PixelBudget` reserves."""
        width, height = self._image.size if self._image is not None else self._array.shape[1::-1]
        return int(width) * int(height)

    def reduce_for(self, min_size: Callable[[int, int], tuple[int, int]]) -> None:
        """Decode at a reduced scale where the format allows it (JPEG: libjpeg's DCT scaling, 1/2 to 1/8), keeping
        the decoded image at least ``min_size(full_width, full_height)`` (both oriented as displayed). The result
        depends only on the image and ``min_size``, never on anything else."""
        image = self._image
        if not self._ours or image is None or image.format not in _DRAFTABLE or self._box is not None:
            return
        try:
            orientation = image.getexif().get(_ORIENTATION, 1)  # JPEG: EXIF is in the header, read already
        except Exception:  # noqa: BLE001 - a broken EXIF block: decode at full size, as transformers would
            return
        full = image.size
        rotated = orientation in (5, 6, 7, 8)
        width, height = min_size(*(full[::-1] if rotated else full))
        request = (height, width) if rotated else (width, height)
        if 2 * request[0] > full[0] or 2 * request[1] > full[1]:
            return  # no DCT scale (1/2 .. 1/8) would keep it large enough
        result = image.draft(None, request)
        if result is not None and image.size != full:
            self._box = tuple(float(v) for v in result[1])  # type: ignore[assignment]
            self._full_size = full

    def decode(self) -> DecodedImage:
        """Decode (full or reduced), apply EXIF orientation, convert to RGB; typed errors naming the item.

        Once only: the decoded pixels are handed over (this object keeps no reference), so they are freed as soon
        as the caller drops the result."""
        try:
            with _pixel_guard(self._limits.max_pixels):
                if self._array is not None:
                    image = Image.fromarray(np.ascontiguousarray(self._array))  # (H, W) -> L, 3 -> RGB, 4 -> RGBA
                else:
                    image = self._image
                    image.load()
                self._image = self._array = None
                box, size = self._box, self._full_size or image.size
                method = _TRANSPOSE.get(_orientation(image))
                if method is not None:
                    box = _transpose_box(box, image.size, method) if box is not None else None
                    image = image.transpose(method)
                    size = size[::-1] if method in _SWAPS else size
                return DecodedImage(to_rgb(image), (int(size[0]), int(size[1])), box)
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(str(exc), index=self.index, source=self.source) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            message = str(exc)
            reason = "truncated image data" if "truncated" in message else f"corrupt image data ({message})"
            raise InvalidImageError(reason, index=self.index, source=self.source) from None
        finally:
            self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "OpenedImage":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_SWAPS = frozenset({Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90,
                    Image.Transpose.ROTATE_270})


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - unreadable EXIF: show the pixels as stored, as PIL viewers do
        return 1


def _transpose_box(box: tuple[float, float, float, float], size: tuple[int, int],
                   method: Image.Transpose) -> tuple[float, float, float, float]:
    """Where ``box`` (in an image of ``size``) lies after ``image.transpose(method)``."""
    w, h = size

    def moved(x: float, y: float) -> tuple[float, float]:
        return {
            Image.Transpose.FLIP_LEFT_RIGHT: (w - x, y), Image.Transpose.FLIP_TOP_BOTTOM: (x, h - y),
            Image.Transpose.ROTATE_180: (w - x, h - y), Image.Transpose.ROTATE_90: (y, w - x),
            Image.Transpose.ROTATE_270: (h - y, x), Image.Transpose.TRANSPOSE: (y, x),
            Image.Transpose.TRANSVERSE: (h - y, w - x),
        }[method]

    (x0, y0), (x1, y1) = moved(box[0], box[1]), moved(box[2], box[3])
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def _too_many_pixels(width: int, height: int, limit: int) -> str:
    return (f"{width}x{height} = {width * height:,} pixels exceeds the limit of {limit:,} "
            "(decompression-bomb guard; raise max_image_pixels to allow it)")


def _check_pixels(width: int, height: int, index: int | None, source: str | None, limits: ImageLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(_too_many_pixels(width, height, limits.max_pixels), index=index,
                                 source=source)
    if width < 1 or height < 1:
        raise InvalidImageError(f"image has no pixels ({width}x{height})", index=index, source=source)


#: Decodes holding more pixels than this give the freed memory back to the OS afterwards (see
#: :func:`release_freed_memory`); smaller ones are not worth the call.
TRIM_PIXELS = 4_000_000


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Why: glibc gives every thread a heap of its own and keeps what is freed there. Each decode thread that once
    decoded a big image would keep its size resident for good: measured here, four threads decoding one 24 MP PNG
    each, one at a time, grew the resident memory by 386 MB instead of ~100 MB."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class PixelBudget:
    """At most ``limit`` pixels held by decodes at once, across threads: callers wait their turn (first come,
    first served). One image larger than the whole budget still runs, alone."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the pixel budget must be positive, got {limit}")
        self.limit = limit
        self.in_use = 0
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    @contextlib.contextmanager
    def reserve(self, pixels: int) -> Iterator[None]:
        need = min(max(int(pixels), 1), self.limit)
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or self.in_use + need > self.limit:
                    self._cond.wait()
            except BaseException:
                self._queue.remove(ticket)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self.in_use += need
            self._cond.notify_all()  # the next in line may fit beside this one
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= need
                self._cond.notify_all()


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


def read_utf8(path: str | os.PathLike, error: type[Exception]) -> str:
    """The text of a UTF-8 file (a byte-order mark is dropped), or ``error("<path>:<line>: ...")`` naming the line
    and column of the first byte that is not UTF-8, or the reason the file cannot be read."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise error(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); save the file as "
            "UTF-8"
        ) from None


def load_base64_image(text: Any, index: int | None = None, limits: ImageLimits = DEFAULT_LIMITS) -> Image.Image:
    """Decode base64 file bytes (optionally a ``data:image/...;base64,`` URI; line-wrapped and URL-safe base64 too).

    Unlike :func:`load_image` this never opens a path or fetches a URL: the entry point for servers, which must not
    read files or make requests on a remote caller's behalf.
    """
    with _open_base64(text, index, limits) as opened:
        return opened.decode().image


def decode_base64(text: Any, index: int | None = None) -> bytes:
    """The file bytes in a base64 string or ``data:image/...;base64,`` URI (line-wrapped and URL-safe base64 too),
    or an ``InvalidImageError`` naming the item. Never a path or URL: servers pass the result to
    ``Vectorizer.prepare_images`` / ``encode_images``, which then decode it like any bytes (reduced, budgeted)."""
    return _base64_payload(text, index)[0]


def _base64_payload(text: Any, index: int | None) -> tuple[bytes, str]:
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
    return _b64decode(stripped, index, source), source


def _open_base64(text: Any, index: int | None, limits: ImageLimits) -> OpenedImage:
    data, source = _base64_payload(text, index)
    return _open_bytes(data, index, source, limits)


def _open_string(text: str, index: int | None, limits: ImageLimits) -> OpenedImage:
    stripped = text.strip()
    source = stripped
    if _DATA_URI.match(stripped):
        return _open_base64(stripped, index, limits)
    if is_url(stripped):
        return _open_bytes(fetch_url(stripped, index, limits), index, source, limits)
    try:
        scheme = urlparse(stripped).scheme.lower() if "://" in stripped[:16] else ""
    except ValueError as exc:  # e.g. an unbalanced IPv6 bracket
        raise ImageFetchError(f"malformed URL ({exc})", index=index, source=source) from None
    if scheme == "file":
        if not limits.allow_urls:
            raise ImageFetchError("URL inputs are disabled (allow_urls=False), file:// too", index=index,
                                  source=source)
        return _open_path(Path(unquote(urlparse(stripped).path)), index, limits, source)
    if scheme:
        raise ImageFetchError(
            f"unsupported URL scheme {scheme!r} (supported: http, https, file, data)", index=index, source=source
        )
    # With local files disabled the file system is not even asked whether the name exists.
    if limits.allow_local_files and os.path.lexists(stripped):
        return _open_path(Path(stripped), index, limits)
    compact = "".join(stripped.split())
    if len(compact) >= 16 and _BASE64_CHARS.match(compact):
        payload = _b64bytes(compact)
        if payload is not None and (payload.startswith(_IMAGE_MAGIC) or len(compact) >= 256):
            return _open_bytes(payload, index, "<base64>", limits)
    if not limits.allow_local_files:
        raise InvalidImageError(
            "not an http(s) URL, data URI or base64 image (local file paths are disabled: allow_local_files=False)",
            index=index, source=source,
        )
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


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO, a named pipe"), (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")


def _open_path(path: Path, index: int | None, limits: ImageLimits, source: str | None = None) -> OpenedImage:
    source = source or str(path)
    if not limits.allow_local_files:
        raise InvalidImageError("local file paths are disabled (allow_local_files=False)", index=index,
                                source=source)

    def refuse_unless_regular(info: os.stat_result) -> None:
        kind = _not_regular(info.st_mode)
        if kind == "a directory":
            raise InvalidImageError("is a directory, not an image file", index=index, source=source)
        if kind is not None:
            raise InvalidImageError(f"not a regular file ({kind}); only regular image files are read", index=index,
                                    source=source)
        if info.st_size > limits.max_file_bytes:
            raise ImageTooLargeError(f"file of {info.st_size:,} bytes exceeds the cap of {limits.max_file_bytes:,}",
                                     index=index, source=source)

    try:
        # stat before open: opening a device or FIFO can block or have side effects; never open one.
        refuse_unless_regular(os.stat(path))
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise InvalidImageError("no such file", index=index, source=source) from None
    except OSError as exc:
        raise InvalidImageError(f"unreadable file ({exc.strerror or exc})", index=index, source=source) from None
    handle = os.fdopen(fd, "rb")
    try:
        refuse_unless_regular(os.fstat(fd))  # the path may have been swapped between stat and open
        return _open_stream(handle, index, source, limits)
    except BaseException:
        handle.close()
        raise


def _open_bytes(data: bytes, index: int | None, source: str | None, limits: ImageLimits) -> OpenedImage:
    if not data:
        raise InvalidImageError("empty image data", index=index, source=source)
    return _open_stream(io.BytesIO(data), index, source, limits)


_HEIF_LOCK = threading.Lock()


def _missing_plugin(head: bytes) -> str | None:
    """For HEIC/HEIF and AVIF files (by their ISO-BMFF brand): what to install if PIL cannot decode them here, else
    None. Registers pillow-heif's opener with PIL on first need, when it is installed."""
    if head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    if brand in _AVIF_BRANDS and not _pillow_has("avif"):
        return "AVIF needs a Pillow with AVIF support (the Pillow >= 11.3 wheels) or pillow-heif: pip install " \
               "'bge-siglip-vectorizer[heif]'"
    if brand in _HEIF_BRANDS and not _register_heif():
        return "HEIC/HEIF images need pillow-heif: pip install 'bge-siglip-vectorizer[heif]'"
    return None


def _pillow_has(feature: str) -> bool:
    from PIL import features

    return bool(features.check(feature))


def _register_heif() -> bool:
    """Register pillow-heif's opener with PIL (once); False if pillow-heif is not installed."""
    with _HEIF_LOCK:
        try:
            heif = require("pillow_heif", "HEIC/HEIF images", "heif")
        except ImportError:
            return False
        if not getattr(_register_heif, "done", False):
            heif.register_heif_opener()
            _register_heif.done = True  # type: ignore[attr-defined]
        return True


def _open_stream(fp: Any, index: int | None, source: str | None, limits: ImageLimits) -> OpenedImage:
    head = fp.read(16)
    fp.seek(0)
    hint = _missing_plugin(head)
    try:
        with _pixel_guard(limits.max_pixels):
            image = Image.open(fp)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc), index=index, source=source) from None
    except UnidentifiedImageError:
        reason = f"unsupported image format: {hint}" if hint else "not an image (unrecognised format)"
        raise InvalidImageError(reason, index=index, source=source) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImageError(f"corrupt image header ({exc})", index=index, source=source) from None
    return OpenedImage(image, index, source, limits, file=fp, ours=True)


def _open_array(array: np.ndarray, index: int | None, limits: ImageLimits) -> OpenedImage:
    if array.dtype != np.uint8:
        raise InvalidImageError(
            f"numpy image must be uint8 (got {array.dtype}); scale floats to 0..255 and cast first", index=index
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise InvalidImageError(
            f"numpy image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {array.shape}", index=index
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise InvalidImageError(f"numpy image has no pixels (shape {array.shape})", index=index)
    return OpenedImage(None, index, None, limits, array=array)


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
