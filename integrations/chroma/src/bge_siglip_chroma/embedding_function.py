"""``BGESigLIPEmbeddingFunction``: BGE-SigLIP as a registered, persisted Chroma embedding function.

Chroma stores ``{"name": "bge-siglip", "type": "known", "config": get_config()}`` with the collection. When a later
process calls ``client.get_collection("photos")`` without an embedding function, Chroma looks the name up in
``known_embedding_functions`` (filled by importing this module) and calls :meth:`build_from_config`. Every vector
comes from the core :class:`~bge_siglip_vectorizer.Vectorizer`; this module only routes items and keeps the config.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence

import numpy as np
from chromadb.api.types import URI, DataLoader, Embeddable, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import known_embedding_functions, register_embedding_function

from bge_siglip_vectorizer import InvalidInputError

from ._model_function import ModelFunction, check_same_model, claim_name

__all__ = ["BGESigLIPEmbeddingFunction", "ImageURI", "ImageURILoader", "NAME", "check_same_model"]

#: The registry key stored in every collection's config. Namespaced so it cannot clash with Chroma's own names.
NAME = "bge-siglip"


class ImageURI(str):
    """A string naming an image (file path, ``file://`` or ``http(s)://`` URL, ``data:`` URI).

    Plain ``str`` items are documents and go to the text tower; ``ImageURI`` items go to the vision tower.
    """

    __slots__ = ()


class ImageURILoader(DataLoader[List[Optional[ImageURI]]]):
    """A Chroma data loader that hands URIs to the core undecoded (tagged as :class:`ImageURI`).

    Compared with ``chromadb.utils.data_loaders.ImageLoader`` (which returns ``np.array(PIL.Image.open(uri))``),
    the core then does the decoding: EXIF orientation, palette/16-bit/alpha handling, ``http(s)``/``data:`` URIs,
    the pixel limit, and a typed ``InvalidImageError`` naming the bad item instead of a bare PIL exception.
    With ``include=["data"]`` in ``get``/``query`` the "data" returned is the URIs themselves.
    """

    def __call__(self, uris: Sequence[Optional[URI]]) -> List[Optional[ImageURI]]:
        # None stays None: the embedding function then raises the core's typed error naming that item.
        return [None if uri is None else ImageURI(uri) for uri in uris]


claim_name(known_embedding_functions, NAME, __name__, "BGESigLIPEmbeddingFunction")


@register_embedding_function
class BGESigLIPEmbeddingFunction(ModelFunction, EmbeddingFunction[Embeddable]):
    """Embeds Chroma documents (text tower) and images (vision tower) into one shared, L2-normalised space.

    ``input`` may mix items: ``str`` -> text; numpy arrays (what ``images=`` and Chroma's ``ImageLoader`` give),
    :class:`ImageURI` (from :class:`ImageURILoader`), bytes, ``PIL.Image`` and paths -> image. The whole list is
    encoded in batches by one ``encode_mixed`` call; a bad item raises the core's typed error naming its index,
    before Chroma writes anything.

    Args:
        model: a BGE-SigLIP model directory or hub id. Stored in the collection config as a portable reference
            (:func:`bge_siglip_vectorizer.model_reference`): a hub id as given, ``$BGE_SIGLIP_MODEL_DIR/<name>``
            for a directory inside that folder (resolved on the machine that opens the collection), otherwise the
            absolute path.
        batch_size: items per forward pass.
        **options: any field of the core's :class:`~bge_siglip_vectorizer.VectorizerOptions` (``device``,
            ``max_num_patches``, ``dtype``, ``backend``, ``max_image_pixels``, ``allow_urls``, ...). The ones given
            are stored in the config, so a reopened collection decodes and embeds the same way; options that change
            vectors (``max_num_patches``, ...) are stored even when left at their default (``null``).
    """

    NAME = NAME

    def __init__(self, model: str | os.PathLike[str], *, batch_size: int = 32, **options: Any) -> None:
        self._load(model, batch_size, options, {})

    @classmethod
    def from_collection(cls, collection: Any) -> "BGESigLIPEmbeddingFunction":
        """The function of a collection (e.g. one reopened with ``get_collection(name)``), rebuilt from its stored
        config: call it yourself for mixed batches (``embeddings=ef(items)``)."""
        function = getattr(collection, "_embedding_function", None)
        if not isinstance(function, cls):
            function = collection.configuration.get("embedding_function")
        if not isinstance(function, cls):
            raise ValueError(f"collection {collection.name!r} does not use {NAME} (its function: {function!r})")
        return function

    def __call__(self, input: Embeddable) -> Embeddings:
        """One float32 vector per item, in order; Chroma calls this for ``add``/``upsert``/``update``."""
        items = _as_items(input)
        kinds = ["image" if isinstance(item, ImageURI) or not isinstance(item, str) else "text" for item in items]
        vectors = self._vectorizer.encode_mixed(items, kinds, batch_size=self.batch_size)  # type: ignore[arg-type]
        return list(vectors)  # one 1-D float32 array per item: what Chroma's validate_embeddings expects

    def embed_query(self, input: Embeddable) -> Embeddings:
        """Query vectors: the same towers as documents (BGE-M3 dense retrieval uses no query instruction)."""
        return self.__call__(input)

    def __repr__(self) -> str:
        return f"BGESigLIPEmbeddingFunction({self.get_config()!r})"

    # ------------------------------------------------------------------------------------- Chroma config protocol
    @staticmethod
    def name() -> str:
        return NAME

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> List[Space]:
        # Vectors are unit length, so all three rank identically.
        return ["cosine", "ip", "l2"]

    def is_legacy(self) -> bool:
        return False


def _as_items(input: Any) -> list[Any]:
    # Iterating a str or a single HWC array would silently embed characters or pixel rows.
    if isinstance(input, (str, bytes)) or (isinstance(input, np.ndarray) and input.ndim < 4):
        raise InvalidInputError(f"expected a list of documents/images, got a single {type(input).__name__}")
    try:
        return list(input)
    except TypeError:
        raise InvalidInputError(f"expected a list of documents/images, got {type(input).__name__}") from None
