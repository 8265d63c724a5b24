"""The page's view of a vector store: search by a query vector, one item's vector, one item's file.

Every store is opened through its adapter (Qdrant: ``BGESigLIPQdrant``; Chroma: the collection's registered
``BGESigLIPEmbeddingFunction``, which rebuilds and checks the model the collection was embedded with) and is then
asked only for what the page shows. Query vectors come from the core (``Vectorizer.encode_query``); a store never
embeds anything here, so the model guard is the one thing each store class checks on opening.

Adding a database is one :class:`Store` subclass (``count``, ``search``, ``vector``, ``record``) and one line in
:data:`OPENERS`; the target syntax (:class:`bge_siglip_vectorizer.StoreTarget`) already knows every scheme.

Every call holds the store's lock: Qdrant's local mode keeps its points in plain in-process arrays, and the page
searches while a folder is still being indexed.
"""

from __future__ import annotations

import abc
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal
from urllib.parse import unquote, urlparse

import numpy as np

from bge_siglip_vectorizer import BGESigLIPError, StoreTarget, Vectorizer

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

__all__ = ["Hit", "Record", "Store", "StoreError", "UITarget", "QdrantStore", "ChromaStore", "open_store", "OPENERS"]

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

    Qdrant collections record no model, so the guard is the vector size; a collection with named vectors is searched
    through its only vector (several: :class:`StoreError`, naming them).
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
    the one of ``--model``. Images are the items with a URI (or a ``source`` metadata field), texts those with a
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
            raise StoreError(f"{target} was embedded with the model at {function.model!r} (fingerprint "
                             f"{function.fingerprint[:12]}), not with --model (fingerprint "
                             f"{vectorizer.fingerprint[:12]}); start the page with that model")
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


#: scheme -> how to open a collection of that store.
OPENERS: dict[str, Callable[[StoreTarget, Vectorizer], Store]] = {
    "qdrant": QdrantStore.open,
    "chroma": ChromaStore.open,
}


class UITarget(StoreTarget):
    """A ``--store`` target: the stores the page can open."""

    supported = tuple(OPENERS)


def open_store(target: str | StoreTarget, vectorizer: Vectorizer) -> Store:
    """Open ``target`` (``qdrant:PATH#collection``, ``chroma:http://HOST:8000#collection``, ...) for searching."""
    parsed = UITarget.parse(target) if isinstance(target, str) else target
    return OPENERS[parsed.scheme](parsed, vectorizer)
