"""The page's view of a vector store: search by a query vector, one item's vector, one item's file.

Every store is opened through its adapter (Qdrant: ``BGESigLIPQdrant``; Chroma: the collection's registered
``BGESigLIPEmbeddingFunction``, which rebuilds and checks the model the collection was embedded with) and is then
asked only for what the page shows. Query vectors come from the core (``Vectorizer.encode_query``); a store never
embeds anything here, so the model guard is the one thing each store class checks on opening.

Stores: Qdrant, Chroma, Milvus and LanceDB (their adapters must be installed; Milvus and LanceDB are the extras
``bge-siglip-ui[milvus]`` / ``[lancedb]``). Adding a database is one :class:`Store` subclass (``count``,
``search``, ``vector``, ``record``) and one line in :data:`OPENERS`; the target syntax
(:class:`bge_siglip_vectorizer.StoreTarget`) already knows every scheme.

Every call holds the store's lock: Qdrant's local mode keeps its points in plain in-process arrays, and the page
searches while a folder is still being indexed.
"""

from __future__ import annotations

import abc
import importlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal
from urllib.parse import unquote, urlparse

import numpy as np

from bge_siglip_vectorizer import (
    BGESigLIPError,
    ModelMismatchError,
    OptionalDependencyError,
    StoreTarget,
    Vectorizer,
)

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

__all__ = ["Hit", "Record", "Store", "StoreError", "UITarget", "QdrantStore", "ChromaStore", "MilvusStore", "LanceDBStore",
           "open_store", "OPENERS"]

Kind = Literal["image", "text"]
#: How deep a result list goes (offset + limit): Chroma's HNSW search returns the top n, not a page of them.
MAX_DEPTH = 1000


class StoreError(BGESigLIPError):
    """A store or collection cannot be opened or used as the page needs (missing, another model, ...)."""


@dataclass(frozen=True)
class Record:
    """What the page knows of one stored item: an image (``source``: its file or URL, if the store recorded one) or
    a text (``text``)."""

    id: str
    kind: Kind
    source: str | None = None
    text: str | None = None

    @property
    def name(self) -> str:
        if self.kind == "text":
            return (self.text or "")[:80]
        if self.source is None:
            return self.id
        return os.path.basename(urlparse(self.source).path if "://" in self.source[:16] else self.source) or self.id

    @property
    def local_file(self) -> Path | None:
        """The image's file on this machine, if its source is one (never a URL: the page fetches nothing)."""
        if self.kind != "image" or not self.source:
            return None
        source = self.source
        if source.startswith("file://"):
            source = unquote(urlparse(source).path)
        elif "://" in source[:16] or source.startswith("data:"):
            return None
        path = Path(source)
        return path if path.is_file() else None


@dataclass(frozen=True)
class Hit:
    record: Record
    score: float


class Store(abc.ABC):
    """One collection, as the page uses it. ``target`` names it for people (the page and the terminal)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.lock = threading.RLock()

    @abc.abstractmethod
    def count(self) -> int: ...

    @abc.abstractmethod
    def search(self, vector: np.ndarray, offset: int, limit: int) -> list[Hit]:
        """Hits ``offset`` .. ``offset + limit`` by cosine similarity (``offset + limit <= MAX_DEPTH``)."""

    @abc.abstractmethod
    def vector(self, item_id: str) -> np.ndarray | None:
        """The stored vector of ``item_id`` (``None``: no such item)."""

    @abc.abstractmethod
    def record(self, item_id: str) -> Record | None:
        """What the store holds about ``item_id`` (``None``: no such item)."""

    def close(self) -> None:  # noqa: B027 - optional
        pass


def _check_dim(target: str, dim: int, vectorizer: Vectorizer) -> None:
    if dim != vectorizer.dim:
        raise StoreError(f"{target} holds {dim}-d vectors, but the model gives {vectorizer.dim}-d ones: it was "
                         "embedded with another model; start the page with that model")


# ------------------------------------------------------------------------------------------------------ Qdrant
class QdrantStore(Store):
    """A Qdrant collection (local mode folder or server). Payloads as the adapter's ``add_images`` / ``add_texts``
    and ``bge-siglip ingest`` write them: ``modality`` and ``source`` (relative paths are relative to the working
    directory the page was started in) or ``text``.

    Collections made by the adapter's ``create_collection`` record their model: another model's is the adapter's
    :class:`~bge_siglip_vectorizer.ModelMismatchError`. Collections made otherwise record none, and only their
    vector size is checked. A collection with named vectors is searched through its only vector (several:
    :class:`StoreError`, naming them).
    """

    def __init__(self, client: "QdrantClient", collection: str, vectorizer: Vectorizer, target: str) -> None:
        from bge_siglip_qdrant import BGESigLIPQdrant

        super().__init__(target)
        self.db = BGESigLIPQdrant(client, vectorizer=vectorizer)
        self.collection = collection
        if not client.collection_exists(collection):
            names = ", ".join(sorted(c.name for c in client.get_collections().collections)) or "none"
            raise StoreError(f"{target}: no collection {collection!r} (collections there: {names})")
        vectors = client.get_collection(collection).config.params.vectors
        self.using: str | None = None
        if isinstance(vectors, dict):
            if len(vectors) != 1:
                raise StoreError(f"{target} has several named vectors ({', '.join(sorted(vectors))}); the page "
                                 "searches collections with one vector")
            self.using, vectors = next(iter(vectors.items()))
        _check_dim(target, int(vectors.size), vectorizer)
        self.db.check_model(collection)

    @classmethod
    def open(cls, target: StoreTarget, vectorizer: Vectorizer) -> "QdrantStore":
        from qdrant_client import QdrantClient

        if target.is_url:
            client = QdrantClient(url=target.location)
        else:
            if not Path(target.location).is_dir():
                raise StoreError(f"{target}: no Qdrant local-mode folder at {target.location}")
            client = local_qdrant(target)
        try:
            return cls(client, target.collection, vectorizer, str(target))
        except BaseException:
            client.close()
            raise

    @staticmethod
    def point_id(item_id: str) -> str | int:
        # Qdrant ids are UUIDs or unsigned integers; the page passes them around as text.
        return int(item_id) if item_id.isdigit() else item_id

    def count(self) -> int:
        with self.lock:
            return int(self.db.client.count(self.collection, exact=True).count)

    def search(self, vector: np.ndarray, offset: int, limit: int) -> list[Hit]:
        with self.lock:
            points = self.db.query_points(self.collection, query=vector.tolist(), using=self.using, offset=offset,
                                          limit=limit, with_payload=True).points
        return [Hit(self._record(point.id, point.payload), float(point.score)) for point in points]

    def _points(self, item_id: str, vectors: bool) -> list[Any]:
        try:
            point_id = self.point_id(item_id)
            with self.lock:
                return self.db.client.retrieve(self.collection, ids=[point_id], with_payload=True, with_vectors=vectors)
        except ValueError:  # not a valid point id at all (qdrant-client checks UUIDs): no such item
            return []

    def vector(self, item_id: str) -> np.ndarray | None:
        points = self._points(item_id, True)
        if not points:
            return None
        vector = points[0].vector
        if isinstance(vector, dict):
            vector = vector.get(self.using or "")
        return None if vector is None else np.asarray(vector, dtype=np.float32)

    def record(self, item_id: str) -> Record | None:
        points = self._points(item_id, False)
        return self._record(points[0].id, points[0].payload) if points else None

    def _record(self, point_id: Any, payload: dict[str, Any] | None) -> Record:
        payload = payload or {}
        if payload.get("modality") == "text" or ("text" in payload and "source" not in payload):
            return Record(str(point_id), "text", text=str(payload.get("text", "")))
        source = payload.get("source")
        return Record(str(point_id), "image", source=None if source is None else str(source))

    # -- writing: only the page's own folder index writes (gallery.py), through the adapter's upsert
    def upsert(self, points: list[Any]) -> None:
        with self.lock:
            self.db.upsert(self.collection, points=points, wait=True)

    def delete(self, item_ids: list[str]) -> None:
        from qdrant_client import models

        if item_ids:
            with self.lock:
                self.db.client.delete(self.collection, points_selector=models.PointIdsList(
                    points=[self.point_id(i) for i in item_ids]), wait=True)

    def ids(self) -> set[str]:
        """Every point id (the folder index compares them with the files on disk)."""
        found: set[str] = set()
        offset = None
        with self.lock:
            while True:
                points, offset = self.db.client.scroll(self.collection, limit=1000, offset=offset,
                                                       with_payload=False, with_vectors=False)
                found.update(str(point.id) for point in points)
                if offset is None:
                    return found

    def close(self) -> None:
        with self.lock:
            self.db.client.close()


def local_qdrant(target: StoreTarget) -> "QdrantClient":
    """A local-mode client of ``target.location`` (a folder), or :class:`StoreError` if another process has it."""
    from qdrant_client import QdrantClient

    try:
        return QdrantClient(path=target.location)
    except RuntimeError as exc:
        if "already accessed" in str(exc):
            raise StoreError(f"{target}: the folder is open in another process (Qdrant's local mode allows one at a "
                             "time); close it there, or serve the collection from a Qdrant server") from None
        raise


# ------------------------------------------------------------------------------------------------------ Chroma
class ChromaStore(Store):
    """A Chroma collection (PersistentClient folder or ``chroma run`` server) made with ``BGESigLIPEmbeddingFunction``.

    Opening it lets Chroma rebuild the collection's function from its stored config (bge-siglip-chroma checks that
    the recorded model is still the one it was embedded with); the page then requires that model's fingerprint to be
    the one of ``--model`` (else :class:`~bge_siglip_vectorizer.ModelMismatchError`). Images are the items with a URI (or a ``source`` metadata field), texts those with a
    document.
    """

    def __init__(self, collection: Any, vectorizer: Vectorizer, target: str) -> None:
        from bge_siglip_chroma import BGESigLIPEmbeddingFunction

        super().__init__(target)
        self.collection = collection
        configuration = collection.configuration or {}
        function = configuration.get("embedding_function")
        if not isinstance(function, BGESigLIPEmbeddingFunction):
            name = getattr(function, "name", lambda: type(function).__name__)()
            raise StoreError(f"{target} was not embedded by bge-siglip (its embedding function is {name!r})")
        if function.fingerprint != vectorizer.fingerprint:
            raise ModelMismatchError(target, function.fingerprint, vectorizer.fingerprint,
                                     hint=f"it was embedded with the model at {function.model!r}")
        self.space = (configuration.get("hnsw") or {}).get("space") or "cosine"

    @classmethod
    def open(cls, target: StoreTarget, vectorizer: Vectorizer) -> "ChromaStore":
        import bge_siglip_chroma  # noqa: F401 - registers our function, so Chroma can rebuild it from the config
        import chromadb
        from chromadb.errors import NotFoundError

        if target.is_url:
            url = urlparse(target.location)
            client = chromadb.HttpClient(host=url.hostname, port=url.port or 8000, ssl=url.scheme == "https")
        else:
            if not Path(target.location).is_dir():
                raise StoreError(f"{target}: no Chroma folder at {target.location}")
            client = chromadb.PersistentClient(path=target.location)
        try:
            collection = client.get_collection(target.collection)
        except NotFoundError:
            names = ", ".join(sorted(c.name for c in client.list_collections())) or "none"
            raise StoreError(f"{target}: no collection {target.collection!r} (collections there: {names})") from None
        except ValueError as exc:  # the adapter refused to rebuild the function (e.g. its model changed)
            raise StoreError(f"{target}: {exc}") from None
        return cls(collection, vectorizer, str(target))

    def count(self) -> int:
        with self.lock:
            return int(self.collection.count())

    def _score(self, distance: float) -> float:
        # Our vectors are unit length: cosine and ip distances are 1 - cos, l2 is the squared distance 2 - 2 cos.
        return 1.0 - distance / 2.0 if self.space == "l2" else 1.0 - distance

    def search(self, vector: np.ndarray, offset: int, limit: int) -> list[Hit]:
        with self.lock:
            total = self.collection.count()
            if offset >= total:
                return []
            result = self.collection.query(query_embeddings=[vector], n_results=min(offset + limit, total),
                                           include=["distances", "uris", "metadatas", "documents"])
        rows = zip(result["ids"][0], result["distances"][0], result["uris"][0], result["metadatas"][0],
                   result["documents"][0])
        hits = [Hit(self._record(i, uri, metadata, document), self._score(d)) for i, d, uri, metadata, document in rows]
        return hits[offset:]

    def _get(self, item_id: str, include: list[str]) -> dict[str, Any] | None:
        with self.lock:
            result = self.collection.get(ids=[item_id], include=include)
        return result if result["ids"] else None

    def vector(self, item_id: str) -> np.ndarray | None:
        result = self._get(item_id, ["embeddings"])
        return None if result is None else np.asarray(result["embeddings"][0], dtype=np.float32)

    def record(self, item_id: str) -> Record | None:
        result = self._get(item_id, ["uris", "metadatas", "documents"])
        if result is None:
            return None
        return self._record(item_id, result["uris"][0], result["metadatas"][0], result["documents"][0])

    @staticmethod
    def _record(item_id: str, uri: str | None, metadata: dict[str, Any] | None, document: str | None) -> Record:
        source = uri or (metadata or {}).get("source")
        if source is None and document is not None:
            return Record(item_id, "text", text=document)
        return Record(item_id, "image", source=None if source is None else str(source))


# ------------------------------------------------------------------------------------------------------ Milvus
class MilvusStore(Store):
    """A Milvus collection (a milvus-lite file or a server) made by ``BGESigLIPMilvus``: the adapter checks the model
    fingerprint the collection records (``check_collection``: a :class:`~bge_siglip_vectorizer.ModelMismatchError`
    for another model). Rows hold ``modality``, ``source`` (images) and ``text`` (texts)."""

    OUTPUT = ["modality", "source", "text"]

    def __init__(self, client: Any, collection: str, vectorizer: Vectorizer, target: str) -> None:
        from bge_siglip_milvus import VECTOR_FIELD, BGESigLIPEmbeddingFunction, BGESigLIPMilvus

        super().__init__(target)
        self.db = BGESigLIPMilvus(client, BGESigLIPEmbeddingFunction(vectorizer=vectorizer))
        self.collection = collection
        self.field = VECTOR_FIELD
        if not client.has_collection(collection):
            names = ", ".join(sorted(client.list_collections())) or "none"
            raise StoreError(f"{target}: no collection {collection!r} (collections there: {names})")
        self.db.check_collection(collection)
        client.load_collection(collection)  # a collection opened by a new client starts released

    @classmethod
    def open(cls, target: StoreTarget, vectorizer: Vectorizer) -> "MilvusStore":
        pymilvus = _adapter("pymilvus", "bge_siglip_milvus", "milvus", target)
        if not target.is_url and not Path(target.location).exists():  # milvus-lite makes a folder named x.db
            raise StoreError(f"{target}: no Milvus Lite database at {target.location}")
        client = pymilvus.MilvusClient(target.location)
        try:
            return cls(client, target.collection, vectorizer, str(target))
        except BaseException:
            client.close()
            raise

    def count(self) -> int:
        with self.lock:
            rows = self.db.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def search(self, vector: np.ndarray, offset: int, limit: int) -> list[Hit]:
        with self.lock:
            hits = self.db.client.search(self.collection, data=[vector.tolist()], anns_field=self.field, limit=limit,
                                         offset=offset, output_fields=self.OUTPUT,
                                         search_params={"metric_type": "COSINE"})[0]
        return [Hit(self._record(hit["id"], hit["entity"]), float(hit["distance"])) for hit in hits]

    def _row(self, item_id: str, fields: list[str]) -> dict[str, Any] | None:
        if any(ord(c) < 32 for c in item_id):
            return None  # no id of ours has control characters, and Milvus' expressions cannot quote them
        with self.lock:
            rows = self.db.client.query(self.collection, filter=f"id == {_milvus_string(item_id)}",
                                        output_fields=fields)
        return rows[0] if rows else None

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self._row(item_id, [self.field])
        return None if row is None else np.asarray(row[self.field], dtype=np.float32)

    def record(self, item_id: str) -> Record | None:
        row = self._row(item_id, self.OUTPUT)
        return None if row is None else self._record(item_id, row)

    @staticmethod
    def _record(item_id: Any, row: dict[str, Any]) -> Record:
        if row.get("modality") == "text":
            return Record(str(item_id), "text", text=row.get("text") or "")
        return Record(str(item_id), "image", source=row.get("source"))

    def close(self) -> None:
        with self.lock:
            self.db.client.close()


def _milvus_string(text: str) -> str:
    """A Milvus expression string literal: the id is data, never part of the expression."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ------------------------------------------------------------------------------------------------------ LanceDB
class LanceDBStore(Store):
    """A LanceDB table made by ``bge_siglip_lancedb.create_table`` (columns ``id``, ``modality``, ``source``,
    ``text``, ``vector``), searched by cosine distance. Its metadata records the fingerprint of the function that
    embeds it; a table of another model is a :class:`~bge_siglip_vectorizer.ModelMismatchError`."""

    COLUMNS = ["id", "modality", "source", "text"]

    def __init__(self, table: Any, vectorizer: Vectorizer, target: str) -> None:
        from bge_siglip_lancedb import stored_fingerprints

        super().__init__(target)
        self.table = table
        stored = stored_fingerprints(table)
        if not stored:
            raise StoreError(f"{target} was not embedded by bge-siglip (no bge-siglip function in its metadata)")
        if vectorizer.fingerprint not in stored:
            raise ModelMismatchError(target, ", ".join(sorted(stored)), vectorizer.fingerprint)

    @classmethod
    def open(cls, target: StoreTarget, vectorizer: Vectorizer) -> "LanceDBStore":
        lancedb = _adapter("lancedb", "bge_siglip_lancedb", "lancedb", target)
        if not target.is_url and not Path(target.location).is_dir():
            raise StoreError(f"{target}: no LanceDB folder at {target.location}")
        db = lancedb.connect(target.location)
        names = list(db.list_tables().tables)
        if target.collection not in names:
            raise StoreError(f"{target}: no table {target.collection!r} (tables there: "
                             f"{', '.join(sorted(names)) or 'none'})")
        return cls(db.open_table(target.collection), vectorizer, str(target))

    def count(self) -> int:
        with self.lock:
            return int(self.table.count_rows())

    def search(self, vector: np.ndarray, offset: int, limit: int) -> list[Hit]:
        with self.lock:
            rows = (self.table.search(vector.tolist(), vector_column_name="vector").distance_type("cosine")
                    .offset(offset).limit(limit).select(self.COLUMNS).to_list())
        return [Hit(self._record(row), 1.0 - float(row["_distance"])) for row in rows]

    def _row(self, item_id: str, columns: list[str]) -> dict[str, Any] | None:
        quoted = "'" + item_id.replace("'", "''") + "'"  # an SQL string literal: the id is data
        with self.lock:
            rows = self.table.search().where(f"id = {quoted}").select(columns).limit(1).to_list()
        return rows[0] if rows else None

    def vector(self, item_id: str) -> np.ndarray | None:
        row = self._row(item_id, ["vector"])
        return None if row is None else np.asarray(row["vector"], dtype=np.float32)

    def record(self, item_id: str) -> Record | None:
        row = self._row(item_id, self.COLUMNS)
        return None if row is None else self._record(row)

    @staticmethod
    def _record(row: dict[str, Any]) -> Record:
        if row.get("modality") == "text":
            return Record(str(row["id"]), "text", text=row.get("text") or "")
        return Record(str(row["id"]), "image", source=row.get("source"))


def _adapter(client: str, adapter: str, extra: str, target: StoreTarget) -> Any:
    """The database client module, once its adapter imports (both come with ``bge-siglip-ui[extra]``)."""
    try:
        importlib.import_module(adapter)
        return importlib.import_module(client)
    except ImportError as exc:
        raise OptionalDependencyError(f"{target.scheme} targets need {adapter} ({exc}): pip install "
                                      f"'bge-siglip-ui[{extra}]'") from None


#: scheme -> how to open a collection of that store.
OPENERS: dict[str, Callable[[StoreTarget, Vectorizer], Store]] = {
    "qdrant": QdrantStore.open,
    "chroma": ChromaStore.open,
    "milvus": MilvusStore.open,
    "lancedb": LanceDBStore.open,
}


class UITarget(StoreTarget):
    """A ``--store`` target: the stores the page can open."""

    supported = tuple(OPENERS)


def open_store(target: str | StoreTarget, vectorizer: Vectorizer) -> Store:
    """Open ``target`` (``qdrant:PATH#collection``, ``chroma:http://HOST:8000#collection``, ...) for searching."""
    parsed = UITarget.parse(target) if isinstance(target, str) else target
    return OPENERS[parsed.scheme](parsed, vectorizer)
