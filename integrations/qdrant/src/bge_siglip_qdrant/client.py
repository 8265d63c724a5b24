"""``BGESigLIPQdrant``: a ``QdrantClient`` wrapper that embeds BGE-SigLIP ``models.Image`` / ``models.Document``.

qdrant-client resolves inference objects only for FastEmbed models (and has no custom image models). This wrapper
finds the objects that name *our* model in the arguments of the calls below, encodes them with the core
``Vectorizer`` (one batched call per API call, before anything is sent), and passes copies holding plain vectors on
to the wrapped client's public method. Objects for other models are left for qdrant-client to handle; every other
attribute is the wrapped client's.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Literal, Sequence

import numpy as np
from qdrant_client import models
from tqdm.auto import tqdm

from bge_siglip_vectorizer import MODEL_NAME, InvalidInputError, Vectorizer, shared_vectorizer
from bge_siglip_vectorizer import list_image_files

from ._resolve import Resolution
from .ingest import Modality, content_id, provenance

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

DEFAULT_MODEL_NAME = MODEL_NAME

OnError = Literal["raise", "skip"]


@dataclass
class IngestResult:
    """What :meth:`BGESigLIPQdrant.add_images` / :meth:`~BGESigLIPQdrant.add_texts` wrote.

    ``ids`` is aligned with the input list (``None`` where an item was skipped); ``skipped`` holds the typed error of
    each skipped item (``error.index`` is its position in the input list).
    """

    ids: list[str | int | None] = field(default_factory=list)
    skipped: list[InvalidInputError] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(point_id is not None for point_id in self.ids)


class BGESigLIPQdrant:
    """Wraps any ``QdrantClient`` (local mode, server URL, cloud) and embeds our model's inference objects.

    Args:
        client: the client to wrap; exposed as :attr:`client`.
        model: a BGE-SigLIP directory or hub id (loaded once per process via ``shared_vectorizer``). Its string form
            also counts as our model name in ``Document.model`` / ``Image.model``.
        vectorizer: an already loaded ``Vectorizer`` instead of ``model``.
        model_name: the name that marks an inference object as ours (default ``"bge-siglip"``).
        device: torch device for the model (default: the core's choice).
        batch_size: encoder batch size. ``show_progress``: the core's progress bars (``None``: only on a terminal).
        vectorizer_options: further ``Vectorizer.from_pretrained`` options (``max_num_patches``, ``dtype``, ...).
    """

    def __init__(
        self,
        client: "QdrantClient",
        model: str | os.PathLike | None = None,
        *,
        vectorizer: Vectorizer | None = None,
        model_name: str = DEFAULT_MODEL_NAME,
        device: str | None = None,
        batch_size: int = 32,
        show_progress: bool | None = None,
        **vectorizer_options: Any,
    ) -> None:
        if (model is None) == (vectorizer is None):
            raise ValueError("pass exactly one of `model` (a path or hub id) and `vectorizer`")
        if vectorizer is None:
            if device is not None:
                vectorizer_options["device"] = device
            vectorizer = shared_vectorizer(model, **vectorizer_options)  # one model per process, however many clients
        self._client = client
        self.vectorizer = vectorizer
        self.model_name = model_name
        names = {model_name} if model is None else {model_name, os.fspath(model)}
        self.model_names: frozenset[str] = frozenset(names)
        self.batch_size = batch_size
        self.show_progress = show_progress

    # ------------------------------------------------------------------------------------------------ basics
    @property
    def client(self) -> "QdrantClient":
        """The wrapped qdrant-client client."""
        return self._client

    @property
    def dim(self) -> int:
        return self.vectorizer.dim

    def __getattr__(self, name: str) -> Any:
        # Everything not defined here is the wrapped client's (scroll, count, delete, retrieve, close, ...).
        client = self.__dict__.get("_client")
        if client is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(client, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(dir(self._client)))

    def __repr__(self) -> str:
        return f"BGESigLIPQdrant(model_names={sorted(self.model_names)!r}, dim={self.dim}, client={self._client!r})"

    def vector_params(self, **options: Any) -> models.VectorParams:
        """``VectorParams`` for our vectors: size = model dim, cosine distance; ``options`` (``on_disk``, ...) added."""
        return models.VectorParams(size=self.dim, distance=models.Distance.COSINE, **options)

    def create_collection(
        self,
        collection_name: str,
        vectors_config: models.VectorParams | dict[str, models.VectorParams] | None = None,
        *,
        vector_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> bool:
        """Create a collection for our vectors: one unnamed vector, or one per name in ``vector_names``.

        An explicit ``vectors_config`` is passed through as is; other keyword arguments go to the client.
        """
        if vectors_config is None:
            params = self.vector_params()
            vectors_config = {name: params for name in vector_names} if vector_names else params
        elif vector_names:
            raise ValueError("pass either vectors_config or vector_names, not both")
        return self._client.create_collection(collection_name, vectors_config=vectors_config, **kwargs)

    # ------------------------------------------------------------------------------------------------ resolution
    def _resolution(self) -> Resolution:
        return Resolution(self.vectorizer, self.model_names, self.batch_size, self.show_progress)

    def resolve(self, obj: Any) -> Any:
        """A copy of ``obj`` (points, a ``Batch``, queries, ``Prefetch``/``QueryRequest`` trees, update operations,
        ...) with our inference objects replaced by vectors; for calls this class does not wrap (e.g.
        ``batch_update_points``, or an ``AsyncQdrantClient``). ``obj`` itself is not modified."""
        return self._resolve(obj, "obj")

    def _resolve(self, obj: Any, root: str) -> Any:
        resolution = self._resolution()
        # Lists and Batch rows are the caller's items: errors name the item's position (the first index on its path).
        resolved = resolution.rewrite(obj, root, indexed=isinstance(obj, (list, tuple, models.Batch)))
        resolution.run()
        return resolved

    def upsert(
        self, collection_name: str, points: models.Batch | Sequence[models.PointStruct], **kwargs: Any
    ) -> models.UpdateResult:
        """``QdrantClient.upsert`` with our ``Image``/``Document`` vectors embedded first (a bad one writes nothing;
        its error's ``index`` is the point's position in ``points``)."""
        return self._client.upsert(collection_name, points=self._resolve(points, "points"), **kwargs)

    def upload_points(self, collection_name: str, points: Iterable[models.PointStruct], **kwargs: Any) -> None:
        """``QdrantClient.upload_points`` with our objects embedded first.

        The iterable is read completely and encoded before the first point is uploaded, so a bad item writes
        nothing; for very large or unbounded streams, call this per chunk or use :meth:`add_images`.
        """
        return self._client.upload_points(collection_name, points=self._resolve(list(points), "points"), **kwargs)

    def update_vectors(
        self, collection_name: str, points: Sequence[models.PointVectors], **kwargs: Any
    ) -> models.UpdateResult:
        """``QdrantClient.update_vectors`` with our objects embedded first."""
        return self._client.update_vectors(collection_name, points=self._resolve(points, "points"), **kwargs)

    def _resolve_query(self, query: Any, prefetch: Any) -> tuple[Any, Any]:
        resolution = self._resolution()
        query = resolution.rewrite(query, "query", indexed=False)
        prefetch = resolution.rewrite(prefetch, "prefetch", indexed=False)
        resolution.run()  # query and all prefetches (at any depth) in one encode call
        return query, prefetch

    def query_points(
        self, collection_name: str, query: Any = None, using: str | None = None, prefetch: Any = None, **kwargs: Any
    ) -> models.QueryResponse:
        """``QdrantClient.query_points``; ``query`` and ``prefetch`` (nested too) may hold our objects, alone or
        inside ``NearestQuery``, ``RecommendQuery``, ``DiscoverQuery``, ``ContextQuery``, ..."""
        query, prefetch = self._resolve_query(query, prefetch)
        return self._client.query_points(collection_name, query=query, using=using, prefetch=prefetch, **kwargs)

    def query_points_groups(
        self,
        collection_name: str,
        group_by: str,
        query: Any = None,
        using: str | None = None,
        prefetch: Any = None,
        **kwargs: Any,
    ) -> models.GroupsResult:
        """``QdrantClient.query_points_groups`` with our objects embedded first."""
        query, prefetch = self._resolve_query(query, prefetch)
        return self._client.query_points_groups(
            collection_name, group_by=group_by, query=query, using=using, prefetch=prefetch, **kwargs
        )

    def query_batch_points(
        self, collection_name: str, requests: Sequence[models.QueryRequest], **kwargs: Any
    ) -> list[models.QueryResponse]:
        """``QdrantClient.query_batch_points``; all requests' objects are encoded in one call (errors name the
        request's position)."""
        requests = self._resolve(list(requests), "requests")
        return self._client.query_batch_points(collection_name, requests=requests, **kwargs)

    # ------------------------------------------------------------------------------------------------ bulk ingest
    def add_images(
        self,
        collection_name: str,
        images: str | os.PathLike | Iterable[Any],
        *,
        payloads: Sequence[dict[str, Any] | None] | None = None,
        ids: Sequence[str | int] | None = None,
        vector_name: str | None = None,
        chunk_size: int = 256,
        on_error: OnError = "raise",
        show_progress: bool | None = None,
        wait: bool = True,
    ) -> IngestResult:
        """Embed and upsert images (a folder, searched recursively, or a list of any input the core accepts).

        Points get content-derived ids (:func:`~bge_siglip_qdrant.content_id`) unless ``ids`` is given, so
        re-ingesting the same files overwrites instead of duplicating. Each payload records ``modality`` and, for
        paths and URLs, ``source``; keys of ``payloads[i]`` are added (and win). Work goes in chunks of
        ``chunk_size``.

        ``on_error="raise"`` (default): every chunk is encoded before any is written, so the first bad item raises
        its typed error (``index`` = position in ``images``) and nothing is written. ``on_error="skip"``: bad
        items are left out and reported in :attr:`IngestResult.skipped`, and chunks are written as they are
        encoded (for very large ingests: memory stays bounded by one chunk).
        """
        if isinstance(images, (str, os.PathLike)):
            if not os.path.isdir(images):
                raise InvalidInputError(
                    f"expected a folder or a list of images, got {os.fspath(images)!r}; wrap a single image in a list"
                )
            images = list_image_files(images)
        return self._ingest(collection_name, list(images), "image", payloads, ids, vector_name, chunk_size,
                            on_error, show_progress, wait)

    def add_texts(
        self,
        collection_name: str,
        texts: Iterable[str],
        *,
        payloads: Sequence[dict[str, Any] | None] | None = None,
        ids: Sequence[str | int] | None = None,
        vector_name: str | None = None,
        chunk_size: int = 256,
        on_error: OnError = "raise",
        show_progress: bool | None = None,
        wait: bool = True,
    ) -> IngestResult:
        """Embed and upsert texts; the same rules as :meth:`add_images` (payload records ``modality`` and ``text``)."""
        if isinstance(texts, str):
            raise InvalidInputError("expected a list of texts, got a single str; wrap it in a list")
        return self._ingest(collection_name, list(texts), "text", payloads, ids, vector_name, chunk_size,
                            on_error, show_progress, wait)

    def _ingest(
        self,
        collection_name: str,
        items: list[Any],
        modality: Modality,
        payloads: Sequence[dict[str, Any] | None] | None,
        ids: Sequence[str | int] | None,
        vector_name: str | None,
        chunk_size: int,
        on_error: OnError,
        show_progress: bool | None,
        wait: bool,
    ) -> IngestResult:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        for name, values in (("payloads", payloads), ("ids", ids)):
            if values is not None and len(values) != len(items):
                raise ValueError(f"{name} has {len(values)} entries for {len(items)} {modality}s")
        result = IngestResult(ids=[None] * len(items))
        show = show_progress if show_progress is not None else (len(items) > chunk_size and sys.stderr.isatty())
        # on_error="raise": encode every chunk before writing any, so a bad item anywhere writes nothing (vectors
        # are small: dim x 4 bytes each). on_error="skip": bad items never raise, so chunks stream as they finish.
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
                pending.append(points)
                if on_error == "skip":
                    self._write(collection_name, pending.pop(), wait)
                bar.update(len(positions))
        for points in pending:
            self._write(collection_name, points, wait)
        return result

    def _write(self, collection_name: str, points: list[models.PointStruct], wait: bool) -> None:
        if points:
            self._client.upsert(collection_name, points=points, wait=wait)

    def _encode_chunk(
        self,
        items: list[Any],
        positions: list[int],
        modality: Modality,
        on_error: OnError,
        skipped: list[InvalidInputError],
        show_progress: bool | None,
    ) -> tuple[list[int], np.ndarray]:
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
