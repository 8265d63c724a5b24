"""``BGESigLIPMilvus``: BGE-SigLIP collections on any ``MilvusClient`` — a milvus-lite file (``MilvusClient("./x.db")``)
or a server (``MilvusClient(uri="http://host:19530")``), with the same code.

It writes the schema users would otherwise write by hand, records the model's fingerprint in the collection's
properties, and refuses to write to or query a collection embedded with another model. Bulk ingest is the core's
:func:`bge_siglip_vectorizer.ingest` (content-derived ids, batches, progress bar, ``on_error``); this module only
turns its batches into Milvus rows and its results into ``upsert`` / ``search`` calls. Everything else is the
client's own API (``db.client.query``, ``delete``, ``drop_collection``, ...).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

from pymilvus import AnnSearchRequest, CollectionSchema, DataType, MilvusClient, RRFRanker, WeightedRanker
from pymilvus.milvus_client import IndexParams

from bge_siglip_vectorizer import (
    IngestBatch,
    IngestResult,
    InvalidImageError,
    InvalidTextError,
    MissingHeadError,
    Modality,
    ModelMismatchError,
    OnError,
    Vectorizer,
    ingest,
    ingest_items,
    provenance,
)

from .embedding_function import BGESigLIPEmbeddingFunction

#: Collection properties holding the model: its fingerprint (checked) and where it was loaded from (for people).
FINGERPRINT_PROPERTY = "bge_siglip.fingerprint"
MODEL_PROPERTY = "bge_siglip.model"
#: The sparse head's fingerprint, in collections with a sparse field.
SPARSE_FINGERPRINT_PROPERTY = "bge_siglip.sparse_fingerprint"

ID_FIELD = "id"
VECTOR_FIELD = "vector"
MODALITY_FIELD = "modality"
SOURCE_FIELD = "source"  # an image's path or URL, when it has one
TEXT_FIELD = "text"  # a text row's text
SPARSE_FIELD = "sparse"  # BGE-M3's lexical weights of a text row (collections made with sparse=True)
#: Milvus' largest VARCHAR (bytes).
VARCHAR_MAX_LENGTH = 65535


class BGESigLIPMilvus:
    """BGE-SigLIP collections on a ``MilvusClient``.

    Args:
        client: the ``MilvusClient`` to use; exposed as :attr:`client`.
        embedding_function: a :class:`BGESigLIPEmbeddingFunction`; or pass ``model`` (and ``device``,
            ``batch_size``, ``show_progress``, vectorizer options) to make one.
    """

    def __init__(
        self,
        client: MilvusClient,
        embedding_function: BGESigLIPEmbeddingFunction | None = None,
        *,
        model: str | os.PathLike | None = None,
        **function_options: Any,
    ) -> None:
        if (embedding_function is None) == (model is None):
            raise ValueError("pass exactly one of `embedding_function` and `model`")
        if embedding_function is None:
            embedding_function = BGESigLIPEmbeddingFunction(model, **function_options)
        elif function_options:
            raise ValueError(f"options {sorted(function_options)} belong to the embedding function you passed")
        self.client = client
        self.embedding_function = embedding_function

    @property
    def vectorizer(self) -> Vectorizer:
        return self.embedding_function.vectorizer

    @property
    def dim(self) -> int:
        return self.embedding_function.dim

    def __repr__(self) -> str:
        return f"BGESigLIPMilvus({self.embedding_function!r})"

    # ------------------------------------------------------------------------------------------------ schema
    def schema(self, *, sparse: bool = False, description: str = "") -> CollectionSchema:
        """The collection schema: ``id`` (VARCHAR primary key; content-derived by default), ``vector``
        (FLOAT_VECTOR of the model's dim), ``modality`` ("image" / "text"), ``source`` (an image's path or URL)
        and ``text`` (a text row's text), both nullable; dynamic fields on, for your own payload keys. ``sparse``:
        also ``sparse`` (SPARSE_FLOAT_VECTOR, BGE-M3's lexical weights) for texts and :meth:`hybrid_search`."""
        if sparse:
            self._require_sparse()
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True, description=description)
        schema.add_field(ID_FIELD, DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field(MODALITY_FIELD, DataType.VARCHAR, max_length=16)
        schema.add_field(SOURCE_FIELD, DataType.VARCHAR, max_length=VARCHAR_MAX_LENGTH, nullable=True)
        schema.add_field(TEXT_FIELD, DataType.VARCHAR, max_length=VARCHAR_MAX_LENGTH, nullable=True)
        if sparse:
            # Not nullable: pymilvus 3.0 / milvus-lite 3.2 cannot write a null vector, so image rows cannot go here.
            schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
        return schema

    def index_params(self, *, sparse: bool = False) -> IndexParams:
        """A COSINE index on ``vector`` (AUTOINDEX: Milvus picks the index type for the deployment); ``sparse``: an
        inner-product SPARSE_INVERTED_INDEX on ``sparse`` (BGE-M3's lexical score is a dot product)."""
        params = MilvusClient.prepare_index_params()
        params.add_index(VECTOR_FIELD, index_type="AUTOINDEX", metric_type="COSINE")
        if sparse:
            params.add_index(SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        return params

    def collection_properties(self, *, sparse: bool = False) -> dict[str, str]:
        """The properties that record this model in a collection (``create_collection(properties=...)``)."""
        properties = {FINGERPRINT_PROPERTY: self.embedding_function.fingerprint,
                      MODEL_PROPERTY: self.embedding_function.model_name or ""}
        if sparse:
            properties[SPARSE_FINGERPRINT_PROPERTY] = self._require_sparse()
        return properties

    def _require_sparse(self) -> str:
        fingerprint = self.vectorizer.fingerprints.get("sparse")
        if fingerprint is None or "sparse" not in self.vectorizer.text_outputs:
            raise MissingHeadError(
                f"sparse vectors need BGE-M3's sparse head (sparse_linear.pt in the text tower), which "
                f"{self.embedding_function.model_name} does not have or its backend does not run"
            )
        return fingerprint

    def create_collection(
        self,
        collection_name: str,
        *,
        sparse: bool = False,
        exist_ok: bool = False,
        schema: CollectionSchema | None = None,
        index_params: IndexParams | None = None,
        properties: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Create a collection with :meth:`schema` and :meth:`index_params` (or yours) and this model recorded in
        its properties; ``kwargs`` go to ``MilvusClient.create_collection`` (``consistency_level``, ...).

        ``sparse=True`` adds the ``sparse`` field for texts (:meth:`add_texts` fills it from the same forward pass
        as the dense vector) and enables :meth:`hybrid_search`. Such a collection holds texts only: its sparse
        field cannot be left empty for image rows (pymilvus 3.0 / milvus-lite 3.2 write no null vectors).

        An existing collection of another model is a :class:`~bge_siglip_vectorizer.ModelMismatchError` (nothing
        changes); one of this model is kept as it is with ``exist_ok=True``, else Milvus' "already exists" error."""
        if self.client.has_collection(collection_name):
            self.check_collection(collection_name)
            if exist_ok:
                return
        self.client.create_collection(
            collection_name,
            schema=schema if schema is not None else self.schema(sparse=sparse),
            index_params=index_params if index_params is not None else self.index_params(sparse=sparse),
            properties={**(properties or {}), **self.collection_properties(sparse=sparse)},
            **kwargs,
        )

    def check_collection(self, collection_name: str) -> dict[str, Any]:
        """``describe_collection``, after checking that the collection records this model (else
        :class:`~bge_siglip_vectorizer.ModelMismatchError`) and has a ``vector`` field of its dim."""
        description = self.client.describe_collection(collection_name)
        properties = description.get("properties") or {}
        stored = properties.get(FINGERPRINT_PROPERTY)
        mine = self.embedding_function.fingerprint
        where = f"collection {collection_name!r}"
        if stored is None:
            raise ModelMismatchError(
                where, "none", mine,
                hint=f"it records no BGE-SigLIP model (no {FINGERPRINT_PROPERTY!r} property): create it with "
                     "BGESigLIPMilvus.create_collection, or, if its vectors are this model's, record it with "
                     f"client.alter_collection_properties({collection_name!r}, db.collection_properties())",
            )
        if stored != mine:
            raise ModelMismatchError(where, stored, mine,
                                     hint=f"it was embedded with {properties.get(MODEL_PROPERTY) or 'another model'}")
        vector = next((f for f in description["fields"] if f["name"] == VECTOR_FIELD), None)
        if vector is None or int(vector.get("params", {}).get("dim", -1)) != self.dim:
            raise ModelMismatchError(where, stored, mine,
                                     hint=f"it has no {VECTOR_FIELD!r} FLOAT_VECTOR field of dim {self.dim}")
        if _has_sparse(description):
            stored_sparse = properties.get(SPARSE_FINGERPRINT_PROPERTY) or "none"
            mine_sparse = self.vectorizer.fingerprints.get("sparse") or "none"
            if stored_sparse != mine_sparse:
                raise ModelMismatchError(where, stored_sparse, mine_sparse,
                                         hint="its sparse vectors come from another sparse head")
        return description

    def _ready(self, collection_name: str) -> dict[str, Any]:
        description = self.check_collection(collection_name)
        # A collection opened by a new client (another process, a restarted server) starts released.
        if str(self.client.get_load_state(collection_name).get("state")) != "Loaded":
            self.client.load_collection(collection_name)
        return description

    # ------------------------------------------------------------------------------------------------ ingest
    def add_images(
        self,
        collection_name: str,
        images: str | os.PathLike | Iterable[Any],
        *,
        ids: Sequence[str] | None = None,
        payloads: Sequence[dict[str, Any] | None] | None = None,
        chunk_size: int = 256,
        on_error: OnError = "raise",
        show_progress: bool | None = None,
    ) -> IngestResult:
        """Embed and upsert images: a folder (recursive) or a list of anything the core accepts.

        Rows get content-derived ids unless ``ids`` is given, so re-ingesting the same files overwrites instead of
        duplicating; ``source`` records paths and URLs; ``payloads[i]`` keys go into (dynamic) fields. Chunks of
        ``chunk_size`` are upserted in one request each. ``on_error="raise"``: a bad item raises its typed error
        (``index`` = its position in ``images``) and nothing is written; ``"skip"``: bad items are left out and
        reported in ``result.skipped``.
        """
        return self._add(collection_name, ingest_items(images, "image"), "image", ids, payloads, chunk_size,
                         on_error, show_progress)

    def add_texts(
        self,
        collection_name: str,
        texts: Iterable[str],
        *,
        ids: Sequence[str] | None = None,
        payloads: Sequence[dict[str, Any] | None] | None = None,
        chunk_size: int = 256,
        on_error: OnError = "raise",
        show_progress: bool | None = None,
    ) -> IngestResult:
        """Embed and upsert texts; the same rules as :meth:`add_images` (``text`` records the text)."""
        return self._add(collection_name, ingest_items(texts, "text"), "text", ids, payloads, chunk_size,
                         on_error, show_progress)

    def _add(
        self,
        collection_name: str,
        items: list[Any],
        modality: Modality,
        ids: Sequence[str] | None,
        payloads: Sequence[dict[str, Any] | None] | None,
        chunk_size: int,
        on_error: OnError,
        show_progress: bool | None,
    ) -> IngestResult:
        description = self._ready(collection_name)
        limits = _varchar_limits(description)
        sparse = _has_sparse(description)
        if sparse and modality == "image":
            raise ValueError(
                f"collection {collection_name!r} has a sparse field, which image rows cannot fill (pymilvus 3.0 / "
                "milvus-lite 3.2 write no null vectors); keep images in a collection created without sparse=True"
            )

        def check(item: Any, position: int) -> None:
            # Milvus refuses a whole upsert for one over-long string: refuse the item before anything is encoded.
            field, error = (TEXT_FIELD, InvalidTextError) if modality == "text" else (SOURCE_FIELD, InvalidImageError)
            if modality == "text" and not isinstance(item, str):
                return  # not a text at all: the core's validation names it
            value = item if modality == "text" else provenance(item, "image").get(SOURCE_FIELD, "")
            size = len(value.encode("utf-8", "surrogatepass"))
            if field in limits and size > limits[field]:
                raise error(f"{size:,} bytes do not fit the collection's {field!r} field "
                            f"(max_length {limits[field]:,})", index=position)

        def write(batch: IngestBatch) -> None:
            # Every declared field is written (None where absent): milvus-lite merges an upsert into the old row
            # (Milvus servers replace it), so a row that changes kind must not keep its old source or text.
            rows = [{SOURCE_FIELD: None, TEXT_FIELD: None, **payload, ID_FIELD: item_id, VECTOR_FIELD: vector}
                    for item_id, vector, payload in zip(batch.ids, batch.vectors, batch.payloads)]
            for row, weights in zip(rows, batch.sparse or ()):
                row[SPARSE_FIELD] = weights.to_dict()
            self.client.upsert(collection_name, data=rows)

        ef = self.embedding_function
        return ingest(ef.vectorizer, items, modality, write, ids=ids, payloads=payloads, chunk_size=chunk_size,
                      batch_size=ef.batch_size, on_error=on_error, show_progress=show_progress, check=check,
                      reserved=(ID_FIELD, VECTOR_FIELD, SPARSE_FIELD), sparse=sparse)

    # ------------------------------------------------------------------------------------------------ search
    def search(
        self,
        collection_name: str,
        *,
        texts: Sequence[str] | None = None,
        images: Sequence[Any] | None = None,
        limit: int = 10,
        filter: str = "",
        output_fields: list[str] | None = None,
        search_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``MilvusClient.search`` with query texts (any language) or query images embedded first: one list of
        hits (``id``, ``distance`` = cosine similarity, ``entity``) per query, nearest first.

        ``filter`` is a Milvus expression, e.g. ``'modality == "image"'``; ``output_fields`` e.g.
        ``["source", "text", "modality"]``; other keyword arguments go to ``MilvusClient.search``.
        """
        if (texts is None) == (images is None):
            raise ValueError("pass exactly one of `texts` and `images` (each a list)")
        self._ready(collection_name)
        ef = self.embedding_function
        vectors = ef.encode_queries(texts) if texts is not None else ef.encode_images(images)
        return self.client.search(
            collection_name,
            data=vectors,
            anns_field=VECTOR_FIELD,
            limit=limit,
            filter=filter,
            output_fields=output_fields,
            search_params={"metric_type": "COSINE", **(search_params or {})},
            **kwargs,
        )


    def hybrid_search(
        self,
        collection_name: str,
        texts: Sequence[str],
        *,
        limit: int = 10,
        ranker: str = "rrf",
        rrf_k: int = 60,
        weights: tuple[float, float] = (0.5, 0.5),
        filter: str = "",
        output_fields: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``MilvusClient.hybrid_search`` over the dense ``vector`` (COSINE) and the ``sparse`` field (IP) of a
        collection created with ``sparse=True``: both query vectors come from one forward pass per text, and the two
        rankings are fused by ``ranker="rrf"`` (``RRFRanker(rrf_k)``) or ``"weighted"`` (``WeightedRanker(dense,
        sparse)`` with ``weights``). One list of hits per query text."""
        if ranker not in ("rrf", "weighted"):
            raise ValueError(f"ranker must be 'rrf' or 'weighted', got {ranker!r}")
        if not _has_sparse(self._ready(collection_name)):
            raise ValueError(f"collection {collection_name!r} has no sparse field; create it with sparse=True")
        ef = self.embedding_function
        encodings = ef.vectorizer.encode_texts_all(texts, batch_size=ef.batch_size, show_progress=ef.show_progress,
                                                   multivector=False)
        requests = [
            AnnSearchRequest(data=list(encodings.dense), anns_field=VECTOR_FIELD, param={"metric_type": "COSINE"},
                             limit=limit, expr=filter or None),
            AnnSearchRequest(data=[weights_.to_dict() for weights_ in encodings.sparse], anns_field=SPARSE_FIELD,
                             param={"metric_type": "IP"}, limit=limit, expr=filter or None),
        ]
        fusion = RRFRanker(rrf_k) if ranker == "rrf" else WeightedRanker(*weights)
        return self.client.hybrid_search(collection_name, requests, fusion, limit=limit, output_fields=output_fields,
                                         **kwargs)


def _has_sparse(description: dict[str, Any]) -> bool:
    return any(field["name"] == SPARSE_FIELD for field in description["fields"])


def _varchar_limits(description: dict[str, Any]) -> dict[str, int]:
    return {field["name"]: int(field["params"]["max_length"]) for field in description["fields"]
            if field["name"] in (SOURCE_FIELD, TEXT_FIELD) and "max_length" in field.get("params", {})}
