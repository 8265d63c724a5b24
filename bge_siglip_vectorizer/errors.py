"""Every exception the package raises, and the one place where foreign exceptions become ours.

::

    BGESigLIPError
    ├── InvalidInputError (ValueError)       an item of the caller's list; .index, .source
    │   ├── InvalidImageError
    │   │   ├── ImageTooLargeError
    │   │   ├── ImageFetchError
    │   │   └── UnsupportedImageTypeError (TypeError)
    │   └── InvalidTextError
    ├── ModelMismatchError (ValueError)      a store holds vectors of another model; .stored, .given
    ├── ModelLoadError                       a model directory, checkpoint, tower or graph
    │   ├── MissingProjectorError
    │   └── MissingHeadError                 sparse / multi-vector output asked of a tower without that head
    ├── OptionalDependencyError (ImportError) an extra is not installed; says which
    ├── ExportError                          ONNX export or quantisation failed
    └── DataError (ValueError)               a training/evaluation data file; names file and row

Foreign exceptions (transformers, safetensors, onnxruntime, the hub, ...) cross into ours only through
:func:`reraise_as`, so every message has the same shape: what we were doing, then the foreign type and text.

Input errors carry the position of the offending item in the caller's list (``index``) and, when known, where it
came from (``source``: a path or URL), so a message such as ``image #3 ('photos/x.jpg'): truncated image data`` tells
the user exactly which item to fix. They subclass :class:`ValueError` so generic ``except ValueError`` code still
catches them.
"""

from __future__ import annotations

__all__ = [
    "BGESigLIPError",
    "InvalidInputError",
    "InvalidImageError",
    "ImageTooLargeError",
    "ImageFetchError",
    "UnsupportedImageTypeError",
    "InvalidTextError",
    "ModelMismatchError",
    "ModelLoadError",
    "MissingProjectorError",
    "MissingHeadError",
    "DataError",
    "OptionalDependencyError",
    "ExportError",
    "reraise_as",
    "require",
]

import contextlib
import importlib
from typing import Iterator


class BGESigLIPError(Exception):
    """Base class of every error raised by this package."""


class InvalidInputError(BGESigLIPError, ValueError):
    """An input item could not be encoded. Nothing from the call was returned or written."""

    kind = "input"

    def __init__(self, reason: str, *, index: int | None = None, source: str | None = None) -> None:
        self.reason = reason
        self.index = index
        self.source = source
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.kind if self.index is None else f"{self.kind} #{self.index}"
        if self.source is not None:
            where += f" ({_shorten(self.source)!r})"
        return f"{where}: {self.reason}"

    def at(self, index: int | None, where: str | None = None) -> "InvalidInputError":
        """The same error re-addressed to the caller's ``index`` (adapters map sub-lists back to the user's list),
        optionally naming the field it came from, e.g. ``where="points[2].vector['image']"``."""
        reason = self.reason if where is None else f"{self.reason} (at {where})"
        return type(self)(reason, index=index, source=self.source)


class InvalidImageError(InvalidInputError):
    """Unreadable file, not an image, truncated data, bad base64, bad array shape or dtype, ..."""

    kind = "image"


class ImageTooLargeError(InvalidImageError):
    """Pixel count above the configured limit (decompression-bomb guard) or download above the byte cap."""


class ImageFetchError(InvalidImageError):
    """An image URL could not be fetched: unsupported scheme, HTTP error, timeout, too large."""


class UnsupportedImageTypeError(InvalidImageError, TypeError):
    """The item is of a Python type that is not an accepted image input."""


class InvalidTextError(InvalidInputError):
    """Empty text or a non-string item where text was expected."""

    kind = "text"


class ModelMismatchError(BGESigLIPError, ValueError):
    """A store (collection, table) holds vectors of one model and was asked to write, query or reconfigure with
    another: vectors of two models in one index rank as noise. Nothing was written or changed.

    ``stored`` and ``given`` are the two model fingerprints (``Vectorizer.fingerprint``); ``where`` names the store.
    """

    def __init__(self, where: str, stored: str, given: str, hint: str = "") -> None:
        self.where = where
        self.stored = stored
        self.given = given
        message = (f"{where} holds vectors of model {stored[:12]}, not of this model ({given[:12]}); "
                   "embed into a new collection, or use the model it was made with")
        super().__init__(message + (f"; {hint}" if hint else ""))


class ModelLoadError(BGESigLIPError):
    """A model directory, checkpoint or tower could not be loaded."""


class MissingProjectorError(ModelLoadError):
    """The model has no trained projector weights; random weights are never used silently."""


class MissingHeadError(ModelLoadError):
    """Sparse or multi-vector text output was asked of a model whose text tower lacks BGE-M3's head for it
    (``sparse_linear.pt`` / ``colbert_linear.pt``), or of a backend that does not run it; dense output still works."""


class OptionalDependencyError(BGESigLIPError, ImportError):
    """A feature needs a package that is not installed; the message names the pip extra that adds it."""


class ExportError(BGESigLIPError):
    """Exporting or quantising a model failed."""


class DataError(BGESigLIPError, ValueError):
    """A training/evaluation data file is missing or has a bad row (the message names the file and row)."""


def _shorten(text: str, limit: int = 120) -> str:
    # base64 payloads and data URIs can be megabytes long; a message needs only their start.
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def reraise_as(error: type[BGESigLIPError], doing: str) -> Iterator[None]:
    """Turn any foreign exception raised inside the block into ``error("<doing>: <Type>: <text>")``.

    Our own errors pass through unchanged; the foreign traceback is dropped (``from None``): the message says what
    failed, and a transformers stack trace buries that.
    """
    try:
        yield
    except BGESigLIPError:
        raise
    except Exception as exc:  # noqa: BLE001 - this is the boundary: whatever they raise becomes ours
        raise error(f"{doing}: {type(exc).__name__}: {exc}") from None


def require(module: str, feature: str, extra: str):
    """``import module``, or :class:`OptionalDependencyError` saying which pip extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise OptionalDependencyError(
            f"{feature} needs {module.split('.')[0]} ({exc}): pip install 'bge-siglip-vectorizer[{extra}]'"
        ) from None
