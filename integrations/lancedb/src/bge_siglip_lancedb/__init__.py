"""BGE-SigLIP for LanceDB: ``import bge_siglip_lancedb`` registers ``"bge-siglip"`` in LanceDB's embedding registry.

    import lancedb
    import bge_siglip_lancedb
    from lancedb.embeddings import get_registry

    func = get_registry().get("bge-siglip").create(model="path/or/hub-id", device="cpu", batch_size=32)
    db = lancedb.connect("./db")
    table = bge_siglip_lancedb.create_table(db, "photos", func)   # id, modality, source, text, vector
    table.add([{"id": "cat", "source": "cat.jpg"}])                # LanceDB embeds the image
    bge_siglip_lancedb.add_images(table, "photos/")                 # bulk: batches, progress, content ids, upsert
    bge_siglip_lancedb.add_texts(table, ["ein Hund am Strand"])
    table.search("a dog on the beach").limit(5).to_list()           # the query is embedded too; or a PIL image
"""

from bge_siglip_vectorizer import IngestResult, ModelMismatchError, content_id

from .embeddings import NAME, BGESigLIPEmbeddings
from .table import add_images, add_texts, create_table, schema, stored_fingerprints, table_function

__version__ = "0.1.0"

__all__ = [
    "BGESigLIPEmbeddings",
    "NAME",
    "schema",
    "create_table",
    "add_images",
    "add_texts",
    "table_function",
    "stored_fingerprints",
    "IngestResult",
    "ModelMismatchError",
    "content_id",
    "__version__",
]
