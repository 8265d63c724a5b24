"""Chroma adapter for BGE-SigLIP.

Importing this package registers :class:`BGESigLIPEmbeddingFunction` with Chroma under the name ``"bge-siglip"``
and :class:`BGESigLIPSparseEmbeddingFunction` (BGE-M3's sparse text vectors, for a collection schema's sparse
index) under ``"bge-siglip-sparse"``, so Chroma rebuilds them from a collection's stored config in any process, and
installs the checks of :mod:`bge_siglip_chroma._guards` (a collection keeps one model, for each function;
``update(uris=...)`` re-embeds).
"""

from . import _guards
from .embedding_function import NAME, BGESigLIPEmbeddingFunction, ImageURI, ImageURILoader
from .sparse_function import SPARSE_NAME, BGESigLIPSparseEmbeddingFunction

__version__ = "0.1.0"

__all__ = ["BGESigLIPEmbeddingFunction", "BGESigLIPSparseEmbeddingFunction", "ImageURI", "ImageURILoader", "NAME",
           "SPARSE_NAME", "__version__"]

_guards.install()
