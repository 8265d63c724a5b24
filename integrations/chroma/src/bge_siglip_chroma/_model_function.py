"""What the dense and the sparse Chroma functions share: the model behind them and the config Chroma persists.

Chroma stores ``{"name": ..., "type": "known", "config": get_config()}`` with the collection (the dense function in
its configuration, a sparse one in its schema) and calls the registered class's ``build_from_config`` in every
later process. The config names the model (a portable reference), every core option given, the options that
change vectors even at their default, and the model's fingerprint for the function's granularity, so a rebuilt
function embeds exactly as the one that wrote the collection, or refuses.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, ClassVar, Dict

from bge_siglip_vectorizer import (
    MissingHeadError,
    ModelMismatchError,
    Vectorizer,
    VectorizerOptions,
    model_reference,
    resolve_model_reference,
    shared_vectorizer,
    vector_option_names,
)

# Every option of the core is an option of the functions: derived, so a field the core adds is accepted here too.
_OPTION_TYPES: dict[str, Any] = {
    f.name: typing.get_type_hints(VectorizerOptions)[f.name] for f in dataclasses.fields(VectorizerOptions)
}
# Options that change the vectors are always written to the config (null = the default), so a reopened collection
# embeds as the one that wrote it even if a later release changes a default.
_VECTOR_OPTIONS = vector_option_names(VectorizerOptions)
_OWN_KEYS = ("model", "batch_size", "fingerprint")


class ModelFunction:
    """The model, options and persisted config of a function of ours (mixed into the Chroma function classes)."""

    #: the registry name stored in the collection (each subclass's ``name()``)
    NAME: ClassVar[str]
    #: which of the model's ``fingerprints`` the config records and a rebuilt function must match
    GRANULARITY: ClassVar[str] = "dense"
    #: the subclass's own config keys besides model, batch_size, fingerprint and the core options: name -> type
    EXTRA_KEYS: ClassVar[dict[str, type]] = {}

    def _load(self, model: str | os.PathLike[str], batch_size: int, options: Dict[str, Any],
              extra: Dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(_OPTION_TYPES))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unknown options {unknown}; it takes batch_size, "
                            f"{', '.join(self.EXTRA_KEYS) + ', ' if self.EXTRA_KEYS else ''}and the core's "
                            f"VectorizerOptions: {sorted(_OPTION_TYPES)}")
        config: Dict[str, Any] = {"model": model_reference(model), "batch_size": batch_size}
        config.update({name: options.get(name) for name in _VECTOR_OPTIONS})
        config.update({name: value for name, value in options.items() if value is not None})
        config.update(extra)
        self.validate_config(config)
        self.model: str = config["model"]
        self.batch_size: int = batch_size
        #: the core options this function was made with (stored in the config; None-valued ones mean "default")
        self.options: Dict[str, Any] = {name: config[name] for name in _OPTION_TYPES if name in config}
        # Eager, but cheap after the first time: shared_vectorizer keeps one model per (model, options) per process
        # (so a dense and a sparse function of one model share it), and Chroma calls build_from_config on every
        # add/query of a reopened collection.
        self._vectorizer = shared_vectorizer(resolve_model_reference(self.model), **self.options)
        fingerprint = self._vectorizer.fingerprints.get(self.GRANULARITY)
        if fingerprint is None:
            raise MissingHeadError(
                f"{self.NAME} needs the model's {self.GRANULARITY} text output; {self.model!r} gives "
                f"{', '.join(self._vectorizer.text_outputs)} (its text tower lacks BGE-M3's head for it)"
            )
        #: the model's fingerprint for this function's granularity (stored in the config, compared on rebuild)
        self.fingerprint: str = fingerprint

    @property
    def vectorizer(self) -> Vectorizer:
        """The process-wide shared core Vectorizer behind this function."""
        return self._vectorizer

    def _extra_config(self) -> Dict[str, Any]:
        return {}

    def get_config(self) -> Dict[str, Any]:
        # fingerprint: identifies the vector space, wherever the model directory lives (see build_from_config).
        return {"model": self.model, "batch_size": self.batch_size, **self.options, **self._extra_config(),
                "fingerprint": self.fingerprint}

    @classmethod
    def build_from_config(cls, config: Dict[str, Any]) -> Any:
        cls.validate_config(config)
        if not config.get("fingerprint"):
            # Every config this adapter stores names its model's fingerprint; without one nothing could be checked.
            raise ValueError(f"{cls.NAME} config has no model fingerprint; it was not written by bge-siglip-chroma")
        options = {name: value for name, value in config.items() if name in _OPTION_TYPES}
        extra = {name: config[name] for name in cls.EXTRA_KEYS if name in config}
        function = cls(config["model"], batch_size=config.get("batch_size", 32), **extra, **options)
        # E.g. the directory was retrained in place: its vectors would silently not match the stored ones.
        check_same_model(config, function.fingerprint, f"the collection embedded with {config['model']!r}",
                         hint="restore the model it was made with")
        return function

    @classmethod
    def validate_config(cls, config: Dict[str, Any]) -> None:
        """Raise ``ValueError`` unless ``config`` is one this version can rebuild exactly."""
        if not isinstance(config, dict):
            raise ValueError(f"{cls.NAME} config must be a dict, got {type(config).__name__}")
        unknown = sorted(set(config) - set(_OWN_KEYS) - set(_OPTION_TYPES) - set(cls.EXTRA_KEYS))
        if unknown:
            # A newer adapter or core may have added a setting that changes vectors: refuse rather than ignore it.
            raise ValueError(f"{cls.NAME} config has unknown keys {unknown}; upgrade bge-siglip-chroma")
        model = config.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"{cls.NAME} config 'model' must be a non-empty string, got {model!r}")
        fingerprint = config.get("fingerprint")
        if fingerprint is not None and not isinstance(fingerprint, str):
            raise ValueError(f"{cls.NAME} config 'fingerprint' must be a string, got {fingerprint!r}")
        batch_size = config.get("batch_size")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"{cls.NAME} config 'batch_size' must be a positive integer, got {batch_size!r}")
        for name, kind in cls.EXTRA_KEYS.items():
            if name in config and not _has_type(config[name], kind):
                raise ValueError(f"{cls.NAME} config {name!r} must be {kind.__name__}, got {config[name]!r}")
        options = {name: value for name, value in config.items() if name in _OPTION_TYPES}
        for name, value in options.items():
            if value is not None and not _has_type(value, _OPTION_TYPES[name]):
                raise ValueError(f"{cls.NAME} config {name!r} must be {_OPTION_TYPES[name]}, got {value!r}")
        try:
            VectorizerOptions(**options)  # the core's own range and choice checks
        except ValueError as exc:
            raise ValueError(f"{cls.NAME} config: {exc}") from None

    def validate_config_update(self, old_config: Dict[str, Any], new_config: Dict[str, Any]) -> None:
        """Options and the model's location may change; the model itself may not (stored vectors would no longer
        match). Models are compared by fingerprint, so a moved directory is accepted and a different model at the
        same path is refused with :class:`~bge_siglip_vectorizer.ModelMismatchError`."""
        check_same_model(old_config, new_config.get("fingerprint") or "", "this collection")


def claim_name(registry: Dict[str, Any], name: str, module: str, qualname: str) -> None:
    """Chroma's ``register_*_embedding_function`` silently overwrites: refuse to replace someone else's function
    registered under our name (re-importing our own module is fine)."""
    registered = registry.get(name)
    if registered is not None and (registered.__module__, registered.__qualname__) != (module, qualname):
        raise RuntimeError(f"Chroma embedding function name {name!r} is already taken by {registered!r}")


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
