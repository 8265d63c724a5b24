"""``BGESigLIPQdrant`` / ``AsyncBGESigLIPQdrant``: a real ``QdrantClient`` / ``AsyncQdrantClient`` that embeds
BGE-SigLIP ``models.Image`` / ``models.Document`` objects itself.

qdrant-client resolves inference objects only for FastEmbed models (and has no custom image models). These
subclasses find the objects that name *our* model in the arguments of every method that takes inference objects
(the eight methods where qdrant-client inspects for them), encode them with the core ``Vectorizer`` (one batched
call per API call, before anything is sent), and pass copies holding plain vectors on to qdrant-client's own
method. Objects for other models are left for qdrant-client; everything else is qdrant-client's. Being real
clients, they can be handed to frameworks that type-check (LangChain's ``QdrantVectorStore`` / ``Qdrant``, ...).

Each collection made with :meth:`create_collection` records the model's fingerprint in the collection metadata
(qdrant-client >= 1.20, key ``"bge_siglip"``); writes and queries with our objects, and bulk ingest, are refused
with :class:`~bge_siglip_vectorizer.ModelMismatchError` when that collection was made with another model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np
from qdrant_client import AsyncQdrantClient, QdrantClient, models
from tqdm.auto import tqdm

from bge_siglip_vectorizer import (
    MODEL_NAME,
    InvalidInputError,
    ModelMismatchError,
    Vectorizer,
    VectorizerOptions,
    list_image_files,
    model_reference,
    shared_vectorizer,
)

from ._resolve import Resolution
from .ingest import Modality, content_id, provenance

__all__ = ["AsyncBGESigLIPQdrant", "BGESigLIPQdrant", "DEFAULT_MODEL_NAME", "IngestResult", "METADATA_KEY"]

DEFAULT_MODEL_NAME = MODEL_NAME
#: The collection-metadata key holding ``{"fingerprint", "model", "dim"}`` of the model a collection was made with.
METADATA_KEY = "bge_siglip"
# The core's options are this client's keyword options too (derived: a field the core adds is accepted here).
_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(VectorizerOptions))

OnError = Literal["raise", "skip"]


@dataclass
class IngestResult:
    """What ``add_images`` / ``add_texts`` wrote.

    ``ids`` is aligned with the input list (``None`` where an item was skipped); ``skipped`` holds the typed error of
    each skipped item (``error.index`` is its position in the input list).
    """

    ids: list[str | int | None] = field(default_factory=list)
    skipped: list[InvalidInputError] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(point_id is not None for point_id in self.ids)


class _BGESigLIP:
    """What the sync and async clients share: the model, finding our objects, the model record, ingest planning.
    No I/O here; each client does its own calls (awaited or not)."""

    _adopted: Any = None

    def _setup(self, client: Any, base: type, model: str | os.PathLike | None, vectorizer: Vectorizer | None,
               model_name: str, batch_size: int, show_progress: bool | None, kwargs: dict[str, Any]) -> dict:
        """Set our state; returns the keyword arguments left for qdrant-client's constructor."""
        if (model is None) == (vectorizer is None):
            raise ValueError("pass exactly one of `model` (a path or hub id) and `vectorizer`")
        options = {name: kwargs.pop(name) for name in list(kwargs) if name in _OPTION_NAMES}
        if vectorizer is None:
            vectorizer = shared_vectorizer(model, **options)  # one model per process, however many clients
        elif options:
            raise ValueError(f"options {sorted(options)} apply to `model`, not to an already loaded `vectorizer`")
        self.vectorizer: Vectorizer = vectorizer
        self.model_name = model_name
        self.model_names: frozenset[str] = frozenset({model_name} if model is None else {model_name, os.fspath(model)})
        self.model_ref = model_reference(model) if model is not None else vectorizer.components.source
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._verified: set[str] = set()
        if isinstance(client, base):
            # Share the given client's connection (local mode locks its folder to one client): this object is
            # that client, plus our methods. The original stays referenced, so it is not closed under us.
            self.__dict__.update({k: v for k, v in vars(client).items() if k not in self.__dict__})
            self._adopted = client
            return {}
        if isinstance(client, (QdrantClient, AsyncQdrantClient)):
            raise TypeError(f"{type(client).__name__} given to {type(self).__name__}: wrap a QdrantClient with "
                            "BGESigLIPQdrant and an AsyncQdrantClient with AsyncBGESigLIPQdrant")
        return {"location": client, **kwargs}

    @property
    def client(self) -> Any:
        """The client whose connection this one shares (the one passed in), or this client itself."""
        return self._adopted if self._adopted is not None else self

    @property
    def dim(self) -> int:
        return self.vectorizer.dim

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model_names={sorted(self.model_names)!r}, dim={self.dim})"

    def __del__(self) -> None:
        if self._adopted is None:  # an adopted connection is closed by its own client
            super().__del__()  # type: ignore[misc]

    def vector_params(self, **options: Any) -> models.VectorParams:
        """``VectorParams`` for our vectors: size = model dim, cosine distance; ``options`` (``on_disk``, ...) added."""
        return models.VectorParams(size=self.dim, distance=models.Distance.COSINE, **options)

    def model_record(self) -> dict[str, Any]:
        """What :meth:`create_collection` records under ``metadata["bge_siglip"]``."""
        return {"fingerprint": self.vectorizer.fingerprint, "model": self.model_ref, "dim": self.dim}

    def get_embedding_size(self, model_name: str | None = None) -> int:
        """Our model's vector size for its names (``"bge-siglip"``, the model string); others: qdrant-client's."""
        if model_name is None or model_name in self.model_names:
            return self.dim
        return super().get_embedding_size(model_name)  # type: ignore[misc]

    def _collection_arguments(self, vectors_config: Any, vector_names: Sequence[str] | None,
                              kwargs: dict[str, Any]) -> dict[str, Any]:
        if vectors_config is None:
            params = self.vector_params()
            vectors_config = {name: params for name in vector_names} if vector_names else params
        elif vector_names:
            raise ValueError("pass either vectors_config or vector_names, not both")
        metadata = {**(kwargs.pop("metadata", None) or {}), METADATA_KEY: self.model_record()}
        return {"vectors_config": vectors_config, "metadata": metadata, **kwargs}

    def _check_record(self, collection_name: str, info: Any) -> None:
        record = (getattr(info.config, "metadata", None) or {}).get(METADATA_KEY)
        if record is not None and record.get("fingerprint") != self.vectorizer.fingerprint:
            raise ModelMismatchError(f"Qdrant collection {collection_name!r}", str(record.get("fingerprint")),
                                     self.vectorizer.fingerprint, hint=f"it was made with {record.get('model')!r}")
        self._verified.add(collection_name)  # unrecorded collections (not made by create_collection): unguarded

    @staticmethod
    def _changes_record(metadata: Any) -> bool:
        return bool(metadata) and METADATA_KEY in metadata

    def _check_record_update(self, collection_name: str, metadata: Any, info: Any) -> None:
        """A metadata update may not point the collection's model record at another model (or drop it)."""
        stored = ((getattr(info.config, "metadata", None) or {}).get(METADATA_KEY) or {}).get("fingerprint")
        given = (metadata[METADATA_KEY] or {}).get("fingerprint", "")
        if stored is not None and given != stored:
            raise ModelMismatchError(f"Qdrant collection {collection_name!r}", stored, str(given),
                                     hint="its model record cannot be changed to another model")

    def _resolution(self) -> Resolution:
        return Resolution(self.vectorizer, self.model_names, self.batch_size, self.show_progress)

    def _collect(self, obj: Any, root: str) -> tuple[Any, Resolution]:
        resolution = self._resolution()
        # Lists and Batch rows are the caller's items: errors name the item's position (the first index on its path).
        return resolution.rewrite(obj, root, indexed=isinstance(obj, (list, tuple, models.Batch))), resolution

    def _collect_query(self, query: Any, prefetch: Any) -> tuple[Any, Any, Resolution]:
        resolution = self._resolution()
        query = resolution.rewrite(query, "query", indexed=False)
        prefetch = resolution.rewrite(prefetch, "prefetch", indexed=False)  # one encode call for all of them
        return query, prefetch, resolution

    def resolve(self, obj: Any) -> Any:
        """A copy of ``obj`` (points, a ``Batch``, queries, ``Prefetch``/``QueryRequest`` trees, update operations,
        ...) with our inference objects replaced by vectors. ``obj`` itself is not modified. (Every method of
        this client that takes inference objects does this already; no collection guard here.)"""
        resolved, resolution = self._collect(obj, "obj")
        resolution.run()
        return resolved

    # ------------------------------------------------------------------------------------------------ bulk ingest
    def _ingest_plan(self, items: Any, modality: Modality, payloads: Sequence[dict[str, Any] | None] | None,
                     ids: Sequence[str | int] | None, vector_name: str | None, chunk_size: int, on_error: OnError,
                     show_progress: bool | None, result: IngestResult) -> Iterator[list[models.PointStruct]]:
        """Yields the chunks of points to write, in order; the caller writes each (sync or awaited).

        ``on_error="raise"``: every chunk is encoded before the first is yielded, so a bad item anywhere writes
        nothing (vectors are small: dim x 4 bytes each). ``on_error="skip"``: bad items never raise, so chunks are
        yielded as they are encoded and memory stays bounded by one chunk.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        for name, values in (("payloads", payloads), ("ids", ids)):
            if values is not None and len(values) != len(items):
                raise ValueError(f"{name} has {len(values)} entries for {len(items)} {modality}s")
        result.ids = [None] * len(items)
        show = show_progress if show_progress is not None else (len(items) > chunk_size and sys.stderr.isatty())
        pending: list[list[models.PointStruct]] = []
        with tqdm(total=len(items), unit=modality, desc=f"adding {modality}s", disable=not show) as bar:
            for start in range(0, len(items), chunk_size):
                positions = list(range(start, min(start + chunk_size, len(items))))
                kept, vectors = self._encode_chunk(items, positions, modality, on_error, result.skipped, show_progress)
                points = []
                for i, vector in zip(kept, vectors):
                    point_id = ids[i] if ids is not None else content_id(items[i], modality)
                    extra = (payloads[i] if payloads is not None else None) or {}
                    plain = vector.tolist()
                    points.append(models.PointStruct(
                        id=point_id,
                        vector={vector_name: plain} if vector_name else plain,
                        payload={**provenance(items[i], modality), **extra},
                    ))
                    result.ids[i] = point_id
                bar.update(len(positions))
                if on_error == "skip":
                    yield points
                else:
                    pending.append(points)
        yield from pending

    def _encode_chunk(self, items: list[Any], positions: list[int], modality: Modality, on_error: OnError,
                      skipped: list[InvalidInputError], show_progress: bool | None) -> tuple[list[int], np.ndarray]:
        """Encode ``items[positions]``; returns the kept positions and their vectors. Errors name the input index."""
        encode = self.vectorizer.encode_images if modality == "image" else self.vectorizer.encode_texts
        kept: list[int] = []
        parts: list[np.ndarray] = []
        segments = [positions]
        while segments:
            segment = segments.pop(0)
            if not segment:
                continue
            try:
                batch = [items[i] for i in segment]
                parts.append(encode(batch, batch_size=self.batch_size, show_progress=show_progress))
                kept.extend(segment)
            except InvalidInputError as exc:
                if exc.index is None or not 0 <= exc.index < len(segment):
                    raise
                error = exc.at(segment[exc.index])  # position in the caller's list, not in this chunk
                if on_error == "raise":
                    raise error from None
                skipped.append(error)
                # The core reports the first bad item in order, so the items before it are fine: encode them and
                # go on after it (each good item is encoded about once, however many bad ones there are).
                segments[:0] = [segment[: exc.index], segment[exc.index + 1 :]]
        vectors = np.concatenate(parts) if parts else np.empty((0, self.dim), dtype=np.float32)
        return kept, vectors


def _image_items(images: str | os.PathLike | Iterable[Any]) -> list[Any]:
    if isinstance(images, (str, os.PathLike)):
        if not os.path.isdir(images):
            raise InvalidInputError(
                f"expected a folder or a list of images, got {os.fspath(images)!r}; wrap a single image in a list"
            )
        return list_image_files(images)
    return list(images)


def _text_items(texts: Iterable[str]) -> list[str]:
    if isinstance(texts, str):
        raise InvalidInputError("expected a list of texts, got a single str; wrap it in a list")
    return list(texts)


_CLIENT_DOC = """

    Args:
        client: an existing client whose connection this one shares (exposed as :attr:`client`), or a location
            (``":memory:"``, a URL) as qdrant-client's first argument; or give ``path=``, ``url=``, ... below.
        model: a BGE-SigLIP directory or hub id (loaded once per process via ``shared_vectorizer``). Its string form
            also counts as our model name in ``Document.model`` / ``Image.model``.
        vectorizer: an already loaded ``Vectorizer`` instead of ``model``.
        model_name: the name that marks an inference object as ours (default ``"bge-siglip"``).
        batch_size: encoder batch size. ``show_progress``: the core's progress bars (``None``: only on a terminal).
        **kwargs: any field of the core's ``VectorizerOptions`` (``device``, ``max_num_patches``, ``dtype``, ...);
            every other keyword goes to qdrant-client's constructor (``path``, ``url``, ``api_key``, ...).
"""


class BGESigLIPQdrant(_BGESigLIP, QdrantClient):
    __doc__ = """A ``QdrantClient`` (local mode, server URL, cloud) that embeds our model's inference objects.""" + _CLIENT_DOC

    def __init__(self, client: QdrantClient | str | None = None, model: str | os.PathLike | None = None, *,
                 vectorizer: Vectorizer | None = None, model_name: str = DEFAULT_MODEL_NAME, batch_size: int = 32,
                 show_progress: bool | None = None, **kwargs: Any) -> None:
        qdrant_kwargs = self._setup(client, QdrantClient, model, vectorizer, model_name, batch_size, show_progress,
                                    kwargs)
        if self._adopted is None:
            super().__init__(**qdrant_kwargs)

    # ------------------------------------------------------------------------------------------------ collections
    def create_collection(self, collection_name: str, vectors_config: Any = None, *,
                          vector_names: Sequence[str] | None = None, **kwargs: Any) -> bool:
        """Create a collection for our vectors (one unnamed vector, or one per name in ``vector_names``) and record
        the model in its metadata. An explicit ``vectors_config`` is passed through; other keywords go to
        qdrant-client (your ``metadata`` is kept beside our record)."""
        created = super().create_collection(collection_name,
                                            **self._collection_arguments(vectors_config, vector_names, kwargs))
        self._verified.add(collection_name)
        return created

    def update_collection(self, collection_name: str, *args: Any, metadata: Any = None, **kwargs: Any) -> bool:
        """qdrant-client's ``update_collection``; a ``metadata`` update may not point our record at another model
        (refused before anything is sent)."""
        if self._changes_record(metadata):
            self._check_record_update(collection_name, metadata, super().get_collection(collection_name))
        return super().update_collection(collection_name, *args, metadata=metadata, **kwargs)

    def delete_collection(self, collection_name: str, *args: Any, **kwargs: Any) -> bool:
        self._verified.discard(collection_name)
        return super().delete_collection(collection_name, *args, **kwargs)

    def check_model(self, collection_name: str) -> None:
        """``ModelMismatchError`` if ``collection_name`` was made with another model (read once per client)."""
        if collection_name not in self._verified:
            self._check_record(collection_name, super().get_collection(collection_name))

    def _resolved(self, collection_name: str, obj: Any, root: str) -> Any:
        resolved, resolution = self._collect(obj, root)
        if len(resolution):
            resolution.run()  # bad input fails first, without a request
            self.check_model(collection_name)
        return resolved

    def _resolved_query(self, collection_name: str, query: Any, prefetch: Any) -> tuple[Any, Any]:
        query, prefetch, resolution = self._collect_query(query, prefetch)
        if len(resolution):
            resolution.run()  # bad input fails first, without a request
            self.check_model(collection_name)
        return query, prefetch

    # ------------------------------------------------------------------------------------------------ writing
    def upsert(self, collection_name: str, points: Any, **kwargs: Any) -> models.UpdateResult:
        """``upsert`` with our ``Image``/``Document`` vectors embedded first (a bad one writes nothing; its error's
        ``index`` is the point's position in ``points``)."""
        return super().upsert(collection_name, points=self._resolved(collection_name, points, "points"), **kwargs)

    def upload_points(self, collection_name: str, points: Iterable[models.PointStruct], **kwargs: Any) -> None:
        """``upload_points`` with our objects embedded first. The iterable is read completely and encoded before
        the first point is uploaded, so a bad item writes nothing; for unbounded streams call it per chunk or use
        :meth:`add_images`."""
        super().upload_points(collection_name, points=self._resolved(collection_name, list(points), "points"), **kwargs)

    def upload_collection(self, collection_name: str, vectors: Any, *args: Any, **kwargs: Any) -> None:
        """``upload_collection``; ``vectors`` (a list, or ``{name: list}``) may hold our objects."""
        if not isinstance(vectors, np.ndarray) and not isinstance(vectors, (list, dict)):
            vectors = list(vectors)
        super().upload_collection(collection_name, self._resolved(collection_name, vectors, "vectors"), *args, **kwargs)

    def update_vectors(self, collection_name: str, points: Sequence[models.PointVectors],
                       **kwargs: Any) -> models.UpdateResult:
        """``update_vectors`` with our objects embedded first."""
        return super().update_vectors(collection_name, points=self._resolved(collection_name, points, "points"),
                                      **kwargs)

    def batch_update_points(self, collection_name: str, update_operations: Sequence[Any],
                            **kwargs: Any) -> list[models.UpdateResult]:
        """``batch_update_points``; every operation's objects are encoded in one call before any is applied."""
        operations = self._resolved(collection_name, list(update_operations), "update_operations")
        return super().batch_update_points(collection_name, update_operations=operations, **kwargs)

    # ------------------------------------------------------------------------------------------------ querying
    def query_points(self, collection_name: str, query: Any = None, using: str | None = None, prefetch: Any = None,
                     **kwargs: Any) -> models.QueryResponse:
        """``query_points``; ``query`` and ``prefetch`` (nested too) may hold our objects, alone or inside
        ``NearestQuery``, ``RecommendQuery``, ``DiscoverQuery``, ``ContextQuery``, ..."""
        query, prefetch = self._resolved_query(collection_name, query, prefetch)
        return super().query_points(collection_name, query=query, using=using, prefetch=prefetch, **kwargs)

    def query_points_groups(self, collection_name: str, group_by: str, query: Any = None, using: str | None = None,
                            prefetch: Any = None, **kwargs: Any) -> models.GroupsResult:
        """``query_points_groups`` with our objects embedded first."""
        query, prefetch = self._resolved_query(collection_name, query, prefetch)
        return super().query_points_groups(collection_name, group_by=group_by, query=query, using=using,
                                           prefetch=prefetch, **kwargs)

    def query_batch_points(self, collection_name: str, requests: Sequence[models.QueryRequest],
                           **kwargs: Any) -> list[models.QueryResponse]:
        """``query_batch_points``; all requests' objects are encoded in one call (errors name the request)."""
        requests = self._resolved(collection_name, list(requests), "requests")
        return super().query_batch_points(collection_name, requests=requests, **kwargs)

    # ------------------------------------------------------------------------------------------------ bulk ingest
    def add_images(self, collection_name: str, images: str | os.PathLike | Iterable[Any], *,
                   payloads: Sequence[dict[str, Any] | None] | None = None, ids: Sequence[str | int] | None = None,
                   vector_name: str | None = None, chunk_size: int = 256, on_error: OnError = "raise",
                   show_progress: bool | None = None, wait: bool = True) -> IngestResult:
        """Embed and upsert images (a folder, searched recursively, or a list of any input the core accepts).

        Points get content-derived ids (:func:`~bge_siglip_qdrant.content_id`) unless ``ids`` is given, so
        re-ingesting the same files overwrites instead of duplicating. Each payload records ``modality`` and, for
        paths and URLs, ``source``; keys of ``payloads[i]`` are added (and win). Work goes in chunks of
        ``chunk_size``. ``on_error="raise"`` (default): the first bad item raises its typed error (``index`` =
        position in ``images``) and nothing is written. ``on_error="skip"``: bad items are left out and reported in
        :attr:`IngestResult.skipped`, and chunks are written as they are encoded.
        """
        return self._ingest(collection_name, _image_items(images), "image", payloads, ids, vector_name, chunk_size,
                            on_error, show_progress, wait)

    def add_texts(self, collection_name: str, texts: Iterable[str], *,
                  payloads: Sequence[dict[str, Any] | None] | None = None, ids: Sequence[str | int] | None = None,
                  vector_name: str | None = None, chunk_size: int = 256, on_error: OnError = "raise",
                  show_progress: bool | None = None, wait: bool = True) -> IngestResult:
        """Embed and upsert texts; the same rules as :meth:`add_images` (payload records ``modality`` and ``text``)."""
        return self._ingest(collection_name, _text_items(texts), "text", payloads, ids, vector_name, chunk_size,
                            on_error, show_progress, wait)

    def _ingest(self, collection_name: str, items: list[Any], modality: Modality, *args: Any) -> IngestResult:
        *plan_args, wait = args
        self.check_model(collection_name)
        result = IngestResult()
        for points in self._ingest_plan(items, modality, *plan_args, result):
            if points:
                super().upsert(collection_name, points=points, wait=wait)
        return result


class AsyncBGESigLIPQdrant(_BGESigLIP, AsyncQdrantClient):
    __doc__ = """An ``AsyncQdrantClient`` that embeds our model's inference objects; encoding runs in a worker thread
    (``asyncio.to_thread``), never on the event loop. The same methods and guard as :class:`BGESigLIPQdrant`,
    awaited.""" + _CLIENT_DOC

    def __init__(self, client: AsyncQdrantClient | str | None = None, model: str | os.PathLike | None = None, *,
                 vectorizer: Vectorizer | None = None, model_name: str = DEFAULT_MODEL_NAME, batch_size: int = 32,
                 show_progress: bool | None = None, **kwargs: Any) -> None:
        qdrant_kwargs = self._setup(client, AsyncQdrantClient, model, vectorizer, model_name, batch_size,
                                    show_progress, kwargs)
        if self._adopted is None:
            super().__init__(**qdrant_kwargs)

    def __del__(self) -> None:  # AsyncQdrantClient has no __del__ (closing is awaited)
        pass

    # ------------------------------------------------------------------------------------------------ collections
    async def create_collection(self, collection_name: str, vectors_config: Any = None, *,
                                vector_names: Sequence[str] | None = None, **kwargs: Any) -> bool:
        created = await super().create_collection(collection_name,
                                                  **self._collection_arguments(vectors_config, vector_names, kwargs))
        self._verified.add(collection_name)
        return created

    async def update_collection(self, collection_name: str, *args: Any, metadata: Any = None, **kwargs: Any) -> bool:
        if self._changes_record(metadata):
            self._check_record_update(collection_name, metadata, await super().get_collection(collection_name))
        return await super().update_collection(collection_name, *args, metadata=metadata, **kwargs)

    async def delete_collection(self, collection_name: str, *args: Any, **kwargs: Any) -> bool:
        self._verified.discard(collection_name)
        return await super().delete_collection(collection_name, *args, **kwargs)

    async def check_model(self, collection_name: str) -> None:
        if collection_name not in self._verified:
            self._check_record(collection_name, await super().get_collection(collection_name))

    async def _run(self, collection_name: str, resolution: Resolution) -> None:
        if len(resolution):
            await asyncio.to_thread(resolution.run)  # bad input fails first, without a request
            await self.check_model(collection_name)

    async def _resolved(self, collection_name: str, obj: Any, root: str) -> Any:
        resolved, resolution = self._collect(obj, root)
        await self._run(collection_name, resolution)
        return resolved

    async def _resolved_query(self, collection_name: str, query: Any, prefetch: Any) -> tuple[Any, Any]:
        query, prefetch, resolution = self._collect_query(query, prefetch)
        await self._run(collection_name, resolution)
        return query, prefetch

    # ------------------------------------------------------------------------------------------------ writing
    async def upsert(self, collection_name: str, points: Any, **kwargs: Any) -> models.UpdateResult:
        points = await self._resolved(collection_name, points, "points")
        return await super().upsert(collection_name, points=points, **kwargs)

    def upload_points(self, collection_name: str, points: Iterable[models.PointStruct], **kwargs: Any) -> None:
        # AsyncQdrantClient's upload_* are plain (blocking) methods: encode, then hand over.
        resolved, resolution = self._collect(list(points), "points")
        self._run_blocking(collection_name, resolution)
        super().upload_points(collection_name, points=resolved, **kwargs)

    def upload_collection(self, collection_name: str, vectors: Any, *args: Any, **kwargs: Any) -> None:
        if not isinstance(vectors, np.ndarray) and not isinstance(vectors, (list, dict)):
            vectors = list(vectors)
        resolved, resolution = self._collect(vectors, "vectors")
        self._run_blocking(collection_name, resolution)
        super().upload_collection(collection_name, resolved, *args, **kwargs)

    def _run_blocking(self, collection_name: str, resolution: Resolution) -> None:
        if len(resolution):
            if collection_name not in self._verified:
                # A plain method cannot await the model check; every awaited call on the collection does it.
                raise RuntimeError(f"await client.check_model({collection_name!r}) (or any awaited call on it) "
                                   "before upload_points/upload_collection with bge-siglip objects")
            resolution.run()

    async def update_vectors(self, collection_name: str, points: Sequence[models.PointVectors],
                             **kwargs: Any) -> models.UpdateResult:
        points = await self._resolved(collection_name, points, "points")
        return await super().update_vectors(collection_name, points=points, **kwargs)

    async def batch_update_points(self, collection_name: str, update_operations: Sequence[Any],
                                  **kwargs: Any) -> list[models.UpdateResult]:
        operations = await self._resolved(collection_name, list(update_operations), "update_operations")
        return await super().batch_update_points(collection_name, update_operations=operations, **kwargs)

    # ------------------------------------------------------------------------------------------------ querying
    async def query_points(self, collection_name: str, query: Any = None, using: str | None = None,
                           prefetch: Any = None, **kwargs: Any) -> models.QueryResponse:
        query, prefetch = await self._resolved_query(collection_name, query, prefetch)
        return await super().query_points(collection_name, query=query, using=using, prefetch=prefetch, **kwargs)

    async def query_points_groups(self, collection_name: str, group_by: str, query: Any = None,
                                  using: str | None = None, prefetch: Any = None, **kwargs: Any) -> models.GroupsResult:
        query, prefetch = await self._resolved_query(collection_name, query, prefetch)
        return await super().query_points_groups(collection_name, group_by=group_by, query=query, using=using,
                                                 prefetch=prefetch, **kwargs)

    async def query_batch_points(self, collection_name: str, requests: Sequence[models.QueryRequest],
                                 **kwargs: Any) -> list[models.QueryResponse]:
        requests = await self._resolved(collection_name, list(requests), "requests")
        return await super().query_batch_points(collection_name, requests=requests, **kwargs)

    # ------------------------------------------------------------------------------------------------ bulk ingest
    async def add_images(self, collection_name: str, images: str | os.PathLike | Iterable[Any], *,
                         payloads: Sequence[dict[str, Any] | None] | None = None,
                         ids: Sequence[str | int] | None = None, vector_name: str | None = None,
                         chunk_size: int = 256, on_error: OnError = "raise", show_progress: bool | None = None,
                         wait: bool = True) -> IngestResult:
        """:meth:`BGESigLIPQdrant.add_images`, awaited; listing and encoding run in a worker thread."""
        items = await asyncio.to_thread(_image_items, images)
        return await self._ingest(collection_name, items, "image", payloads, ids, vector_name, chunk_size,
                                  on_error, show_progress, wait)

    async def add_texts(self, collection_name: str, texts: Iterable[str], *,
                        payloads: Sequence[dict[str, Any] | None] | None = None,
                        ids: Sequence[str | int] | None = None, vector_name: str | None = None,
                        chunk_size: int = 256, on_error: OnError = "raise", show_progress: bool | None = None,
                        wait: bool = True) -> IngestResult:
        """:meth:`BGESigLIPQdrant.add_texts`, awaited; encoding runs in a worker thread."""
        return await self._ingest(collection_name, _text_items(texts), "text", payloads, ids, vector_name,
                                  chunk_size, on_error, show_progress, wait)

    async def _ingest(self, collection_name: str, items: list[Any], modality: Modality, *args: Any) -> IngestResult:
        *plan_args, wait = args
        await self.check_model(collection_name)
        result = IngestResult()
        plan = self._ingest_plan(items, modality, *plan_args, result)
        done = object()
        while (points := await asyncio.to_thread(next, plan, done)) is not done:
            if points:
                await super().upsert(collection_name, points=points, wait=wait)
        return result
