"""BGE-SigLIP for Qdrant: write ``models.Image(image=..., model="bge-siglip")`` and
``models.Document(text=..., model="bge-siglip")`` in points and queries, as with FastEmbed models.

    from qdrant_client import models
    from bge_siglip_qdrant import BGESigLIPQdrant

    db = BGESigLIPQdrant(path="./qdrant", model="path/or/hub-id")   # a QdrantClient (or wrap one you have)
    db.create_collection("photos")                                  # records the model: another one is refused
    db.add_images("photos", "photos/")                              # a folder, in batches, content-derived ids
    db.query_points("photos", query=models.Document(text="ein Kätzchen", model="bge-siglip"), limit=5)

``AsyncBGESigLIPQdrant`` is the same for ``AsyncQdrantClient`` (encoding in a worker thread).
"""

from .client import DEFAULT_MODEL_NAME, METADATA_KEY, AsyncBGESigLIPQdrant, BGESigLIPQdrant, IngestResult
from .ingest import ID_NAMESPACE, content_id, provenance

__version__ = "0.1.0"

__all__ = [
    "BGESigLIPQdrant",
    "AsyncBGESigLIPQdrant",
    "IngestResult",
    "DEFAULT_MODEL_NAME",
    "METADATA_KEY",
    "content_id",
    "provenance",
    "ID_NAMESPACE",
    "__version__",
]
