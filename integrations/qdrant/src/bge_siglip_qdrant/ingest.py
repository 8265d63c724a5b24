"""Helpers for bulk ingest: provenance payloads. Point ids come from the core's ``content_id`` (the scheme this
adapter introduced; one implementation for every writer)."""

from __future__ import annotations

import os
from typing import Any, Literal

from bge_siglip_vectorizer import ID_NAMESPACE, content_id

__all__ = ["ID_NAMESPACE", "Modality", "content_id", "provenance"]

Modality = Literal["image", "text"]

_URL_PREFIXES = ("http://", "https://", "file://")


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
