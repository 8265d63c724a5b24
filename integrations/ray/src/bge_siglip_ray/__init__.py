"""BGE-SigLIP on Ray Data: the same vectors at any scale, into any of the stores.

    import ray
    from bge_siglip_ray import WRITE_TASK_ARGS, QdrantDatasink, embed_dataset

    ds = ray.data.read_binary_files("photos/", include_paths=True)         # columns: bytes, path
    ds = embed_dataset(ds, "my-model", image_column="bytes", id_column="id",
                       concurrency=4, num_gpus=1, batch_size=64)           # + embedding, error, id
    ds.write_datasink(QdrantDatasink("photos", "my-model", url="http://localhost:6333"),
                      ray_remote_args=WRITE_TASK_ARGS)

``bge-siglip ingest SOURCE --into TARGET [--ray [ADDRESS]]`` does the same from the command line. Names are loaded
on first use, so ``bge-siglip --help`` does not import Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "embed_dataset": "embed",
    "Columns": "embed",
    "StoreDatasink": "sinks",
    "QdrantDatasink": "sinks",
    "ChromaDatasink": "sinks",
    "MilvusDatasink": "sinks",
    "LanceDBDatasink": "sinks",
    "MODEL_OPTIONS": "sinks",
    "SPARSE_TYPE": "embed",
    "multivector_type": "embed",
    "sparse_from_arrow": "embed",
    "quiet_ray_data": "quiet",
    "Target": "sinks",
    "WriteResult": "sinks",
    "WRITE_TASK_ARGS": "sinks",
    "RowColumns": "sinks",
    "open_writer": "sinks",
    "ingest": "ingestion",
    "IngestOptions": "ingestion",
    "IngestReport": "ingestion",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bge_siglip_ray' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
