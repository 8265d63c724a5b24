"""``BGESigLIPQdrant`` / ``AsyncBGESigLIPQdrant``: a real ``QdrantClient`` / ``AsyncQdrantClient`` that embeds
BGE-SigLIP ``models.Image`` / ``models.Document`` objects itself.

qdrant-client resolves inference objects only for FastEmbed models (and has no custom image models). These
subclasses find the objects that name *our* model in the arguments of every method that takes inference objects
(the eight methods where qdrant-client inspects for them), encode them with the core ``Vectorizer`` (one batched
call per API call, before anything is sent), and pass copies holding plain vectors on to qdrant-client's own
method. Objects for other models are left for qdrant-client; everything else is qdrant-client's. Being real
clients, they can be handed to frameworks that type-check (LangChain's ``QdrantVectorStore`` / ``Qdrant``, ...).

Each collection made with :meth:`create_collection` records the model's fingerprints in the collection metadata
(qdrant-client >= 1.20, key ``"bge_siglip"``); writes and queries with our objects, and bulk ingest, are refused
with :class:`~bge_siglip_vectorizer.ModelMismatchError` when that collection was made with another model.

Hybrid collections (``create_collection(name, hybrid=True)``) hold BGE-M3's three granularities in named vectors:
``"dense"`` (images and texts), ``"sparse"`` (texts' lexical weights) and, with ``multivector=True``,
``"multivector"`` (texts' ColBERT vectors). ``models.Document(text=..., model="bge-siglip-sparse")`` and
``model="bge-siglip-multivector"`` ask for the other two, wherever a ``Document`` goes; the record then also
guards their fingerprints.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from qdrant_client import AsyncQdrantClient, QdrantClient, models

from bge_siglip_vectorizer import (
    MODEL_NAME,
    IngestBatch,
    IngestResult,
    Modality,
    MissingHeadError,
    ModelMismatchError,
    OnError,
    Vectorizer,
    VectorizerOptions,
    ingest,
    ingest_items,
    model_reference,
    shared_vectorizer,
    validate_text,
)

from ._resolve import Granularity, Resolution, as_vector

__all__ = ["AsyncBGESigLIPQdrant", "BGESigLIPQdrant", "DEFAULT_MODEL_NAME", "HYBRID_VECTORS", "IngestResult",
           "METADATA_KEY", "MULTIVECTOR_MODEL_NAME", "SPARSE_MODEL_NAME"]

DEFAULT_MODEL_NAME = MODEL_NAME
SPARSE_SUFFIX = "-sparse"
MULTIVECTOR_SUFFIX = "-multivector"
#: ``Document.model`` for a text's sparse (lexical) vector, with the default model name
SPARSE_MODEL_NAME = DEFAULT_MODEL_NAME + SPARSE_SUFFIX
#: ``Document.model`` for a text's multi-vector (ColBERT), with the default model name
MULTIVECTOR_MODEL_NAME = DEFAULT_MODEL_NAME + MULTIVECTOR_SUFFIX
#: The collection-metadata key holding the record of the model a collection was made with: ``fingerprint``
#: (dense), ``fingerprints`` (per granularity held), ``model``, ``dim``, and ``vectors`` for hybrid collections.
METADATA_KEY = "bge_siglip"
#: The vector names of a hybrid collection, per granularity.
HYBRID_VECTORS: dict[str, str] = {"dense": "dense", "sparse": "sparse", "multivector": "multivector"}
# At most this many floats of vectors per upsert of bulk ingest: python lists cost ~32 bytes a float, and a
# multi-vector has tokens x dim of them per text.
_WRITE_FLOATS = 1 << 20
# The core's options are this client's keyword options too (derived: a field the core adds is accepted here).
_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(VectorizerOptions))

class _BGESigLIP:
    """What the sync and async clients share: the model, finding our objects, the model record, hybrid queries,
    ingest planning. No I/O here; each client does its own calls (awaited or not)."""

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
        #: the ``Document.model`` that asks for BGE-M3's sparse (lexical) vector of a text
        self.sparse_model_name = model_name + SPARSE_SUFFIX
        #: the ``Document.model`` that asks for BGE-M3's multi-vector (ColBERT) of a text
        self.multivector_model_name = model_name + MULTIVECTOR_SUFFIX
        self._granularity_names: dict[str, Granularity] = {
            **{name: "dense" for name in self.model_names},
            self.sparse_model_name: "sparse",
            self.multivector_model_name: "multivector",
        }
        self.model_ref = model_reference(model) if model is not None else vectorizer.components.source
        self.batch_size = batch_size
        self.show_progress = show_progress
        # The model record of each collection this client has checked (None: a collection without one).
        self._records: dict[str, dict[str, Any] | None] = {}
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

    def multivector_params(self, **options: Any) -> models.VectorParams:
        """``VectorParams`` for texts' multi-vectors: ``multivector_dim``, cosine (the rows are unit vectors),
        ``MAX_SIM``, and no HNSW graph (``m=0``): Qdrant's setting for a vector that re-ranks prefetched candidates
        rather than being searched on its own. ``options`` are added (and win)."""
        self._require_output("multivector")
        params: dict[str, Any] = {
            "size": self.vectorizer.multivector_dim, "distance": models.Distance.COSINE,
            "multivector_config": models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            "hnsw_config": models.HnswConfigDiff(m=0),
        }
        return models.VectorParams(**{**params, **options})

    def _require_output(self, granularity: Granularity) -> None:
        if granularity not in self.vectorizer.text_outputs:
            raise MissingHeadError(
                f"this model gives {', '.join(self.vectorizer.text_outputs)} text vectors, not {granularity}: its "
                "text tower lacks BGE-M3's head for it (see `bge-siglip info`)"
            )

    def model_record(self, granularities: Iterable[Granularity] = ("dense",),
                     vectors: dict[str, str] | None = None) -> dict[str, Any]:
        """What :meth:`create_collection` records under ``metadata["bge_siglip"]``: the model, its dense
        ``fingerprint`` and ``fingerprints`` of the granularities the collection holds (those the model has), and
        for hybrid collections the name of each granularity's vector (``vectors``)."""
        fingerprints = self.vectorizer.fingerprints
        record: dict[str, Any] = {
            "fingerprint": fingerprints["dense"], "model": self.model_ref, "dim": self.dim,
            "fingerprints": {g: fingerprints[g] for g in dict.fromkeys(["dense", *granularities]) if g in fingerprints},
        }
        if vectors:
            record["vectors"] = dict(vectors)
        return record

    def get_embedding_size(self, model_name: str | None = None) -> int:
        """Our model's vector size for its names (``"bge-siglip"``, the model string; ``"bge-siglip-multivector"``:
        the size of one multi-vector row); others: qdrant-client's. Sparse vectors have no fixed size (a
        ``ValueError``, as qdrant-client answers for its sparse models)."""
        if model_name is None or model_name in self.model_names:
            return self.dim
        if model_name == self.multivector_model_name:
            self._require_output("multivector")
            return int(self.vectorizer.multivector_dim)  # type: ignore[arg-type]
        if model_name == self.sparse_model_name:
            raise ValueError("Sparse embeddings do not return fixed embedding size and distance type")
        return super().get_embedding_size(model_name)  # type: ignore[misc]

    def _collection_arguments(self, vectors_config: Any, vector_names: Sequence[str] | None, hybrid: bool,
                              multivector: bool, sparse_modifier: models.Modifier | None,
                              kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """qdrant-client's ``create_collection`` arguments, and the model record they carry."""
        layout = None
        if hybrid:
            if vectors_config is not None or vector_names or kwargs.get("sparse_vectors_config") is not None:
                raise ValueError("hybrid=True makes the collection's vectors itself: leave out vectors_config, "
                                 "vector_names and sparse_vectors_config")
            layout = {g: HYBRID_VECTORS[g] for g in ("dense", "sparse", *(("multivector",) if multivector else ()))}
            self._require_output("sparse")
            vectors_config = {layout["dense"]: self.vector_params()}
            if multivector:
                vectors_config[layout["multivector"]] = self.multivector_params()
            kwargs["sparse_vectors_config"] = {layout["sparse"]: models.SparseVectorParams(modifier=sparse_modifier)}
        elif multivector or sparse_modifier is not None:
            raise ValueError("multivector= and sparse_modifier= shape a hybrid collection: pass hybrid=True too")
        elif vectors_config is None:
            params = self.vector_params()
            vectors_config = {name: params for name in vector_names} if vector_names else params
        elif vector_names:
            raise ValueError("pass either vectors_config or vector_names, not both")
        # Sparse and multi-vector fingerprints are recorded where the collection has such vectors (hybrid or a
        # config of the caller's), so a model with other heads is refused there too.
        held: list[Granularity] = ["dense"]
        if kwargs.get("sparse_vectors_config"):
            held.append("sparse")
        params_list = vectors_config.values() if isinstance(vectors_config, dict) else [vectors_config]
        if any(getattr(p, "multivector_config", None) is not None for p in params_list):
            held.append("multivector")
        record = self.model_record(held, layout)
        metadata = {**(kwargs.pop("metadata", None) or {}), METADATA_KEY: record}
        return {"vectors_config": vectors_config, "metadata": metadata, **kwargs}, record

    def _check_record(self, collection_name: str, info: Any) -> None:
        record = (getattr(info.config, "metadata", None) or {}).get(METADATA_KEY)
        if record is not None:
            mine = self.vectorizer.fingerprints
            for granularity, stored in _record_fingerprints(record).items():
                # A granularity this model lacks is not a mismatch: asking for it is the core's MissingHeadError.
                given = mine.get(granularity)
                if given is not None and given != stored:
                    where = f"Qdrant collection {collection_name!r}"
                    raise ModelMismatchError(where if granularity == "dense" else f"{where} ({granularity} vectors)",
                                             str(stored), given, hint=f"it was made with {record.get('model')!r}")
        self._records[collection_name] = record  # unrecorded collections (not made by create_collection): unguarded

    @staticmethod
    def _changes_record(metadata: Any) -> bool:
        return bool(metadata) and METADATA_KEY in metadata

    def _check_record_update(self, collection_name: str, metadata: Any, info: Any) -> None:
        """A metadata update may not point the collection's model record at another model (or drop it), for any
        granularity it records."""
        self._records.pop(collection_name, None)  # read again after the update
        stored = (getattr(info.config, "metadata", None) or {}).get(METADATA_KEY)
        if stored is None:
            return
        given = _record_fingerprints(metadata[METADATA_KEY] or {})
        for granularity, fingerprint in _record_fingerprints(stored).items():
            if given.get(granularity) != fingerprint:
                raise ModelMismatchError(f"Qdrant collection {collection_name!r}", str(fingerprint),
                                         str(given.get(granularity) or ""),
                                         hint=f"its model record ({granularity}) cannot be changed to another model")

    def _resolution(self) -> Resolution:
        return Resolution(self.vectorizer, self._granularity_names, self.batch_size, self.show_progress)

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

    # ------------------------------------------------------------------------------------------------ hybrid
    def hybrid_request(self, text: str, *, limit: int = 10, fusion: models.Fusion | str = models.Fusion.RRF,
                       candidates: int | None = None, rerank: bool = False,
                       vectors: dict[str, str] | None = None, **fields: Any) -> models.QueryRequest:
        """The usual hybrid query for ``text`` as a stock ``QueryRequest`` of our ``Document`` objects: prefetch
        ``candidates`` (default ``4 * limit``) by the dense and by the sparse vector, fuse them with ``fusion``
        (``"rrf"`` or ``"dbsf"``) and, with ``rerank``, re-score the fused candidates by the multi-vector (MaxSim).

        Pass it to ``query_batch_points`` (several hybrid queries, one encode call), or use :meth:`query_hybrid`.
        ``vectors``: the name of each granularity's vector (default :data:`HYBRID_VECTORS`, what
        ``create_collection(..., hybrid=True)`` makes). ``fields``: other ``QueryRequest`` fields (``filter``,
        ``with_payload``, ...). Only texts have sparse and multi-vectors: images in the collection come in through
        the dense prefetch, and a multi-vector re-rank leaves them out.
        """
        validate_text(text, None)
        layout = dict(vectors or HYBRID_VECTORS)
        fusion = models.Fusion(fusion)
        candidates = 4 * limit if candidates is None else candidates
        if candidates < 1 or limit < 1:
            raise ValueError(f"limit and candidates must be positive, got {limit} and {candidates}")
        models_of = {"dense": self.model_name, "sparse": self.sparse_model_name,
                     "multivector": self.multivector_model_name}

        def by(granularity: Granularity) -> models.Document:
            return models.Document(text=text, model=models_of[granularity])

        prefetch = [models.Prefetch(query=by(g), using=layout[g], limit=candidates) for g in ("dense", "sparse")]
        fused = models.FusionQuery(fusion=fusion)
        if not rerank:
            return models.QueryRequest(prefetch=prefetch, query=fused, limit=limit, **fields)
        if "multivector" not in layout:
            raise ValueError("rerank=True needs a multi-vector: create the collection with hybrid=True, "
                             "multivector=True (or name it in vectors=)")
        return models.QueryRequest(prefetch=models.Prefetch(prefetch=prefetch, query=fused, limit=candidates),
                                   query=by("multivector"), using=layout["multivector"], limit=limit, **fields)

    def _hybrid_layout(self, collection_name: str) -> dict[str, str]:
        layout = (self._records.get(collection_name) or {}).get("vectors")
        if not layout or "sparse" not in layout:
            raise ValueError(f"Qdrant collection {collection_name!r} was not made with create_collection(..., "
                             "hybrid=True); pass query_points the fields of hybrid_request(text, vectors={...}) "
                             "naming its vectors")
        return layout

    @staticmethod
    def _query_fields(request: models.QueryRequest) -> dict[str, Any]:
        return {"prefetch": request.prefetch, "query": request.query, "using": request.using, "limit": request.limit}

    # ------------------------------------------------------------------------------------------------ bulk ingest
    def _targets(self, collection_name: str, modality: Modality,
                 vector_name: str | None) -> list[tuple[Granularity, str | None]]:
        """Which vectors ``add_images`` / ``add_texts`` fill: the one named, else every vector of a hybrid
        collection the modality has (images: dense only), else the unnamed one."""
        if vector_name is not None:
            return [("dense", vector_name)]
        layout = (self._records.get(collection_name) or {}).get("vectors")
        if not layout:
            return [("dense", None)]
        if modality == "image":
            return [("dense", layout["dense"])]
        return list(layout.items())

    def _run_ingest(self, items: list[Any], modality: Modality, targets: list[tuple[Granularity, str | None]],
                    upsert: Callable[[list[models.PointStruct]], None],
                    payloads: Sequence[dict[str, Any] | None] | None, ids: Sequence[str | int] | None,
                    chunk_size: int, on_error: OnError, show_progress: bool | None) -> IngestResult:
        """The core's bulk ingest (ids, provenance, chunks, ``on_error``), each chunk upserted in write groups of at
        most ``_WRITE_FLOATS`` floats, so multi-vectors (``tokens x dim`` per text) never turn a whole chunk into
        python lists at once."""
        granularities = {g for g, _ in targets}

        def write(batch: IngestBatch) -> None:
            for points in _point_groups(batch, targets):
                upsert(points)

        return ingest(self.vectorizer, items, modality, write, ids=ids, payloads=payloads, chunk_size=chunk_size,
                      batch_size=self.batch_size, on_error=on_error, show_progress=show_progress,
                      sparse="sparse" in granularities, multivector="multivector" in granularities)


def _point_groups(batch: IngestBatch, targets: list[tuple[Granularity, str | None]]) -> Iterator[list[models.PointStruct]]:
    columns = {"dense": batch.vectors, "sparse": batch.sparse, "multivector": batch.multivector}
    group: list[models.PointStruct] = []
    floats = 0
    for row, point_id in enumerate(batch.ids):
        if targets[0][1] is None:
            vector: Any = as_vector("dense", columns["dense"][row])
        else:
            vector = {name: as_vector(g, columns[g][row]) for g, name in targets}
        group.append(models.PointStruct(id=point_id, vector=vector, payload=batch.payloads[row]))
        floats += sum(_floats(g, columns[g][row]) for g, _ in targets)
        if floats >= _WRITE_FLOATS:
            yield group
            group, floats = [], 0
    if group:
        yield group


def _record_fingerprints(record: dict[str, Any]) -> dict[str, Any]:
    """``{granularity: fingerprint}`` of a model record (records before hybrid collections hold only the dense one)."""
    return {"dense": record.get("fingerprint"), **(record.get("fingerprints") or {})}


def _floats(granularity: Granularity, value: Any) -> int:
    return 2 * len(value) if granularity == "sparse" else int(value.size)


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
                          vector_names: Sequence[str] | None = None, hybrid: bool = False, multivector: bool = False,
                          sparse_modifier: models.Modifier | None = None, **kwargs: Any) -> bool:
        """Create a collection for our vectors and record the model in its metadata.

        Default: one unnamed dense vector, or one per name in ``vector_names``; an explicit ``vectors_config`` is
        passed through. ``hybrid=True``: named vectors ``"dense"`` (images and texts, :meth:`vector_params`) and
        ``"sparse"`` (texts; ``SparseVectorParams(modifier=sparse_modifier)``, e.g. ``models.Modifier.IDF``), and
        with ``multivector=True`` ``"multivector"`` (texts, :meth:`multivector_params`) - see
        :data:`HYBRID_VECTORS`. Other keywords go to qdrant-client (your ``metadata`` is kept beside our record).
        """
        arguments, record = self._collection_arguments(vectors_config, vector_names, hybrid, multivector,
                                                       sparse_modifier, kwargs)
        created = super().create_collection(collection_name, **arguments)
        self._records[collection_name] = record
        return created

    def update_collection(self, collection_name: str, *args: Any, metadata: Any = None, **kwargs: Any) -> bool:
        """qdrant-client's ``update_collection``; a ``metadata`` update may not point our record at another model
        (refused before anything is sent)."""
        if self._changes_record(metadata):
            self._check_record_update(collection_name, metadata, super().get_collection(collection_name))
        return super().update_collection(collection_name, *args, metadata=metadata, **kwargs)

    def delete_collection(self, collection_name: str, *args: Any, **kwargs: Any) -> bool:
        self._records.pop(collection_name, None)
        return super().delete_collection(collection_name, *args, **kwargs)

    def check_model(self, collection_name: str) -> None:
        """``ModelMismatchError`` if ``collection_name`` was made with another model, for any granularity it holds
        (read once per client)."""
        if collection_name not in self._records:
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

    def query_hybrid(self, collection_name: str, text: str, *, limit: int = 10,
                     fusion: models.Fusion | str = models.Fusion.RRF, candidates: int | None = None,
                     rerank: bool = False, **kwargs: Any) -> models.QueryResponse:
        """Hybrid search of a collection made with ``hybrid=True``: :meth:`hybrid_request` on its vectors, through
        :meth:`query_points` (one forward pass of ``text`` for all granularities). ``kwargs``: other
        ``query_points`` arguments (``query_filter``, ``with_payload``, ...)."""
        self.check_model(collection_name)
        request = self.hybrid_request(text, limit=limit, fusion=fusion, candidates=candidates, rerank=rerank,
                                      vectors=self._hybrid_layout(collection_name))
        return self.query_points(collection_name, **self._query_fields(request), **kwargs)

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

        Vectors: the one named ``vector_name``; else in a hybrid collection the ``"dense"`` one (images have no
        sparse or multi-vector); else the unnamed one.
        """
        return self._ingest(collection_name, ingest_items(images, "image"), "image", payloads, ids, vector_name,
                            chunk_size, on_error, show_progress, wait)

    def add_texts(self, collection_name: str, texts: Iterable[str], *,
                  payloads: Sequence[dict[str, Any] | None] | None = None, ids: Sequence[str | int] | None = None,
                  vector_name: str | None = None, chunk_size: int = 256, on_error: OnError = "raise",
                  show_progress: bool | None = None, wait: bool = True) -> IngestResult:
        """Embed and upsert texts; the same rules as :meth:`add_images` (payload records ``modality`` and ``text``).

        In a hybrid collection (and no ``vector_name``) every vector it has is filled: dense, sparse and, where
        made, multi-vector, from one forward pass per batch. Texts are validated before the first write, then
        written chunk by chunk (memory stays bounded by a chunk with multi-vectors too)."""
        return self._ingest(collection_name, ingest_items(texts, "text"), "text", payloads, ids, vector_name,
                            chunk_size, on_error, show_progress, wait)

    def _ingest(self, collection_name: str, items: list[Any], modality: Modality,
                payloads: Sequence[dict[str, Any] | None] | None, ids: Sequence[str | int] | None,
                vector_name: str | None, *args: Any) -> IngestResult:
        *ingest_args, wait = args
        self.check_model(collection_name)
        upsert = super().upsert
        return self._run_ingest(items, modality, self._targets(collection_name, modality, vector_name),
                                lambda points: upsert(collection_name, points=points, wait=wait), payloads, ids,
                                *ingest_args)


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
                                vector_names: Sequence[str] | None = None, hybrid: bool = False,
                                multivector: bool = False, sparse_modifier: models.Modifier | None = None,
                                **kwargs: Any) -> bool:
        arguments, record = self._collection_arguments(vectors_config, vector_names, hybrid, multivector,
                                                       sparse_modifier, kwargs)
        created = await super().create_collection(collection_name, **arguments)
        self._records[collection_name] = record
        return created

    async def update_collection(self, collection_name: str, *args: Any, metadata: Any = None, **kwargs: Any) -> bool:
        if self._changes_record(metadata):
            self._check_record_update(collection_name, metadata, await super().get_collection(collection_name))
        return await super().update_collection(collection_name, *args, metadata=metadata, **kwargs)

    async def delete_collection(self, collection_name: str, *args: Any, **kwargs: Any) -> bool:
        self._records.pop(collection_name, None)
        return await super().delete_collection(collection_name, *args, **kwargs)

    async def check_model(self, collection_name: str) -> None:
        if collection_name not in self._records:
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
            if collection_name not in self._records:
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

    async def query_hybrid(self, collection_name: str, text: str, *, limit: int = 10,
                           fusion: models.Fusion | str = models.Fusion.RRF, candidates: int | None = None,
                           rerank: bool = False, **kwargs: Any) -> models.QueryResponse:
        """:meth:`BGESigLIPQdrant.query_hybrid`, awaited; encoding runs in a worker thread."""
        await self.check_model(collection_name)
        request = self.hybrid_request(text, limit=limit, fusion=fusion, candidates=candidates, rerank=rerank,
                                      vectors=self._hybrid_layout(collection_name))
        return await self.query_points(collection_name, **self._query_fields(request), **kwargs)

    # ------------------------------------------------------------------------------------------------ bulk ingest
    async def add_images(self, collection_name: str, images: str | os.PathLike | Iterable[Any], *,
                         payloads: Sequence[dict[str, Any] | None] | None = None,
                         ids: Sequence[str | int] | None = None, vector_name: str | None = None,
                         chunk_size: int = 256, on_error: OnError = "raise", show_progress: bool | None = None,
                         wait: bool = True) -> IngestResult:
        """:meth:`BGESigLIPQdrant.add_images`, awaited; listing and encoding run in a worker thread."""
        items = await asyncio.to_thread(ingest_items, images, "image")
        return await self._ingest(collection_name, items, "image", payloads, ids, vector_name, chunk_size,
                                  on_error, show_progress, wait)

    async def add_texts(self, collection_name: str, texts: Iterable[str], *,
                        payloads: Sequence[dict[str, Any] | None] | None = None,
                        ids: Sequence[str | int] | None = None, vector_name: str | None = None,
                        chunk_size: int = 256, on_error: OnError = "raise", show_progress: bool | None = None,
                        wait: bool = True) -> IngestResult:
        """:meth:`BGESigLIPQdrant.add_texts`, awaited; encoding runs in a worker thread."""
        return await self._ingest(collection_name, ingest_items(texts, "text"), "text", payloads, ids, vector_name,
                                  chunk_size, on_error, show_progress, wait)

    async def _ingest(self, collection_name: str, items: list[Any], modality: Modality,
                      payloads: Sequence[dict[str, Any] | None] | None, ids: Sequence[str | int] | None,
                      vector_name: str | None, *args: Any) -> IngestResult:
        *ingest_args, wait = args
        await self.check_model(collection_name)
        loop = asyncio.get_running_loop()
        upsert = super().upsert

        def write(points: list[models.PointStruct]) -> None:
            # The ingest runs in a worker thread (encoding off the loop); each write is awaited on the loop.
            asyncio.run_coroutine_threadsafe(upsert(collection_name, points=points, wait=wait), loop).result()

        targets = self._targets(collection_name, modality, vector_name)
        return await asyncio.to_thread(self._run_ingest, items, modality, targets, write, payloads, ids,
                                       *ingest_args)
