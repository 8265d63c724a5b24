"""Writing embedded rows into the vector databases through the adapters, in-process or as Ray ``Datasink``s.

A store is named by a URI-like *target*, in the core's syntax (:class:`bge_siglip_vectorizer.StoreTarget`)::

    qdrant:./qdrant#photos              Qdrant local mode (a folder)
    qdrant:http://localhost:6333#photos Qdrant server
    chroma:./chroma#photos              Chroma PersistentClient (a folder)
    chroma:http://localhost:8000#photos Chroma server (HttpClient)
    milvus:./photos.db#photos           milvus-lite (a file)
    milvus:http://localhost:19530#photos Milvus server
    lancedb:./lancedb#photos            LanceDB (a folder, or any URI lancedb.connect takes)

Every write is one upsert of one batch's rows, keyed by the rows' content-derived ids: a batch is written whole or
not at all, and a re-run (after a crash or ``kill -9``) overwrites what an earlier run wrote, so the store ends with
exactly one point per distinct item. Rows with an error are not written; they are counted and reported. A batch
reaches its writer as the core's :class:`~bge_siglip_vectorizer.IngestBatch` (ids, vectors, the provenance payload
of :func:`~bge_siglip_vectorizer.provenance` plus the row's other columns, sparse weights), the type the adapters'
own bulk ingest writes, so Milvus and LanceDB rows are made by the adapters' ``write_batch``.

On Ray, the job's write tasks hand their blocks to one writer actor on the driver's node, which holds the store
open for the whole job: embedded stores (Qdrant local mode, a Chroma folder, a milvus-lite file) allow one open
client (one process) at a time, and the folder is on the driver's machine.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

import numpy as np
import pyarrow as pa

from bge_siglip_vectorizer import (
    IngestBatch,
    InvalidInputError,
    Modality,
    OptionalDependencyError,
    StoreTarget,
    model_reference,
    provenance,
    resolve_model_reference,
)

from .embed import describe, sparse_from_arrow

if TYPE_CHECKING:
    from ray.data.datasource import Datasink as _DatasinkBase
else:
    try:
        from ray.data.datasource import Datasink as _DatasinkBase
    except ImportError:  # pragma: no cover - ray[data] is a dependency; keeps the in-process path importable
        _DatasinkBase = object

#: The stores this package writes to (through their adapters).
SCHEMES = ("qdrant", "chroma", "milvus", "lancedb")
#: ``write_datasink(sink, ray_remote_args=WRITE_TASK_ARGS)``: a write task only hands its blocks to the writer
#: actor, so it reserves no CPU; with the default (one CPU each) writes wait behind decode tasks for a free CPU.
WRITE_TASK_ARGS = {"num_cpus": 0}
#: How many error messages a result keeps (the count is always exact).
KEEP_ERRORS = 100
#: The options that decide which model instance an adapter loads (the rest of VectorizerOptions only decode and
#: fetch images, which the stores never do for our rows): what the writers give the adapters, so Chroma's and
#: LanceDB's stored configs hold no decode settings, and the in-process ingest shares the adapters' model.
MODEL_OPTIONS = ("device", "dtype", "backend", "max_num_patches")


class Target(StoreTarget):
    """A parsed target ``scheme:location#collection`` (the core's syntax) naming a store this package writes."""

    supported = SCHEMES


@dataclass
class WriteResult:
    """Rows written and rows refused (their ``error`` messages, the first :data:`KEEP_ERRORS` of them); ``count``:
    the store's own count of the collection when the writer closed (``None`` until then)."""

    written: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    count: int | None = None

    def add(self, other: "WriteResult") -> "WriteResult":
        self.written += other.written
        self.failed += other.failed
        self.errors.extend(other.errors[: max(0, KEEP_ERRORS - len(self.errors))])
        return self

    def refuse(self, message: str) -> None:
        self.failed += 1
        if len(self.errors) < KEEP_ERRORS:
            self.errors.append(message)


@dataclass(frozen=True)
class RowColumns:
    """The columns a writer reads: the vector, the id, the error; every other column is payload / metadata.

    ``image`` / ``text``: the columns the rows were embedded from. A row is a text row when it has a text and no
    image (as in :func:`~bge_siglip_ray.embed_dataset`), or as its ``modality`` column says, where the rows have
    one (a dataset whose image bytes were dropped after decoding cannot tell otherwise); its payload records its
    provenance (``modality``, an image's path or URL as ``source``, a text row's ``text``), as the adapters'
    ``add_images`` / ``add_texts`` do. ``sparse`` / ``multivector``: the columns of
    ``embed_dataset(sparse_column=..., multivector_column=...)``, for the stores that hold them.
    """

    vector: str = "embedding"
    id: str = "id"
    error: str = "error"
    image: str | None = None
    text: str | None = None
    modality: str = "modality"
    sparse: str | None = None
    multivector: str | None = None
    #: Never stored: raw image bytes (if a caller kept them).
    skip: tuple[str, ...] = ("bytes",)


@dataclass(frozen=True)
class WriterOptions:
    """How a writer opens its store: the model (a :func:`~bge_siglip_vectorizer.model_reference`) and the
    :data:`MODEL_OPTIONS` its adapter loads it with; ``sparse``: create a missing Milvus collection with a sparse
    field (texts only)."""

    model: str
    options: dict[str, Any] = field(default_factory=dict)
    sparse: bool = False
    lock_wait_s: float = 60.0


class Writer(Protocol):
    """One store's side of a write: ``check`` refuses a row the store cannot hold (an ``InvalidInputError``, which
    makes it an error row), ``upsert`` writes one batch of one modality."""

    #: Whether text rows need their sparse weights (a Milvus collection with a sparse field).
    wants_sparse: bool
    #: Whether the store keeps a multi-vector column (LanceDB); elsewhere it is left out.
    keeps_multivector: bool

    def check(self, item: Any, modality: Modality) -> None: ...
    def upsert(self, batch: IngestBatch, types: dict[str, pa.DataType]) -> None: ...
    def count(self) -> int: ...
    def close(self) -> None: ...


def _require(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise OptionalDependencyError(
            f"this target needs {module} ({exc}): pip install 'bge-siglip-ray[{extra}]'"
        ) from None


def _retry_locked(open_store: Callable[[], Any], locked: Callable[[Exception], bool], wait_s: float, what: str):
    """Open an embedded store, waiting while another process (e.g. the writer of a run that was just killed and is
    still being reaped) holds its lock; then a clear error naming the one-process rule."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return open_store()
        except Exception as exc:  # noqa: BLE001 - only the store's own "locked" errors are retried
            if not locked(exc):
                raise
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} is held open by another process for more than {wait_s:.0f} s (an "
                                   "embedded store allows one process at a time): close that client") from exc
            time.sleep(0.5)


def _model_options(options: WriterOptions) -> dict[str, Any]:
    return {k: options.options[k] for k in MODEL_OPTIONS if options.options.get(k) is not None}


class QdrantWriter:
    """Through ``BGESigLIPQdrant``: the collection is created with the adapter's vector params (model dim, cosine)
    and its model record, an existing one is checked against the model, and points are upserted with the
    adapter's ``upsert``."""

    wants_sparse = keeps_multivector = False

    def __init__(self, target: Target, options: WriterOptions) -> None:
        _require("bge_siglip_qdrant", "qdrant")
        from bge_siglip_qdrant import BGESigLIPQdrant
        from qdrant_client import QdrantClient

        location = target.location
        client = (QdrantClient(url=location) if target.is_url else
                  _retry_locked(lambda: QdrantClient(path=location), lambda e: "already accessed" in str(e),
                                options.lock_wait_s, f"Qdrant folder {location}"))
        self.db = BGESigLIPQdrant(client, model=resolve_model_reference(options.model), **_model_options(options))
        self.collection = target.collection
        if client.collection_exists(self.collection):
            self.db.check_model(self.collection)
        else:
            self.db.create_collection(self.collection)

    def check(self, item: Any, modality: Modality) -> None:
        pass

    def upsert(self, batch: IngestBatch, types: dict[str, pa.DataType]) -> None:
        from qdrant_client import models

        points = [models.PointStruct(id=i, vector=v.tolist(), payload=p)
                  for i, v, p in zip(batch.ids, batch.vectors, batch.payloads)]
        self.db.upsert(self.collection, points=points, wait=True)

    def count(self) -> int:
        return int(self.db.client.count(self.collection, exact=True).count)

    def close(self) -> None:
        self.db.client.close()


class ChromaWriter:
    """Through ``BGESigLIPEmbeddingFunction``: the collection is created (or opened, which checks its model) with
    our function and data loader, so later queries embed with the same model, and rows are upserted with their
    precomputed embeddings. A text row's text becomes the document and an image row's path or URL its URI, as a
    Chroma user would write them; the payload is the metadata (Chroma keeps str, int, float and bool values)."""

    wants_sparse = keeps_multivector = False

    def __init__(self, target: Target, options: WriterOptions) -> None:
        _require("bge_siglip_chroma", "chroma")
        import chromadb
        from bge_siglip_chroma import BGESigLIPEmbeddingFunction, ImageURILoader

        if target.is_url:
            from urllib.parse import urlparse

            url = urlparse(target.location)
            client = chromadb.HttpClient(host=url.hostname, port=url.port or 8000, ssl=url.scheme == "https")
        else:
            client = chromadb.PersistentClient(path=target.location)
        function = BGESigLIPEmbeddingFunction(model=resolve_model_reference(options.model), **_model_options(options))
        self.collection = client.get_or_create_collection(
            target.collection, embedding_function=function, data_loader=ImageURILoader()
        )

    def check(self, item: Any, modality: Modality) -> None:
        pass

    def upsert(self, batch: IngestBatch, types: dict[str, pa.DataType]) -> None:
        text = batch.modality == "text"
        documents = list(batch.items) if text else None
        uris = None if text else [item if isinstance(item, str) else None for item in batch.items]
        metadatas = [{k: v for k, v in p.items() if isinstance(v, (str, int, float, bool))} or None
                     for p in batch.payloads]
        self.collection.upsert(ids=list(batch.ids), embeddings=batch.vectors, metadatas=metadatas,
                               documents=documents, uris=uris if uris and any(uris) else None)

    def count(self) -> int:
        return int(self.collection.count())

    def close(self) -> None:
        pass  # Chroma's clients have no close(); the process's exit releases the folder


class MilvusWriter:
    """Through ``BGESigLIPMilvus``: the collection is created with the adapter's schema, index and model record
    (with a sparse field when ``WriterOptions.sparse``), an existing one is checked against the model, rows are
    checked against its VARCHAR limits (``item_check``) and upserted by the adapter's ``write_batch``. A collection
    with a sparse field gets each text row's lexical weights and holds texts only (the adapter's rule)."""

    keeps_multivector = False

    def __init__(self, target: Target, options: WriterOptions) -> None:
        _require("bge_siglip_milvus", "milvus")
        from bge_siglip_milvus import SPARSE_FIELD, BGESigLIPMilvus
        from pymilvus import MilvusClient

        self.file = None if target.is_url else os.path.abspath(target.location)
        if self.file is None:
            client = MilvusClient(uri=target.location)
        else:
            # milvus-lite serves a .db file from one process (an flock); pymilvus says only "Open local milvus failed".
            client = _retry_locked(lambda: MilvusClient(self.file), lambda e: "Open local milvus failed" in str(e),
                                   options.lock_wait_s, f"milvus-lite file {self.file}")
        self.db = BGESigLIPMilvus(client, model=resolve_model_reference(options.model), **_model_options(options))
        self.collection = target.collection
        self.db.create_collection(self.collection, sparse=options.sparse, exist_ok=True)  # checks an existing one
        description = self.db.check_collection(self.collection)
        self.wants_sparse = any(f["name"] == SPARSE_FIELD for f in description["fields"])
        self._checks = {m: self.db.item_check(description, m) for m in ("image", "text")}

    def check(self, item: Any, modality: Modality) -> None:
        self._checks[modality](item, 0)

    def upsert(self, batch: IngestBatch, types: dict[str, pa.DataType]) -> None:
        if self.wants_sparse and batch.modality == "image":
            raise ValueError(f"Milvus collection {self.collection!r} has a sparse field, which image rows cannot fill "
                             "(pymilvus 3.0 / milvus-lite 3.2 write no null vectors): ingest images into a "
                             "collection without one")
        self.db.write_batch(self.collection, batch)

    def count(self) -> int:
        # Strong consistency: the count sees every upsert this writer made.
        rows = self.db.client.query(self.collection, filter="", output_fields=["count(*)"],
                                    consistency_level="Strong")
        return int(rows[0]["count(*)"])

    def close(self) -> None:
        self.db.client.close()
        if self.file is not None:
            # pymilvus' close() leaves milvus-lite serving the file (and holding its lock) until this process exits;
            # release it, so the next process (a resumed run, the Ray writer after an in-process run) can open it.
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.file)


class LanceDBWriter:
    """Through ``bge_siglip_lancedb``: the table is made by ``create_table`` with the registry's ``bge-siglip``
    function (so ``table.search("text")`` embeds queries with the model; an existing table is checked against it),
    columns of the rows that the table lacks are added with their Arrow types (a multi-vector column stays a
    ``list<fixed_size_list<float32>>``, LanceDB's multi-vector type), and each batch is upserted on ``id`` by the
    adapter's ``write_batch`` (``merge_insert``)."""

    wants_sparse = False
    keeps_multivector = True

    def __init__(self, target: Target, options: WriterOptions) -> None:
        _require("bge_siglip_lancedb", "lancedb")
        import lancedb
        from bge_siglip_lancedb import NAME, create_table
        from lancedb.embeddings import get_registry

        model_options = _model_options(options)
        function = get_registry().get(NAME).create(model=resolve_model_reference(options.model),
                                                   device=model_options.get("device"),
                                                   max_num_patches=model_options.get("max_num_patches"))
        self.table = create_table(lancedb.connect(target.location), target.collection, function, exist_ok=True)

    def check(self, item: Any, modality: Modality) -> None:
        pass

    def upsert(self, batch: IngestBatch, types: dict[str, pa.DataType]) -> None:
        have = set(self.table.schema.names)
        new = [pa.field(name, types[name]) for name in dict.fromkeys(k for p in batch.payloads for k in p)
               if name not in have]
        if new:
            self.table.add_columns(pa.schema(new))  # null for the rows already there
        from bge_siglip_lancedb import write_batch

        write_batch(self.table, batch)

    def count(self) -> int:
        return int(self.table.count_rows())

    def close(self) -> None:
        pass  # LanceDB commits every write; nothing stays open


_WRITERS = {"qdrant": QdrantWriter, "chroma": ChromaWriter, "milvus": MilvusWriter, "lancedb": LanceDBWriter}


def open_writer(target: Target | str, model: str | os.PathLike, options: dict[str, Any] | None = None, *,
                sparse: bool = False) -> Writer:
    """The adapter-backed writer for ``target``; ``options``: VectorizerOptions (those of :data:`MODEL_OPTIONS`
    reach the adapter); ``sparse``: a missing Milvus collection gets a sparse field."""
    target = Target.parse(target) if isinstance(target, str) else target
    return _WRITERS[target.scheme](target, WriterOptions(model_reference(model), dict(options or {}), sparse))


def _modalities(table: pa.Table, columns: RowColumns) -> list[Modality]:
    names = table.column_names
    if columns.modality in names:
        return table.column(columns.modality).to_pylist()
    n = table.num_rows
    images = table.column(columns.image).to_pylist() if columns.image in names else [None] * n
    texts = table.column(columns.text).to_pylist() if columns.text in names else [None] * n
    return ["text" if text is not None and image is None else "image" for image, text in zip(images, texts)]


def write_table(writer: Writer, table: pa.Table, columns: RowColumns = RowColumns()) -> WriteResult:
    """Write one block of embedded rows: rows with an error, or that the store refuses (``writer.check``), are
    counted, not written; the others go in one upsert per modality."""
    result = WriteResult()
    names = table.column_names
    for needed in (columns.vector, columns.id):
        if needed not in names:
            raise ValueError(f"rows to write need a {needed!r} column (embed_dataset(..., id_column='id')); "
                             f"got {names}")
    if writer.wants_sparse and columns.sparse not in names:
        raise ValueError("the collection has a sparse field: embed the texts with embed_dataset(..., "
                         "sparse_column=...) and name it in RowColumns(sparse=...)")
    n = table.num_rows
    errors = table.column(columns.error).to_pylist() if columns.error in names else [None] * n
    modalities = _modalities(table, columns)
    images = table.column(columns.image).to_pylist() if columns.image in names else [None] * n
    texts = table.column(columns.text).to_pylist() if columns.text in names else [None] * n
    items = [texts[i] if modalities[i] == "text" else images[i] for i in range(n)]
    for i in range(n):
        if errors[i] is None:
            try:
                writer.check(items[i], modalities[i])
            except InvalidInputError as exc:
                errors[i] = describe(type(exc)(exc.reason, source=exc.source or _name(items[i])))
        if errors[i] is not None:
            result.refuse(errors[i])

    # The row's own columns, after its provenance; the image column is recorded as "source" (a path or URL), a
    # text row's text as "text"; vectors, ids, errors and the sparse weights have places of their own, and a
    # multi-vector column is a column only where the store has multi-vector columns.
    special = {columns.vector, columns.id, columns.error, columns.sparse, columns.image, *columns.skip}
    if not writer.keeps_multivector:
        special.add(columns.multivector)
    payload_names = [c for c in names if c not in special]
    types = {field.name: field.type for field in table.schema}
    rows = table.select(payload_names).to_pylist()
    vectors = table.column(columns.vector)
    ids = table.column(columns.id).to_pylist()
    sparse = table.column(columns.sparse).to_pylist() if writer.wants_sparse else None
    for modality in ("image", "text"):
        keep = [i for i in range(n) if errors[i] is None and modalities[i] == modality]
        if not keep:
            continue
        kept = vectors.take(pa.array(keep, type=pa.int64()))
        flat = kept.combine_chunks() if isinstance(kept, pa.ChunkedArray) else kept
        matrix = np.asarray(flat.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(keep), -1)
        payloads = [_payload(items[i], modality, rows[i], columns) for i in keep]
        lexical = [sparse_from_arrow(sparse[i]) for i in keep] if sparse is not None and modality == "text" else None
        writer.upsert(IngestBatch(modality=modality, positions=keep, items=[items[i] for i in keep],
                                  ids=[ids[i] for i in keep], vectors=matrix, payloads=payloads, sparse=lexical),
                      types)
        result.written += len(keep)
    return result


def _payload(item: Any, modality: Modality, row: dict[str, Any], columns: RowColumns) -> dict[str, Any]:
    payload = provenance(item, modality)
    if modality == "image" and "source" not in payload and _name(item) is not None:
        # A path the writer's machine does not see (provenance records only paths that exist here, and URLs):
        # kept under its own column name, as the row had it.
        payload[columns.image] = item  # type: ignore[index]
    own = {k: v for k, v in row.items() if v is not None and not isinstance(v, bytes)
           and not (modality == "text" and k == columns.text)}  # a text row's text is the payload's "text"
    return {**payload, **own}


def _name(item: Any) -> str | None:
    return item if isinstance(item, str) and len(item) < 4096 else None


# --------------------------------------------------------------------------------------------------------- Ray
class _WriterActor:
    """Holds one writer for a whole Ray job (created by :class:`StoreDatasink` on the driver's node)."""

    def __init__(self, target: str, options: WriterOptions, columns: RowColumns) -> None:
        self.columns = columns
        self.total = WriteResult()
        self.writer: Writer | None = None
        # An error opening the store (a model mismatch, a locked file) is raised by ready(), as a task error that
        # carries it to the driver; raised here, Ray would report a generic "actor died" with its text only.
        self.error: Exception | None = None
        try:
            self.writer = _WRITERS[Target.parse(target).scheme](Target.parse(target), options)
        except Exception as exc:  # noqa: BLE001 - handed to the driver by ready()
            self.error = exc

    def ready(self) -> bool:
        if self.error is not None:
            raise self.error
        return True

    def write(self, table: pa.Table) -> WriteResult:
        result = write_table(self.writer, table, self.columns)
        self.total.add(result)  # add() copies the messages it keeps
        return result

    def progress(self) -> tuple[int, int]:
        return self.total.written, self.total.failed

    def close(self) -> int | None:
        """Close the store; returns its count of the collection (read just before), or None if it never opened."""
        if self.writer is None:
            return None
        try:
            return self.writer.count()
        finally:
            self.writer.close()


class StoreDatasink(_DatasinkBase):
    """A Ray ``Datasink`` writing embedded rows (from :func:`~bge_siglip_ray.embed_dataset` with
    ``id_column="id"``) into a store through its adapter: ``ds.write_datasink(StoreDatasink("qdrant:./db#photos",
    model), ray_remote_args=WRITE_TASK_ARGS)``. After the write, :attr:`result` holds the rows written, the errors
    of the rows left out, and the store's count of the collection.

    ``options`` are VectorizerOptions; those of :data:`MODEL_OPTIONS` are what the adapter loads the model with
    (it checks the model and creates the collection with the model's dimension; the vectors come from the rows).
    ``sparse``: create a missing Milvus collection with a sparse field (the rows need ``columns.sparse``).
    """

    def __init__(self, target: str | Target, model: str | os.PathLike, *, columns: RowColumns = RowColumns(),
                 sparse: bool = False, **options: Any) -> None:
        self.target = str(Target.parse(str(target)))
        self.options = WriterOptions(model_reference(model), options, sparse)
        self.columns = columns
        self.result = WriteResult()
        # Named, so write tasks find it whether they were shipped before or after on_write_start ran.
        self._actor_name = f"bge-siglip-writer-{uuid.uuid4().hex}"
        self._handle = None
        self._ready = None

    @property
    def model(self) -> str:
        return self.options.model

    @property
    def supports_distributed_writes(self) -> bool:
        return False  # write tasks on the driver's node, beside the writer actor: blocks move between local processes

    def on_write_start(self, schema: Any = None) -> None:
        import ray

        self.start()
        ready, self._ready = self._ready, None
        if ready is not None:
            try:
                ray.get(ready)
            except ray.exceptions.RayTaskError as exc:  # the store's own error (a model mismatch, ...), unwrapped
                raise exc.cause from None

    def start(self) -> None:
        """Start the writer actor (it opens the store, creates or checks the collection and loads the model) unless
        it is started already; returns at once. Ray calls :meth:`on_write_start` when the first rows reach the write
        stage, which waits for the writer; call this before ``write_datasink`` to open the store while the rest of
        the job starts, as ``bge-siglip ingest`` does."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if self._handle is not None:
            return
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        # num_cpus=0: the writer waits on the store, and must not take the CPU a decode task or the model needs.
        # Writes run one at a time (group "write"); progress is answered beside a write in flight ("status").
        actor = ray.remote(num_cpus=0, scheduling_strategy=here, concurrency_groups={"write": 1, "status": 1})(
            _WriterActor).options(name=self._actor_name).remote(self.target, self.options, self.columns)
        self._ready = actor.ready.options(concurrency_group="status").remote()
        self._handle = actor  # a named actor still dies with its last handle: this one lives until the job ends

    def _actor(self):
        import ray

        return ray.get_actor(self._actor_name)

    def write(self, blocks: Iterable[Any], ctx: Any) -> WriteResult:
        import ray
        from ray.data.block import BlockAccessor

        actor = self._actor()
        result = WriteResult()
        for block in blocks:
            table = BlockAccessor.for_block(block).to_arrow()
            if table.num_rows:
                result.add(ray.get(actor.write.options(concurrency_group="write").remote(table)))
        return result

    def progress(self) -> tuple[int, int]:
        """(rows written, rows refused) so far: for a progress bar polled while the job runs."""
        import ray

        try:
            actor = self._actor()
            return ray.get(actor.progress.options(concurrency_group="status").remote())
        except ValueError:  # not started yet, or already finished
            return self.result.written, self.result.failed

    def _close(self) -> None:
        import ray

        try:
            actor = self._actor()
        except ValueError:
            return
        try:
            self.result.count = ray.get(actor.close.options(concurrency_group="write").remote())
        finally:
            ray.kill(actor)
            self._handle = self._ready = None

    def on_write_complete(self, write_result: Any) -> None:
        for returned in getattr(write_result, "write_returns", write_result) or []:
            self.result.add(returned)
        self._close()

    def on_write_failed(self, error: Exception) -> None:
        self._close()

    def get_name(self) -> str:
        return f"BGESigLIP({self.target.split(':', 1)[0]})"


class _Sink(StoreDatasink):
    scheme = ""
    server = ""

    def __init__(self, collection: str, model: str | os.PathLike, *, path: str | os.PathLike | None = None,
                 url: str | None = None, **kwargs: Any) -> None:
        if (path is None) == (url is None):
            raise ValueError(f"give exactly one of path (local) and url ({self.server})")
        super().__init__(f"{self.scheme}:{url or os.fspath(path)}#{collection}", model, **kwargs)


class QdrantDatasink(_Sink):
    """:class:`StoreDatasink` for Qdrant: ``path`` (local mode folder) or ``url`` (a server)."""

    scheme, server = "qdrant", "a Qdrant server"


class ChromaDatasink(_Sink):
    """:class:`StoreDatasink` for Chroma: ``path`` (PersistentClient folder) or ``url`` (a ``chroma run`` server)."""

    scheme, server = "chroma", "a Chroma server"


class MilvusDatasink(_Sink):
    """:class:`StoreDatasink` for Milvus: ``path`` (a milvus-lite ``.db`` file) or ``url`` (a server);
    ``sparse=True`` creates a missing collection with a sparse field (texts only; rows need ``columns.sparse``)."""

    scheme, server = "milvus", "a Milvus server"


class LanceDBDatasink(_Sink):
    """:class:`StoreDatasink` for LanceDB: ``path`` (a folder, or any URI ``lancedb.connect`` takes)."""

    scheme, server = "lancedb", "LanceDB Cloud: db://..."
