"""One LanceDB table for image rows and text rows, and bulk ingest into it.

LanceDB ties each vector column to ONE source column and ONE embedding function, so a table whose ``vector`` is
computed by LanceDB from an image column cannot also compute it from a text column. :func:`schema` gives the table
LanceDB users would write: ``source`` (image path / URI) is the function's source column — ``table.add`` of image
rows embeds them, ``table.search(text or image)`` embeds the query — and ``text`` holds text rows, whose vectors
:func:`add_texts` computes with the same function and writes itself (LanceDB leaves given vectors alone). ``modality``
says which a row is, for ``.where("modality = 'image'")``.

:func:`add_images` / :func:`add_texts` are the bulk path: the core's :func:`~bge_siglip_vectorizer.ingest`
(content-derived ids, batches, progress bar, typed errors, ``on_error="skip"``) with an upsert on ``id``
(``merge_insert``), so ingesting the same files again changes nothing.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

import pyarrow as pa
from lancedb.pydantic import LanceModel, Vector

from bge_siglip_vectorizer import (
    IngestBatch,
    IngestResult,
    Modality,
    ModelMismatchError,
    OnError,
    ingest,
    ingest_items,
)

from .embeddings import NAME, BGESigLIPEmbeddings

if TYPE_CHECKING:
    from lancedb.db import DBConnection
    from lancedb.table import Table


ID, MODALITY, SOURCE, TEXT, VECTOR = "id", "modality", "source", "text", "vector"


def schema(function: BGESigLIPEmbeddings) -> type[LanceModel]:
    """A ``LanceModel`` with ``id``, ``modality``, ``source`` (the function's source column), ``text`` and
    ``vector`` (the function's vector column, of the model's dim). Subclass it to add columns of your own."""
    if function.source != "image":
        raise ValueError("schema() is the mixed image + text table: create its function with source='image'")

    class Item(LanceModel):
        id: str
        modality: Optional[str] = None  # "image" / "text"; nullable so table.add rows may leave it out
        source: Optional[str] = function.SourceField(default=None)
        text: Optional[str] = None
        vector: Vector(function.ndims()) = function.VectorField(default=None)  # type: ignore[valid-type]

    return Item


def create_table(
    db: "DBConnection",
    name: str,
    function: BGESigLIPEmbeddings,
    *,
    schema_model: type[LanceModel] | None = None,
    exist_ok: bool = False,
    **kwargs: Any,
) -> "Table":
    """``db.create_table(name, schema=schema(function))``; with ``exist_ok`` an existing table is opened, after
    checking that it was embedded with ``function``'s model (else :class:`ModelMismatchError`)."""
    if exist_ok and _exists(db, name):
        table = db.open_table(name)
        stored = stored_fingerprints(table)
        if function.fingerprint not in stored:
            raise ModelMismatchError(f"table {name!r}", ", ".join(sorted(stored)) or "none", function.fingerprint)
        return table
    return db.create_table(name, schema=schema_model or schema(function), **kwargs)


def stored_fingerprints(table: "Table") -> set[str]:
    """The fingerprints of the bge-siglip functions recorded in ``table``'s metadata (read without loading them)."""
    metadata = table.schema.metadata or {}
    raw = metadata.get(b"embedding_functions")
    if raw is None:
        return set()
    return {entry["model"].get("fingerprint") for entry in json.loads(raw) if entry.get("name") == NAME} - {None}


def add_images(
    table: "Table",
    images: str | os.PathLike | Iterable[Any],
    *,
    ids: Sequence[str] | None = None,
    payloads: Sequence[dict[str, Any] | None] | None = None,
    chunk_size: int = 256,
    on_error: OnError = "raise",
    show_progress: bool | None = None,
) -> IngestResult:
    """Embed and upsert images (a folder, recursively, or a list of anything the core accepts) into a table made
    by :func:`schema`; ``source`` records paths and URLs, ``payloads[i]`` fill your own columns.

    ``on_error="raise"``: a bad item raises the core's typed error (``index`` = position in ``images``) and
    nothing is written; ``"skip"``: bad items are left out and reported in ``result.skipped``.
    """
    return _add(table, ingest_items(images, "image"), "image", ids, payloads, chunk_size, on_error, show_progress)


def add_texts(
    table: "Table",
    texts: Iterable[str],
    *,
    ids: Sequence[str] | None = None,
    payloads: Sequence[dict[str, Any] | None] | None = None,
    chunk_size: int = 256,
    on_error: OnError = "raise",
    show_progress: bool | None = None,
) -> IngestResult:
    """Embed and upsert texts (the ``text`` column); the same rules as :func:`add_images`."""
    return _add(table, ingest_items(texts, "text"), "text", ids, payloads, chunk_size, on_error, show_progress)


def table_function(table: "Table") -> BGESigLIPEmbeddings:
    """The table's bge-siglip function on its ``vector`` column (rebuilt from the table's metadata)."""
    config = table.embedding_functions.get(VECTOR)
    if config is None or not isinstance(config.function, BGESigLIPEmbeddings):
        raise ValueError(
            f"table {table.name!r} has no {NAME!r} embedding function on its {VECTOR!r} column; create it with "
            "bge_siglip_lancedb.create_table"
        )
    return config.function


def _add(
    table: "Table",
    items: list[Any],
    modality: Modality,
    ids: Sequence[str] | None,
    payloads: Sequence[dict[str, Any] | None] | None,
    chunk_size: int,
    on_error: OnError,
    show_progress: bool | None,
) -> IngestResult:
    function = table_function(table)
    target = table.schema
    for i, payload in enumerate(payloads or ()):
        unknown = set(payload or ()) - set(target.names)
        if unknown:  # pyarrow would drop them silently
            raise ValueError(f"payloads[{i}] has keys {sorted(unknown)} that are not columns of table {table.name!r}")

    def write(batch: IngestBatch) -> None:
        rows = [{**payload, ID: item_id, VECTOR: vector}
                for item_id, vector, payload in zip(batch.ids, batch.vectors, batch.payloads)]
        # Vectors given: LanceDB does not call the function again. Upsert on id: re-ingest changes nothing.
        data = pa.Table.from_pylist(rows, schema=target)
        table.merge_insert(ID).when_matched_update_all().when_not_matched_insert_all().execute(data)

    return ingest(function.vectorizer, items, modality, write, ids=ids, payloads=payloads, chunk_size=chunk_size,
                  batch_size=function.batch_size, on_error=on_error, show_progress=show_progress,
                  reserved=(ID, VECTOR))


def _exists(db: "DBConnection", name: str) -> bool:
    token = None
    while True:
        page = db.list_tables(page_token=token)
        if name in page.tables:
            return True
        token = page.page_token
        if not token:
            return False
