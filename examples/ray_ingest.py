"""Embed a folder of photos on a local Ray and write them into Qdrant local mode, then search with text.

    python examples/ray_ingest.py MODEL_DIR PHOTOS_DIR

(`bge-siglip make-tiny ./tiny` makes a small random model to try it with; its rankings mean nothing.)
"""

import sys

import ray
from qdrant_client import QdrantClient, models

from bge_siglip_qdrant import BGESigLIPQdrant
from bge_siglip_ray import WRITE_TASK_ARGS, QdrantDatasink, embed_dataset

model, photos = sys.argv[1], sys.argv[2]
ray.init()
ds = ray.data.read_binary_files(photos, include_paths=True)
ds = embed_dataset(ds, model, image_column="bytes", id_column="id", batch_size=16)
sink = QdrantDatasink("photos", model, path="./qdrant-ray-example")
ds.write_datasink(sink, ray_remote_args=WRITE_TASK_ARGS)
print(f"wrote {sink.result.written} photos, skipped {sink.result.failed}: {sink.result.errors[:3]}")

db = BGESigLIPQdrant(QdrantClient(path="./qdrant-ray-example"), model=model)
for hit in db.query_points("photos", query=models.Document(text="a dog on the beach", model="bge-siglip"),
                           limit=3).points:
    print(f"{hit.score:.3f}  {hit.payload['path']}")
