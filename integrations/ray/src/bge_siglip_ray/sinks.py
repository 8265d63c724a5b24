"""Writing embedded rows into the vector databases through the adapters, in-process or as Ray ``Datasink``s.

A store is named by a URI-like *target*, in the core's syntax (:class:`bge_siglip_vectorizer.StoreTarget`)::

    qdrant:./qdrant#photos              Qdrant local mode (a folder)
    qdrant:http://localhost:6333#photos Qdrant server
    chroma:./chroma#photos              Chroma PersistentClient (a folder)
    chroma:http://localhost:8000#photos Chroma server (HttpClient)

Every write is one upsert of one batch's rows, keyed by the rows' content-derived ids: a batch is written whole or
not at all, and a re-run (after a crash or ``kill -9``) overwrites what an earlier run wrote, so the store ends with
exactly one point per distinct item. Rows with an error are not written; they are counted and reported.

On Ray, the job's write tasks hand their blocks to one writer actor on the driver's node, which holds the store
open for the whole job: embedded stores (Qdrant local mode, Chroma's folder) allow one open client at a time, and
the folder is on the driver's machine.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Protocol

import numpy as np
import pyarrow as pa

from bge_siglip_vectorizer import OptionalDependencyError, StoreTarget

if TYPE_CHECKING:
    from ray.data.datasource import Datasink as _DatasinkBase
else:
    try:
        from ray.data.datasource import Datasink as _DatasinkBase
    except ImportError:  # pragma: no cover - ray[data] is a dependency; keeps the in-process path importable
        _DatasinkBase = object

#: The stores this package writes to (through their adapters).
SCHEMES = ("qdrant", "chroma")
#: ``write_datasink(sink, ray_remote_args=WRITE_TASK_ARGS)``: a write task only hands its blocks to the writer
#: actor, so it reserves no CPU; with the default (one CPU each) writes wait behind decode tasks for a free CPU.
WRITE_TASK_ARGS = {"num_cpus": 0}
#: How many error messages a result keeps (the count is always exact).
KEEP_ERRORS = 100


class Target(StoreTarget):
    """A parsed target ``scheme:location#collection`` (the core's syntax) naming a store this package writes."""

    supported = SCHEMES


@dataclass
class WriteResult:
    """Rows written and rows refused (their ``error`` messages, the first :data:`KEEP_ERRORS` of them)."""

    written: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: "WriteResult") -> "WriteResult":
        self.written += other.written
        self.failed += other.failed
        self.errors.extend(other.errors[: max(0, KEEP_ERRORS - len(self.errors))])
        return self


@dataclass(frozen=True)
class RowColumns:
    """The columns a writer reads: the vector, the id, the error; every other column is payload / metadata.

    ``image`` / ``text``: the columns the rows were embedded from, if the store has a place of its own for them
    (Chroma: the image's path or URL as the URI, the text as the document); a row is an image row when it has an
    image, as in :func:`~bge_siglip_ray.embed_dataset`.
    """

    vector: str = "embedding"
    id: str = "id"
    error: str = "error"
    image: str | None = None
    text: str | None = None
    #: Never stored: raw image bytes (if a caller kept them) and Ray's internals.
    skip: tuple[str, ...] = ("bytes",)


class Writer(Protocol):
    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]],
               documents: list[str | None], uris: list[str | None]) -> None: ...
    def count(self) -> int: ...
    def close(self) -> None: ...


def _require(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise OptionalDependencyError(
            f"this target needs {module} ({exc}): pip install 'bge-siglip-ray[{extra}]'"
        ) from None


def _retry_locked(open_store, wait_s: float):
    """Open an embedded store, waiting while another process (e.g. the writer of a run that was just killed and is
    still being reaped) holds its lock."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return open_store()
        except RuntimeError as exc:
            if "already accessed" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class QdrantWriter:
    """Through ``BGESigLIPQdrant``: the collection is created with the adapter's vector params (model dim, cosine)
    and points are upserted with the adapter's ``upsert``. Payloads record ``modality`` and ``source`` / ``text``
    as ``add_images`` / ``add_texts`` do, when the rows have those columns."""

    def __init__(self, target: Target, model: str, options: dict[str, Any], lock_wait_s: float = 60.0) -> None:
        _require("bge_siglip_qdrant", "qdrant")
        from bge_siglip_qdrant import BGESigLIPQdrant
        from qdrant_client import QdrantClient

        location = target.location
        client = (QdrantClient(url=location) if target.is_url else
                  _retry_locked(lambda: QdrantClient(path=location), lock_wait_s))
        self.db = BGESigLIPQdrant(client, model=model, **options)
        self.collection = target.collection
        if not client.collection_exists(self.collection):
            self.db.create_collection(self.collection)

    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]],
               documents: list[str | None], uris: list[str | None]) -> None:
        from qdrant_client import models

        points = [models.PointStruct(id=i, vector=v.tolist(), payload=p) for i, v, p in zip(ids, vectors, payloads)]
        self.db.upsert(self.collection, points=points, wait=True)

    def count(self) -> int:
        return int(self.db.client.count(self.collection, exact=True).count)

    def close(self) -> None:
        self.db.client.close()


class ChromaWriter:
    """Through ``BGESigLIPEmbeddingFunction``: the collection is created (or opened) with our function and data
    loader, so later queries embed with the same model, and rows are upserted with their precomputed embeddings.
    A text row's text becomes the document and an image row's path or URL its URI, as a Chroma user would write
    them; the columns are metadata too (Chroma keeps str, int, float and bool values)."""

    def __init__(self, target: Target, model: str, options: dict[str, Any]) -> None:
        _require("bge_siglip_chroma", "chroma")
        import chromadb
        from bge_siglip_chroma import BGESigLIPEmbeddingFunction, ImageURILoader

        if target.is_url:
            from urllib.parse import urlparse

            url = urlparse(target.location)
            client = chromadb.HttpClient(host=url.hostname, port=url.port or 8000, ssl=url.scheme == "https")
        else:
            client = chromadb.PersistentClient(path=target.location)
        known = {k: options[k] for k in ("device", "max_num_patches") if options.get(k) is not None}
        function = BGESigLIPEmbeddingFunction(model=model, **known)
        self.collection = client.get_or_create_collection(
            target.collection, embedding_function=function, data_loader=ImageURILoader()
        )

    def upsert(self, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]],
               documents: list[str | None], uris: list[str | None]) -> None:
        metadatas = [{k: v for k, v in p.items() if isinstance(v, (str, int, float, bool))} or None for p in payloads]
        self.collection.upsert(ids=ids, embeddings=vectors, metadatas=metadatas,
                               documents=documents if any(documents) else None, uris=uris if any(uris) else None)

    def count(self) -> int:
        return int(self.collection.count())

    def close(self) -> None:
        pass  # Chroma's clients have no close(); the process's exit releases the folder


def open_writer(target: Target | str, model: str, options: dict[str, Any] | None = None) -> Writer:
    """The adapter-backed writer for ``target`` (``options``: VectorizerOptions for the adapter's model)."""
    target = Target.parse(target) if isinstance(target, str) else target
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if target.scheme == "qdrant":
        return QdrantWriter(target, model, options)
    return ChromaWriter(target, model, options)


def write_table(writer: Writer, table: pa.Table, columns: RowColumns = RowColumns()) -> WriteResult:
    """Write one batch of embedded rows (rows with an error are counted, not written) in one upsert."""
    result = WriteResult()
    names = table.column_names
    for needed in (columns.vector, columns.id):
        if needed not in names:
            raise ValueError(f"rows to write need a {needed!r} column (embed_dataset(..., id_column='id')); "
                             f"got {names}")
    errors = table.column(columns.error).to_pylist() if columns.error in names else [None] * table.num_rows
    payload_names = [n for n in names if n not in (columns.vector, columns.id, columns.error, *columns.skip)]
    payload_rows = table.select(payload_names).to_pylist()
    vectors = table.column(columns.vector)
    ids = table.column(columns.id).to_pylist()
    keep = [i for i, error in enumerate(errors) if error is None]
    for error in errors:
        if error is not None:
            result.failed += 1
            if len(result.errors) < KEEP_ERRORS:
                result.errors.append(error)
    if keep:
        kept = vectors.take(pa.array(keep, type=pa.int64()))
        flat = kept.combine_chunks() if isinstance(kept, pa.ChunkedArray) else kept
        matrix = np.asarray(flat.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(keep), -1)
        payloads = [{k: v for k, v in payload_rows[i].items() if v is not None and not isinstance(v, bytes)}
                    for i in keep]
        images = table.column(columns.image).to_pylist() if columns.image in names else [None] * table.num_rows
        texts = table.column(columns.text).to_pylist() if columns.text in names else [None] * table.num_rows
        documents = [texts[i] if images[i] is None else None for i in keep]
        uris = [images[i] if isinstance(images[i], str) else None for i in keep]
        writer.upsert([ids[i] for i in keep], matrix, payloads, documents, uris)
        result.written = len(keep)
    return result


# --------------------------------------------------------------------------------------------------------- Ray
class _WriterActor:
    """Holds one writer for a whole Ray job (created by :class:`StoreDatasink` on the driver's node)."""

    def __init__(self, target: str, model: str, options: dict[str, Any], columns: RowColumns) -> None:
        self.writer = open_writer(target, model, options)
        self.columns = columns
        self.total = WriteResult()

    def ready(self) -> bool:
        return True

    def write(self, table: pa.Table) -> WriteResult:
        result = write_table(self.writer, table, self.columns)
        self.total.add(result)  # add() copies the messages it keeps
        return result

    def progress(self) -> tuple[int, int]:
        return self.total.written, self.total.failed

    def count(self) -> int:
        return self.writer.count()

    def close(self) -> None:
        self.writer.close()


class StoreDatasink(_DatasinkBase):
    """A Ray ``Datasink`` writing embedded rows (from :func:`~bge_siglip_ray.embed_dataset` with
    ``id_column="id"``) into a store through its adapter: ``ds.write_datasink(StoreDatasink("qdrant:./db#photos",
    model), ray_remote_args=WRITE_TASK_ARGS)``. After the write, :attr:`result` holds the rows written and the
    errors of the rows left out.

    ``options`` are the VectorizerOptions the adapter loads the model with (it checks the model and creates the
    collection with the model's dimension; the vectors themselves come from the rows).
    """

    def __init__(self, target: str | Target, model: str | os.PathLike, *, columns: RowColumns = RowColumns(),
                 **options: Any) -> None:
        from .embed import _model_reference

        self.target = str(Target.parse(target) if isinstance(target, str) else target)
        self.model = _model_reference(model)
        self.options = options
        self.columns = columns
        self.result = WriteResult()
        # Named, so write tasks find it whether they were shipped before or after on_write_start ran.
        self._actor_name = f"bge-siglip-writer-{uuid.uuid4().hex}"
        self._handle = None

    def on_write_start(self, schema: Any = None) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        # num_cpus=0: the writer waits on the store, and must not take the CPU a decode task or the model needs.
        actor = ray.remote(num_cpus=0, scheduling_strategy=here, max_concurrency=1)(_WriterActor).options(
            name=self._actor_name).remote(self.target, self.model, self.options, self.columns)
        ray.get(actor.ready.remote())
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
                result.add(ray.get(actor.write.remote(table)))
        return result

    def progress(self) -> tuple[int, int]:
        """(rows written, rows refused) so far: for a progress bar polled while the job runs."""
        import ray

        try:
            return ray.get(self._actor().progress.remote())
        except ValueError:  # not started yet, or already finished
            return self.result.written, self.result.failed

    def _close(self) -> None:
        import ray

        try:
            actor = self._actor()
        except ValueError:
            return
        try:
            ray.get(actor.close.remote())
        finally:
            ray.kill(actor)
            self._handle = None

    def on_write_complete(self, write_result: Any) -> None:
        for returned in getattr(write_result, "write_returns", write_result) or []:
            self.result.add(returned)
        self._close()

    def on_write_failed(self, error: Exception) -> None:
        self._close()

    def get_name(self) -> str:
        return f"BGESigLIP({self.target.split(':', 1)[0]})"


class QdrantDatasink(StoreDatasink):
    """:class:`StoreDatasink` for Qdrant: ``path`` (local mode) or ``url`` (a server)."""

    def __init__(self, collection: str, model: str | os.PathLike, *, path: str | os.PathLike | None = None,
                 url: str | None = None, **kwargs: Any) -> None:
        if (path is None) == (url is None):
            raise ValueError("give exactly one of path (local mode) and url (a Qdrant server)")
        super().__init__(Target("qdrant", url or os.fspath(path), collection), model, **kwargs)


class ChromaDatasink(StoreDatasink):
    """:class:`StoreDatasink` for Chroma: ``path`` (PersistentClient) or ``url`` (a ``chroma run`` server)."""

    def __init__(self, collection: str, model: str | os.PathLike, *, path: str | os.PathLike | None = None,
                 url: str | None = None, **kwargs: Any) -> None:
        if (path is None) == (url is None):
            raise ValueError("give exactly one of path (PersistentClient folder) and url (a Chroma server)")
        super().__init__(Target("chroma", url or os.fspath(path), collection), model, **kwargs)
