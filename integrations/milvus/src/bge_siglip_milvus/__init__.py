"""BGE-SigLIP for Milvus: an embedding function in the shape of pymilvus' model library, and collections that
record their model.

    from pymilvus import MilvusClient
    from bge_siglip_milvus import BGESigLIPEmbeddingFunction, BGESigLIPMilvus

    ef = BGESigLIPEmbeddingFunction(model="path/or/hub-id", device="cpu", batch_size=32)
    db = BGESigLIPMilvus(MilvusClient("./photos.db"), ef)      # or MilvusClient(uri="http://host:19530")
    db.create_collection("photos")
    db.add_images("photos", "photos/")                          # batches, progress bar, content-derived ids
    db.search("photos", texts=["ein Hund am Strand"], limit=5, output_fields=["source"])
"""

from bge_siglip_vectorizer import IngestResult, ModelMismatchError, content_id

from .collection import (
    FINGERPRINT_PROPERTY,
    ID_FIELD,
    MODALITY_FIELD,
    MODEL_PROPERTY,
    SOURCE_FIELD,
    SPARSE_FIELD,
    SPARSE_FINGERPRINT_PROPERTY,
    TEXT_FIELD,
    VECTOR_FIELD,
    BGESigLIPMilvus,
)
from .embedding_function import BGESigLIPEmbeddingFunction

__version__ = "0.1.0"

__all__ = [
    "BGESigLIPEmbeddingFunction",
    "BGESigLIPMilvus",
    "IngestResult",
    "ModelMismatchError",
    "content_id",
    "FINGERPRINT_PROPERTY",
    "MODEL_PROPERTY",
    "ID_FIELD",
    "VECTOR_FIELD",
    "MODALITY_FIELD",
    "SOURCE_FIELD",
    "SPARSE_FIELD",
    "SPARSE_FINGERPRINT_PROPERTY",
    "TEXT_FIELD",
    "__version__",
]
