"""Bulk ingest, written once for every database adapter: content-derived ids, provenance, chunked batched encoding
with a progress bar, and the ``on_error`` policy.

An adapter's ``add_images`` / ``add_texts`` calls :func:`ingest` with a ``write`` callback that turns one
:class:`IngestBatch` (ids, vectors, provenance payloads) into its database's rows and upserts them::

    def write(batch: IngestBatch) -> None:
        client.upsert(collection, [{"id": i, "vector": v, **p} for i, v, p in zip(batch.ids, batch.vectors,
                                                                                 batch.payloads)])

    result = ingest(vectorizer, list_of_images, "image", write, on_error="skip")

* ids default to :func:`~bge_siglip_vectorizer.content_id` (a hash of the content), so ingesting the same files again overwrites their rows
  instead of duplicating them;
* ``on_error="raise"``: the first bad item (in input order) raises the core's typed error with ``index`` = its
  position in the caller's list, and nothing is written. Images: every chunk is encoded before the first is
  written (only decoding tells a bad image; their vectors are small: dim x 4 bytes each). Texts: every text is
  validated (:func:`~bge_siglip_vectorizer.validate_text`, the check ``encode_texts`` makes) before the first chunk
  is encoded, then chunks are written as they are encoded, so memory stays bounded by one chunk (multi-vectors are
  tokens x dim floats per text);
* ``on_error="skip"``: bad items are left out (their errors are returned in :attr:`IngestResult.skipped`) and chunks
  are written as they are encoded, so memory stays bounded by one chunk however large the ingest.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Collection, Literal, Sequence

import numpy as np
from tqdm.auto import tqdm

from .errors import InvalidInputError
from .ids import _URL_PREFIXES, Modality, content_id
from .inputs import list_image_files, validate_text
from .text_outputs import SparseEmbedding

if TYPE_CHECKING:
    from .vectorizer import Vectorizer

OnError = Literal["raise", "skip"]


def provenance(item: Any, modality: Modality) -> dict[str, Any]:
    """Where a vector came from: ``{"modality": "text", "text": ...}``, or ``{"modality": "image"}`` plus
    ``"source"`` (the path or URL as given) for images that have one."""
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


def ingest_items(items: Any, modality: Modality) -> list[Any]:
    """The caller's ``images`` / ``texts`` as a list: a folder of images is expanded (recursively, sorted); a single
    image or text is refused instead of being iterated character by character."""
    if modality == "image" and isinstance(items, (str, os.PathLike)):
        if not os.path.isdir(items):
            raise InvalidInputError(
                f"expected a folder or a list of images, got {os.fspath(items)!r}; wrap a single image in a list"
            )
        return list(list_image_files(items))
    if isinstance(items, (str, bytes)):
        raise InvalidInputError(f"expected a list of {modality}s, got a single {type(items).__name__}; wrap it in a list")
    return list(items)


@dataclass
class IngestResult:
    """What one ``add_images`` / ``add_texts`` call wrote.

    ``ids`` is aligned with the input list (``None`` where an item was skipped); ``skipped`` holds the typed error of
    each skipped item (``error.index`` is its position in the input list).
    """

    ids: list[Any] = field(default_factory=list)
    skipped: list[InvalidInputError] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(item_id is not None for item_id in self.ids)


@dataclass(frozen=True)
class IngestBatch:
    """One chunk's rows, ready for the database: row ``r`` is ``items[r]`` (at ``positions[r]`` in the caller's
    list) with id ``ids[r]``, vector ``vectors[r]`` (float32, unit length) and payload ``payloads[r]``
    (:func:`provenance` plus the caller's payload, whose keys win); ``sparse[r]`` its BGE-M3 lexical weights and
    ``multivector[r]`` its ColBERT vectors (float32 ``(tokens - 1, multivector_dim)``) when the ingest asked for them
    (texts only; from the same forward pass as the vector), else ``None``."""

    modality: Modality
    positions: list[int]
    items: list[Any]
    ids: list[Any]
    vectors: np.ndarray
    payloads: list[dict[str, Any]]
    sparse: list[SparseEmbedding] | None = None
    multivector: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.positions)


def ingest(
    vectorizer: "Vectorizer",
    items: Sequence[Any],
    modality: Modality,
    write: Callable[[IngestBatch], None],
    *,
    ids: Sequence[Any] | None = None,
    payloads: Sequence[dict[str, Any] | None] | None = None,
    chunk_size: int = 256,
    batch_size: int = 32,
    on_error: OnError = "raise",
    show_progress: bool | None = None,
    check: Callable[[Any, int], None] | None = None,
    reserved: Collection[str] = (),
    sparse: bool = False,
    multivector: bool = False,
) -> IngestResult:
    """Encode ``items`` (all images or all texts) in chunks of ``chunk_size`` and hand each chunk to ``write``.

    Args:
        ids: the rows' ids (default: :func:`content_id` of each item).
        payloads: per-item dicts merged over the provenance payload.
        batch_size: items per forward pass. ``show_progress``: a bar over the whole ingest (``None``: on a terminal,
            when there is more than one chunk).
        check: the database's own limits, called as ``check(item, position)`` before any encoding; it raises an
            :class:`InvalidInputError` (e.g. a text longer than a string field holds), which ``on_error`` treats
            like a bad image.
        reserved: payload keys the adapter writes itself (its id and vector fields): a payload setting one is a
            ``ValueError`` before anything is encoded.
        sparse: texts only: also compute each text's sparse (lexical) embedding, in the same forward pass
            (``Vectorizer.encode_texts_all``), into :attr:`IngestBatch.sparse`.
        multivector: texts only: the same for each text's multi-vector, into :attr:`IngestBatch.multivector`.

    Returns what was written; see the module docstring for the ``on_error`` policy. A failing ``write`` stops the
    ingest with the database's own error (chunks written before it stay written).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if (sparse or multivector) and modality != "text":
        raise ValueError("sparse and multi-vector embeddings exist for texts only")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    items = list(items)
    for name, values in (("payloads", payloads), ("ids", ids)):
        if values is not None and len(values) != len(items):
            raise ValueError(f"{name} has {len(values)} entries for {len(items)} {modality}s")
    for i, payload in enumerate(payloads or ()):
        clash = set(reserved).intersection(payload or ())
        if clash:
            raise ValueError(f"payloads[{i}] sets {sorted(clash)}, which the adapter writes itself (ids: pass ids=)")
    result = IngestResult(ids=[None] * len(items))
    candidates = list(range(len(items)))
    if check is not None:
        candidates = _checked(items, candidates, check, on_error, result.skipped)
    if modality == "text" and on_error == "raise":
        for i in candidates:
            validate_text(items[i], i)  # what encoding would refuse, before anything is written
    show = show_progress if show_progress is not None else (len(items) > chunk_size and sys.stderr.isatty())
    # "raise": image chunks are all encoded before any is written, so a bad image anywhere writes nothing; texts
    # were validated above. "skip": nothing raises. Otherwise chunks stream to the database as they finish.
    stream = on_error == "skip" or modality == "text"
    pending: list[IngestBatch] = []
    with tqdm(total=len(items), unit=modality, desc=f"adding {modality}s", disable=not show) as bar:
        for start in range(0, len(candidates), chunk_size):
            positions = candidates[start : start + chunk_size]
            kept, vectors, lexical, colbert = _encode_chunk(vectorizer, items, positions, modality, batch_size,
                                                            on_error, result.skipped, show_progress, sparse,
                                                            multivector)
            batch = IngestBatch(
                modality=modality,
                positions=kept,
                items=[items[i] for i in kept],
                ids=[ids[i] if ids is not None else content_id(items[i], modality) for i in kept],
                vectors=vectors,
                sparse=lexical,
                multivector=colbert,
                payloads=[{**provenance(items[i], modality), **((payloads[i] if payloads else None) or {})}
                          for i in kept],
            )
            for position, item_id in zip(batch.positions, batch.ids):
                result.ids[position] = item_id
            pending.append(batch)
            if stream:
                _write(write, pending.pop())
            bar.update(len(positions))
        bar.update(len(items) - len(candidates))  # items refused by `check`
    for batch in pending:
        _write(write, batch)
    result.skipped.sort(key=lambda error: error.index)
    return result


def _write(write: Callable[[IngestBatch], None], batch: IngestBatch) -> None:
    if len(batch):
        write(batch)


def _checked(
    items: list[Any],
    positions: list[int],
    check: Callable[[Any, int], None],
    on_error: OnError,
    skipped: list[InvalidInputError],
) -> list[int]:
    kept = []
    for i in positions:
        try:
            check(items[i], i)
        except InvalidInputError as error:
            if on_error == "raise":
                raise
            skipped.append(error)
        else:
            kept.append(i)
    return kept


def _encode_chunk(
    vectorizer: "Vectorizer",
    items: list[Any],
    positions: list[int],
    modality: Modality,
    batch_size: int,
    on_error: OnError,
    skipped: list[InvalidInputError],
    show_progress: bool | None,
    sparse: bool = False,
    multivector: bool = False,
) -> tuple[list[int], np.ndarray, list[SparseEmbedding] | None, list[np.ndarray] | None]:
    """Encode ``items[positions]``: the kept positions, their vectors (and sparse embeddings and multi-vectors when
    asked). Errors name the input position."""

    def encode(batch: list[Any]) -> tuple[np.ndarray, list[SparseEmbedding], list[np.ndarray]]:
        if modality == "image":
            return vectorizer.encode_images(batch, batch_size=batch_size, show_progress=show_progress), [], []
        # One forward per batch for every output asked (dense alone is encode_texts).
        outputs = vectorizer.encode_texts_all(batch, batch_size=batch_size, show_progress=show_progress,
                                              sparse=sparse, multivector=multivector)
        return outputs.dense, outputs.sparse or [], outputs.multivector or []

    kept: list[int] = []
    parts: list[np.ndarray] = []
    lexical: list[SparseEmbedding] = []
    colbert: list[np.ndarray] = []
    segments = [positions]
    while segments:
        segment = segments.pop(0)
        if not segment:
            continue
        try:
            dense, weights, rows = encode([items[i] for i in segment])
            parts.append(dense)
            lexical.extend(weights)
            colbert.extend(rows)
            kept.extend(segment)
        except InvalidInputError as exc:
            if exc.index is None or not 0 <= exc.index < len(segment):
                raise
            error = exc.at(segment[exc.index])  # position in the caller's list, not in this chunk
            if on_error == "raise":
                raise error from None
            skipped.append(error)
            # The core reports the first bad item in order, so the items before it are fine: encode them and go on
            # after it (each good item is encoded about once, however many bad ones there are).
            segments[:0] = [segment[: exc.index], segment[exc.index + 1 :]]
    vectors = np.concatenate(parts) if parts else np.empty((0, vectorizer.dim), dtype=np.float32)
    return kept, vectors, (lexical if sparse else None), (colbert if multivector else None)


__all__ = [
    "IngestBatch",
    "IngestResult",
    "OnError",
    "ingest",
    "ingest_items",
    "provenance",
]
