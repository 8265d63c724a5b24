"""Helpers for bulk ingest: content-derived point ids and provenance payloads."""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any, Literal

Modality = Literal["image", "text"]

#: Fixed namespace of content-derived point ids (uuid5), so ids are stable across processes, machines and versions.
ID_NAMESPACE = uuid.UUID("6f1d3c52-93b5-5b0e-9a6c-2e7d1b4f0a11")

_URL_PREFIXES = ("http://", "https://", "file://")


def content_id(item: Any, modality: Modality = "image") -> str:
    """The point id bulk ingest gives ``item``: ``uuid5`` of a hash of its content, as a string.

    Images: the file's bytes for a path (so a moved or copied file keeps its id), the bytes for ``bytes``, the pixel
    buffer for arrays / PIL images, and the string itself for URLs, data URIs and base64. Texts: the text. Re-ingesting
    the same content therefore overwrites its point instead of adding a duplicate.
    """
    digest = hashlib.blake2b(digest_size=20)
    digest.update(modality.encode() + b"\0")
    if modality == "text":
        digest.update(b"str\0" + str(item).encode("utf-8", "surrogatepass"))
    elif isinstance(item, (bytes, bytearray, memoryview)):
        digest.update(b"bytes\0" + bytes(item))
    elif isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        if not str(path).startswith(_URL_PREFIXES) and os.path.isfile(path):
            digest.update(b"bytes\0")
            with open(path, "rb") as handle:  # hashed in chunks: photos can be large
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        else:
            # URL, data URI, base64, or a missing file (the core will reject it; the id is then never used).
            digest.update(b"str\0" + str(path).encode("utf-8", "surrogatepass"))
    elif hasattr(item, "tobytes"):
        # numpy arrays and PIL images: the pixels plus their layout, so equal buffers of other shapes differ.
        layout = (getattr(item, "shape", None), str(getattr(item, "dtype", "")), getattr(item, "mode", None),
                  getattr(item, "size", None))
        digest.update(b"pixels\0" + repr(layout).encode() + b"\0" + item.tobytes())
    else:
        digest.update(b"repr\0" + repr(item).encode())
    return str(uuid.uuid5(ID_NAMESPACE, digest.hexdigest()))


def provenance(item: Any, modality: Modality) -> dict[str, Any]:
    """Payload recording where a vector came from: ``modality`` plus ``source`` (path/URL) or ``text``."""
    if modality == "text":
        return {"modality": "text", "text": item}
    payload: dict[str, Any] = {"modality": "image"}
    if isinstance(item, os.PathLike) or (isinstance(item, str) and _is_reference(item)):
        payload["source"] = os.fspath(item)  # as given: relative paths stay relative
    return payload


def _is_reference(text: str) -> bool:
    # Paths and URLs are worth recording; data URIs and base64 payloads (possibly megabytes) are not.
    if text.startswith(_URL_PREFIXES):
        return True
    return not text.startswith("data:") and os.path.exists(text)
