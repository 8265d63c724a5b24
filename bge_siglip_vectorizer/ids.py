"""Content-derived ids for bulk ingest: the same item gets the same id in every process, machine and run.

A store written with these ids is idempotent under re-ingest: a run repeated after a crash (or ``kill -9``)
overwrites the points it had already written instead of adding duplicates. The scheme is the one
``bge_siglip_qdrant.content_id`` has used since its first release (same namespace, same digest input), so ids agree
between the Qdrant adapter's ``add_images`` and every other writer that uses this function.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any, Literal

__all__ = ["ID_NAMESPACE", "Modality", "content_id"]

Modality = Literal["image", "text"]

#: Fixed namespace of content-derived ids (uuid5), so ids are stable across processes, machines and versions.
ID_NAMESPACE = uuid.UUID("6f1d3c52-93b5-5b0e-9a6c-2e7d1b4f0a11")

_URL_PREFIXES = ("http://", "https://", "file://")


def content_id(item: Any, modality: Modality = "image") -> str:
    """The id of ``item``: ``uuid5`` of a hash of its content, as a string (valid as a Qdrant point id too).

    Images: a path's file bytes (so a moved or copied file keeps its id, and a path and the same file's ``bytes``
    get one id), the bytes for ``bytes``, the pixel buffer and layout for arrays / PIL images, and the string itself
    for URLs, data URIs and base64. Texts: the text.
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
            # URL, data URI, base64, or a missing file (the encoder rejects it; the id is then never used).
            digest.update(b"str\0" + str(path).encode("utf-8", "surrogatepass"))
    elif hasattr(item, "tobytes"):
        # numpy arrays and PIL images: the pixels plus their layout, so equal buffers of other shapes differ.
        layout = (getattr(item, "shape", None), str(getattr(item, "dtype", "")), getattr(item, "mode", None),
                  getattr(item, "size", None))
        digest.update(b"pixels\0" + repr(layout).encode() + b"\0" + item.tobytes())
    else:
        digest.update(b"repr\0" + repr(item).encode())
    return str(uuid.uuid5(ID_NAMESPACE, digest.hexdigest()))
