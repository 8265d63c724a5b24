"""``BGESigLIPEmbeddingFunction``: BGE-SigLIP as a registered, persisted Chroma embedding function.

Chroma stores ``{"name": "bge-siglip", "type": "known", "config": get_config()}`` with the collection. When a later
process calls ``client.get_collection("photos")`` without an embedding function, Chroma looks the name up in
``known_embedding_functions`` (filled by importing this module) and calls :meth:`build_from_config`. Every vector
comes from the core :class:`~bge_siglip_vectorizer.Vectorizer`; this module only routes items and keeps the config.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from chromadb.api.types import URI, DataLoader, Embeddable, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import known_embedding_functions, register_embedding_function

from bge_siglip_vectorizer import (
    InvalidInputError,
    ModelMismatchError,
    Vectorizer,
    VectorizerOptions,
    model_reference,
    resolve_model_reference,
    shared_vectorizer,
    vector_option_names,
)

__all__ = ["BGESigLIPEmbeddingFunction", "ImageURI", "ImageURILoader", "NAME"]

#: The registry key stored in every collection's config. Namespaced so it cannot clash with Chroma's own names.
NAME = "bge-siglip"
# Every option of the core is an option of the function: derived, so a field the core adds is accepted here too.
_OPTION_TYPES: dict[str, Any] = {
    f.name: typing.get_type_hints(VectorizerOptions)[f.name] for f in dataclasses.fields(VectorizerOptions)
}
# Options that change the vectors are always written to the config (null = the default), so a reopened collection
# embeds as the one that wrote it even if a later release changes a default.
_VECTOR_OPTIONS = vector_option_names(VectorizerOptions)
_OWN_KEYS = ("model", "batch_size", "fingerprint")
_CONFIG_KEYS = frozenset(_OWN_KEYS) | frozenset(_OPTION_TYPES)


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

    def __init__(self, model: str | os.PathLike[str], *, batch_size: int = 32, **options: Any) -> None:
        unknown = sorted(set(options) - set(_OPTION_TYPES))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown options {unknown}; it takes batch_size and the "
                            f"core's VectorizerOptions: {sorted(_OPTION_TYPES)}")
        config: Dict[str, Any] = {"model": model_reference(model), "batch_size": batch_size}
        config.update({name: options.get(name) for name in _VECTOR_OPTIONS})
        config.update({name: value for name, value in options.items() if value is not None})
        self.validate_config(config)
        self.model: str = config["model"]
        self.batch_size: int = batch_size
        #: the core options this function was made with (stored in the config; None-valued ones mean "default")
        self.options: Dict[str, Any] = {name: config[name] for name in _OPTION_TYPES if name in config}
        # Eager, but cheap after the first time: shared_vectorizer keeps one model per (model, options) per process,
        # and Chroma calls build_from_config on every add/query of a reopened collection.
        self._vectorizer = shared_vectorizer(resolve_model_reference(self.model), **self.options)
        self.fingerprint: str = self._vectorizer.fingerprint

    @property
    def vectorizer(self) -> Vectorizer:
        """The process-wide shared core Vectorizer behind this function."""
        return self._vectorizer

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

    def get_config(self) -> Dict[str, Any]:
        # fingerprint: identifies the vector space, wherever the model directory lives (see build_from_config).
        return {"model": self.model, "batch_size": self.batch_size, **self.options, "fingerprint": self.fingerprint}

    @staticmethod
    def build_from_config(config: Dict[str, Any]) -> "BGESigLIPEmbeddingFunction":
        BGESigLIPEmbeddingFunction.validate_config(config)
        if not config.get("fingerprint"):
            # Every config this adapter stores names its model's fingerprint; without one nothing could be checked.
            raise ValueError(f"{NAME} config has no model fingerprint; it was not written by bge-siglip-chroma")
        options = {name: value for name, value in config.items() if name in _OPTION_TYPES}
        function = BGESigLIPEmbeddingFunction(config["model"], batch_size=config.get("batch_size", 32), **options)
        # E.g. the directory was retrained in place: its vectors would silently not match the stored ones.
        check_same_model(config, function.fingerprint, f"the collection embedded with {config['model']!r}",
                         hint="restore the model it was made with")
        return function

    @staticmethod
    def validate_config(config: Dict[str, Any]) -> None:
        """Raise ``ValueError`` unless ``config`` is one this version can rebuild exactly."""
        if not isinstance(config, dict):
            raise ValueError(f"{NAME} config must be a dict, got {type(config).__name__}")
        unknown = sorted(set(config) - _CONFIG_KEYS)
        if unknown:
            # A newer adapter or core may have added a setting that changes vectors: refuse rather than ignore it.
            raise ValueError(f"{NAME} config has unknown keys {unknown}; upgrade bge-siglip-chroma")
        model = config.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"{NAME} config 'model' must be a non-empty string, got {model!r}")
        fingerprint = config.get("fingerprint")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise ValueError(f"{NAME} config 'fingerprint' must be a string, got {fingerprint!r}")
        batch_size = config.get("batch_size")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"{NAME} config 'batch_size' must be a positive integer, got {batch_size!r}")
        options = {name: value for name, value in config.items() if name in _OPTION_TYPES}
        for name, value in options.items():
            if value is not None and not _has_type(value, _OPTION_TYPES[name]):
                raise ValueError(f"{NAME} config {name!r} must be {_OPTION_TYPES[name]}, got {value!r}")
        try:
            VectorizerOptions(**options)  # the core's own range and choice checks
        except ValueError as exc:
            raise ValueError(f"{NAME} config: {exc}") from None

    def validate_config_update(self, old_config: Dict[str, Any], new_config: Dict[str, Any]) -> None:
        """Options and the model's location may change; the model itself may not (stored vectors would no longer
        match). Models are compared by fingerprint, so a moved directory is accepted and a different model at the
        same path is refused with :class:`~bge_siglip_vectorizer.ModelMismatchError`."""
        check_same_model(old_config, new_config.get("fingerprint") or "", "this collection")


def check_same_model(stored_config: Dict[str, Any], fingerprint: str, where: str, hint: str = "") -> None:
    """``ModelMismatchError`` unless ``fingerprint`` is the one in a stored config (the guards' one comparison)."""
    stored = stored_config.get("fingerprint") or ""
    if stored != fingerprint:
        raise ModelMismatchError(where, stored, fingerprint, hint)


def _has_type(value: Any, annotation: Any) -> bool:
    # JSON scalars only (what Chroma stores): bool is not accepted for int/float, int is for float.
    allowed = typing.get_args(annotation) or (annotation,)
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int) and (int in allowed or float in allowed):
        return True
    return any(isinstance(value, t) for t in allowed if t in (float, str))


def _as_items(input: Any) -> list[Any]:
    # Iterating a str or a single HWC array would silently embed characters or pixel rows.
    if isinstance(input, (str, bytes)) or (isinstance(input, np.ndarray) and input.ndim < 4):
        raise InvalidInputError(f"expected a list of documents/images, got a single {type(input).__name__}")
    try:
        return list(input)
    except TypeError:
        raise InvalidInputError(f"expected a list of documents/images, got {type(input).__name__}") from None
