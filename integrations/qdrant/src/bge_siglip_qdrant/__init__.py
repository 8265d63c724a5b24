"""BGE-SigLIP for Qdrant: write ``models.Image(image=..., model="bge-siglip")`` and
``models.Document(text=..., model="bge-siglip")`` in points and queries, as with FastEmbed models.

    from qdrant_client import QdrantClient, models
    from bge_siglip_qdrant import BGESigLIPQdrant

    db = BGESigLIPQdrant(QdrantClient(path="./qdrant"), model="path/or/hub-id")
    db.create_collection("photos")
    db.add_images("photos", "photos/")                      # a folder, in batches, content-derived ids
    db.query_points("photos", query=models.Document(text="ein Kätzchen", model="bge-siglip"), limit=5)
"""

from .client import DEFAULT_MODEL_NAME, BGESigLIPQdrant, IngestResult
from .ingest import ID_NAMESPACE, content_id, provenance

__version__ = "0.1.0"

__all__ = [
    "BGESigLIPQdrant",
    "IngestResult",
    "DEFAULT_MODEL_NAME",
    "content_id",
    "provenance",
    "ID_NAMESPACE",
    "__version__",
]
