"""Chroma adapter for BGE-SigLIP.

Importing this package registers :class:`BGESigLIPEmbeddingFunction` with Chroma under the name ``"bge-siglip"``,
so ``client.get_collection(name)`` rebuilds it from the collection's stored config in any process, and installs
the checks of :mod:`bge_siglip_chroma._guards` (a collection keeps one model; ``update(uris=...)`` re-embeds).
"""

from . import _guards
from .embedding_function import NAME, BGESigLIPEmbeddingFunction, ImageURI, ImageURILoader

__version__ = "0.1.0"

__all__ = ["BGESigLIPEmbeddingFunction", "ImageURI", "ImageURILoader", "NAME", "__version__"]

_guards.install()
