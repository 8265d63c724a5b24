"""``BGESigLIPEmbeddings``: BGE-SigLIP in LanceDB's embedding registry, under the name ``"bge-siglip"``.

    func = get_registry().get("bge-siglip").create(model="path/or/hub-id", device="cpu", batch_size=32)

LanceDB stores ``{"name": "bge-siglip", "model": <the create() arguments>, ...}`` in the table's schema metadata and
calls ``create(**model)`` again whenever a reopened table needs the function. The stored arguments are the core's
:func:`~bge_siglip_vectorizer.model_reference` of the model (an absolute path, a hub id, or
``$BGE_SIGLIP_MODEL_DIR/<name>`` for a directory under that folder) and its fingerprint, so a rebuilt function for a
directory that now holds another model refuses to load (:class:`~bge_siglip_vectorizer.ModelMismatchError`).

Every vector comes from the core ``Vectorizer``: a column of sources is encoded in batches of ``batch_size`` through
one ``encode_images`` / ``encode_texts`` call (LanceDB's own SigLIP / OpenCLIP functions run one forward per image).
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import numpy as np
from lancedb.embeddings import EmbeddingFunction, register
from pydantic import PrivateAttr

from bge_siglip_vectorizer import (
    ModelMismatchError,
    Vectorizer,
    model_reference,
    resolve_model_reference,
    shared_vectorizer,
)

#: The registry name (and what the table metadata records).
NAME = "bge-siglip"


@register(NAME)
class BGESigLIPEmbeddings(EmbeddingFunction):
    """BGE-SigLIP for LanceDB: the source column holds images (``source="image"``, the default: paths, ``file://`` /
    ``http(s)://`` / ``data:`` URIs, encoded bytes) or texts (``source="text"``); queries may be either — a ``str``
    is a text (any language), anything else (``PIL.Image``, ``pathlib.Path``, bytes) an image.

    Fields (all stored with the table): ``model`` (directory or hub id), ``device`` (``None``: the machine that
    opens the table chooses), ``batch_size``, ``max_num_patches`` (``None``: the model's saved value), ``source``
    and ``fingerprint`` (filled in by ``create``; checked when a table rebuilds the function).
    """

    model: str
    device: Optional[str] = None
    batch_size: int = 32
    max_num_patches: Optional[int] = None
    source: Literal["image", "text"] = "image"
    fingerprint: Optional[str] = None

    _vectorizer: Vectorizer = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        self.model = model_reference(self.model)
        # One model per process and options, however many tables and rebuilt functions (LanceDB rebuilds on open).
        self._vectorizer = shared_vectorizer(resolve_model_reference(self.model), device=self.device,
                                             max_num_patches=self.max_num_patches)
        actual = self._vectorizer.fingerprint
        if self.fingerprint is None:
            self.fingerprint = actual
        elif self.fingerprint != actual:
            raise ModelMismatchError(
                f"the table embedded by the model at {self.model!r}", self.fingerprint, actual,
                hint="that location now holds another model (e.g. retrained in place); restore the model",
            )

    @classmethod
    def create(cls, **kwargs: Any) -> "BGESigLIPEmbeddings":
        instance = super().create(**kwargs)
        # What LanceDB serialises (safe_model_dump) are these arguments: record the resolved location and the
        # fingerprint, unless the model was given as a registry variable ("$var:name"), which stays a variable.
        recorded = dict(kwargs)
        if not str(kwargs.get("model", "")).startswith("$var:"):
            recorded["model"] = instance.model
        recorded["fingerprint"] = instance.fingerprint
        instance._original_args = recorded
        return instance

    @property
    def vectorizer(self) -> Vectorizer:
        """The process-wide shared core Vectorizer behind this function."""
        return self._vectorizer

    def ndims(self) -> int:
        return self._vectorizer.dim

    def compute_source_embeddings(self, items: Any, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        """One float32 vector per source value (``pyarrow`` arrays and lists), in batches; a bad item raises the
        core's typed error naming its row."""
        items = self.sanitize_input(items)
        if self.source == "text":
            vectors = self._vectorizer.encode_texts(items, batch_size=self.batch_size)
        else:
            vectors = self._vectorizer.encode_images(items, batch_size=self.batch_size)
        return list(vectors)

    def compute_query_embeddings(self, query: Any, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        """``[vector]`` for one query: a ``str`` is a text, anything else an image."""
        if isinstance(query, str):
            return list(self._vectorizer.encode_texts([query]))
        return list(self._vectorizer.encode_images([query]))

    def sanitize_input(self, items: Any) -> list[Any]:
        # Like LanceDB's own functions: one str or one encoded image (bytes) is a list of one.
        items = super().sanitize_input(items)
        return [items] if isinstance(items, bytes) else items

    # A local model does not fail transiently: LanceDB's default retry (7 times, exponential back-off) would only
    # delay a bad item's error by minutes and then replace it with a generic Exception.
    def compute_source_embeddings_with_retry(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        return self.compute_source_embeddings(*args, **kwargs)

    def compute_query_embeddings_with_retry(self, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        return self.compute_query_embeddings(*args, **kwargs)
