"""BGE-SigLIP for Weaviate.

Two ways to use it:

* **Module mode** — run ``bge-siglip serve`` (a drop-in ``multi2vec-clip`` inference server with cross-request
  batching; :mod:`.server`, :mod:`.app`) and create collections with the stock
  ``Configure.Vectors.multi2vec_clip`` config (:func:`multi2vec_clip_config`, :func:`create_multi2vec_collection`).
* **Client-side mode** — for Weaviate without the module: :class:`ClientSideCollection` computes vectors in this
  process and inserts / queries with ``vector=`` and ``near_vector``.

Names are imported lazily so ``bge-siglip serve`` does not pay for importing the Weaviate client and vice versa.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "multi2vec_clip_config": ".schema",
    "multi2vec_collection_arguments": ".schema",
    "create_multi2vec_collection": ".schema",
    "ClientSideCollection": ".client_side",
    "InsertError": ".client_side",
    "self_provided_collection_arguments": ".client_side",
    "ServerSettings": ".settings",
    "create_app": ".app",
    "DynamicBatcher": ".batching",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bge_siglip_weaviate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
