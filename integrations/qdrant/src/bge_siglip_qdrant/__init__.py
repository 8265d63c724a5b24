"""BGE-SigLIP for Qdrant: write ``models.Image(image=..., model="bge-siglip")`` and
``models.Document(text=..., model="bge-siglip")`` in points and queries, as with FastEmbed models.

    from qdrant_client import models
    from bge_siglip_qdrant import BGESigLIPQdrant

    db = BGESigLIPQdrant(path="./qdrant", model="path/or/hub-id")   # a QdrantClient (or wrap one you have)
    db.create_collection("photos")                                  # records the model: another one is refused
    db.add_images("photos", "photos/")                              # a folder, in batches, content-derived ids
    db.query_points("photos", query=models.Document(text="ein Kätzchen", model="bge-siglip"), limit=5)

Hybrid search (BGE-M3's dense + sparse + multi-vector text outputs, images dense)::

    db.create_collection("shop", hybrid=True, multivector=True)     # vectors "dense", "sparse", "multivector"
    db.add_texts("shop", ["running shoe X-9000", ...])               # fills all three; add_images: dense only
    db.query_hybrid("shop", "X-9000", limit=5)                      # dense + sparse prefetch, RRF (or "dbsf")
    models.Document(text="X-9000", model="bge-siglip-sparse")        # in any query, prefetch or point vector

``AsyncBGESigLIPQdrant`` is the same for ``AsyncQdrantClient`` (encoding in a worker thread).
"""

# Point ids and provenance payloads are the core's, re-exported where this package has always offered them.
from bge_siglip_vectorizer import ID_NAMESPACE, content_id, provenance

from .client import (
    DEFAULT_MODEL_NAME,
    HYBRID_VECTORS,
    METADATA_KEY,
    MULTIVECTOR_MODEL_NAME,
    SPARSE_MODEL_NAME,
    AsyncBGESigLIPQdrant,
    BGESigLIPQdrant,
    IngestResult,
)

__version__ = "0.1.0"

__all__ = [
    "BGESigLIPQdrant",
    "AsyncBGESigLIPQdrant",
    "IngestResult",
    "DEFAULT_MODEL_NAME",
    "SPARSE_MODEL_NAME",
    "MULTIVECTOR_MODEL_NAME",
    "HYBRID_VECTORS",
    "METADATA_KEY",
    "content_id",
    "provenance",
    "ID_NAMESPACE",
    "__version__",
]
