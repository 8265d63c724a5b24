"""``BGESigLIPEmbeddingFunction``: BGE-SigLIP as a registered, persisted Chroma embedding function.

Chroma stores ``{"name": "bge-siglip", "type": "known", "config": get_config()}`` with the collection. When a later
process calls ``client.get_collection("photos")`` without an embedding function, Chroma looks the name up in
``known_embedding_functions`` (filled by importing this module) and calls :meth:`build_from_config`. Every vector
comes from the core :class:`~bge_siglip_vectorizer.Vectorizer`; this module only routes items and keeps the config.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from chromadb.api.types import URI, DataLoader, Embeddable, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import known_embedding_functions, register_embedding_function

from bge_siglip_vectorizer import InvalidInputError, Vectorizer, model_reference, shared_vectorizer

__all__ = ["BGESigLIPEmbeddingFunction", "ImageURI", "ImageURILoader", "NAME"]

#: The registry key stored in every collection's config. Namespaced so it cannot clash with Chroma's own names.
NAME = "bge-siglip"
_CONFIG_KEYS = frozenset({"model", "device", "batch_size", "max_num_patches", "fingerprint"})


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


# register_embedding_function silently overwrites; refuse to replace someone else's function under our name.
_registered = known_embedding_functions.get(NAME)
if _registered is not None and (_registered.__module__, _registered.__qualname__) != (
    __name__,
    "BGESigLIPEmbeddingFunction",
):
    raise RuntimeError(f"Chroma embedding function name {NAME!r} is already taken by {_registered!r}")


@register_embedding_function
class BGESigLIPEmbeddingFunction(EmbeddingFunction[Embeddable]):
    """Embeds Chroma documents (text tower) and images (vision tower) into one shared, L2-normalised space.

    ``input`` may mix items: ``str`` -> text; numpy arrays (what ``images=`` and Chroma's ``ImageLoader`` give),
    :class:`ImageURI` (from :class:`ImageURILoader`), bytes, ``PIL.Image`` and paths -> image. The whole list is
    encoded in batches by one ``encode_mixed`` call; a bad item raises the core's typed error naming its index,
    before Chroma writes anything.

    Args:
        model: a BGE-SigLIP model directory or hub id (stored in the collection config; local paths are stored
            absolute so another working directory or process finds them).
        device: ``"cpu"``, ``"cuda"``, ... ; ``None`` lets the core choose (stored as ``null``, so a reopened
            collection picks the best device of the machine that opens it).
        batch_size: items per forward pass.
        max_num_patches: image detail budget (``None``: the model's saved value).
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        device: Optional[str] = None,
        batch_size: int = 32,
        max_num_patches: Optional[int] = None,
    ) -> None:
        config = {
            "model": model_reference(model),
            "device": device,
            "batch_size": batch_size,
            "max_num_patches": max_num_patches,
        }
        self.validate_config(config)
        self.model: str = config["model"]
        self.device = device
        self.batch_size = batch_size
        self.max_num_patches = max_num_patches
        # Eager, but cheap after the first time: shared_vectorizer keeps one model per (model, options) per process,
        # and Chroma calls build_from_config on every add/query of a reopened collection.
        options = {k: v for k, v in (("device", device), ("max_num_patches", max_num_patches)) if v is not None}
        self._vectorizer = shared_vectorizer(self.model, **options)
        self.fingerprint = self._vectorizer.fingerprint

    @property
    def vectorizer(self) -> Vectorizer:
        """The process-wide shared core Vectorizer behind this function."""
        return self._vectorizer

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

    def get_config(self) -> Dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "batch_size": self.batch_size,
            "max_num_patches": self.max_num_patches,
            # Identifies the vector space, wherever the model directory lives (see build_from_config).
            "fingerprint": self.fingerprint,
        }

    @staticmethod
    def build_from_config(config: Dict[str, Any]) -> "BGESigLIPEmbeddingFunction":
        BGESigLIPEmbeddingFunction.validate_config(config)
        if not config.get("fingerprint"):
            # Every config this adapter stores names its model's fingerprint; without one nothing could be checked.
            raise ValueError(f"{NAME} config has no model fingerprint; it was not written by bge-siglip-chroma")
        function = BGESigLIPEmbeddingFunction(
            model=config["model"],
            device=config.get("device"),
            batch_size=config.get("batch_size", 32),
            max_num_patches=config.get("max_num_patches"),
        )
        stored = config["fingerprint"]
        if stored != function.fingerprint:
            # E.g. the directory was retrained in place: its vectors would silently not match the stored ones.
            raise ValueError(
                f"the model at {config['model']!r} is not the one this collection was embedded with (fingerprint "
                f"{function.fingerprint[:12]} != {stored[:12]}); re-embed into a new collection, or restore the model"
            )
        return function

    @staticmethod
    def validate_config(config: Dict[str, Any]) -> None:
        """Raise ``ValueError`` unless ``config`` is one this version can rebuild exactly."""
        if not isinstance(config, dict):
            raise ValueError(f"{NAME} config must be a dict, got {type(config).__name__}")
        unknown = sorted(set(config) - _CONFIG_KEYS)
        if unknown:
            # A newer adapter may have added a setting that changes vectors: refuse rather than silently ignore it.
            raise ValueError(f"{NAME} config has unknown keys {unknown}; upgrade bge-siglip-chroma")
        model = config.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"{NAME} config 'model' must be a non-empty string, got {model!r}")
        device = config.get("device")
        if device is not None and not isinstance(device, str):
            raise ValueError(f"{NAME} config 'device' must be a string or null, got {device!r}")
        fingerprint = config.get("fingerprint")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise ValueError(f"{NAME} config 'fingerprint' must be a string, got {fingerprint!r}")
        for key in ("batch_size", "max_num_patches"):
            value = config.get(key)
            if value is None:
                continue  # absent or null: the default
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{NAME} config {key!r} must be a positive integer, got {value!r}")

    def validate_config_update(self, old_config: Dict[str, Any], new_config: Dict[str, Any]) -> None:
        """Device, batch size, patch budget and the model's location may change; the model itself may not (stored
        vectors would no longer match). Models are compared by fingerprint, so a moved directory is accepted and
        a different model at the same path is refused."""
        if new_config.get("fingerprint") != old_config.get("fingerprint"):
            raise ValueError(
                f"cannot change the model of a {NAME} collection from {old_config.get('model')!r} to "
                f"{new_config.get('model')!r}: its stored vectors would no longer match; re-embed into a new collection"
            )


def _as_items(input: Any) -> list[Any]:
    # Iterating a str or a single HWC array would silently embed characters or pixel rows.
    if isinstance(input, (str, bytes)) or (isinstance(input, np.ndarray) and input.ndim < 4):
        raise InvalidInputError(f"expected a list of documents/images, got a single {type(input).__name__}")
    try:
        return list(input)
    except TypeError:
        raise InvalidInputError(f"expected a list of documents/images, got {type(input).__name__}") from None
