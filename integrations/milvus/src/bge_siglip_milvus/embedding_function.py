"""``BGESigLIPEmbeddingFunction``: BGE-SigLIP in the shape of pymilvus' model library (``pymilvus.model``).

Like ``SentenceTransformerEmbeddingFunction`` or ``BGEM3EmbeddingFunction`` it subclasses
``pymilvus.model.base.BaseEmbeddingFunction``: ``encode_documents`` / ``encode_queries`` / ``__call__`` take texts
and return one float32 vector per text, and ``dim`` is the vector size to give a ``FLOAT_VECTOR`` field. BGE-SigLIP
adds ``encode_images``: images land in the same space, so texts find images. Every vector comes from the core
``Vectorizer`` (batched, sorted, de-duplicated); this module only adapts the call shape.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List

import numpy as np
from pymilvus.model.base import BaseEmbeddingFunction

from bge_siglip_vectorizer import Vectorizer, model_reference, resolve_model_reference, shared_vectorizer


class BGESigLIPEmbeddingFunction(BaseEmbeddingFunction):
    """Dense BGE-SigLIP vectors for Milvus: texts in 100+ languages and images in one L2-normalised space.

    Args:
        model: a BGE-SigLIP model directory or hub id (loaded once per process and options via the core's
            ``shared_vectorizer``).
        vectorizer: an already loaded core ``Vectorizer`` instead of ``model``.
        device: ``"cpu"``, ``"cuda"``, ... (default: the core's choice).
        batch_size: items per forward pass. ``show_progress``: the core's progress bar (``None``: on a terminal).
        vectorizer_options: further options of ``Vectorizer.from_pretrained`` (``max_num_patches``, ``dtype``,
            ``backend``, ``max_image_pixels``, ``allow_urls``, ...).

    BGE-M3 dense retrieval uses no query instruction, so ``encode_queries`` and ``encode_documents`` are the same
    text tower.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        vectorizer: Vectorizer | None = None,
        device: str | None = None,
        batch_size: int = 32,
        show_progress: bool | None = None,
        **vectorizer_options: Any,
    ) -> None:
        if (model is None) == (vectorizer is None):
            raise ValueError("pass exactly one of `model` (a path or hub id) and `vectorizer`")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if vectorizer is None:
            vectorizer = shared_vectorizer(resolve_model_reference(os.fspath(model)), device=device,
                                           **vectorizer_options)
        elif device is not None or vectorizer_options:
            raise ValueError("device and vectorizer options belong to the Vectorizer you passed")
        self.vectorizer = vectorizer
        #: What collections record as the model (``model_name`` is the attribute pymilvus' functions have).
        self.model_name: str | None = model_reference(model) if model is not None else vectorizer.components.source
        self.batch_size = batch_size
        self.show_progress = show_progress

    @property
    def dim(self) -> int:
        """Size of the dense vectors (the ``dim`` of a ``FLOAT_VECTOR`` field)."""
        return self.vectorizer.dim

    @property
    def fingerprint(self) -> str:
        """Identifies the vector space; collections record it and refuse other models."""
        return self.vectorizer.fingerprint

    @property
    def sparse_dim(self) -> int | None:
        """Size of the sparse (lexical) vectors' space, the vocabulary; ``None`` for a text tower without BGE-M3's
        sparse head."""
        return self.vectorizer.sparse_dim

    def __call__(self, texts: List[str]) -> List[np.ndarray]:
        return self.encode_documents(texts)

    def encode_documents(self, documents: List[str]) -> List[np.ndarray]:
        """One float32 vector per text (any language; truncated at the text tower's limit)."""
        return list(self.vectorizer.encode_texts(documents, batch_size=self.batch_size,
                                                 show_progress=self.show_progress))

    def encode_queries(self, queries: List[str]) -> List[np.ndarray]:
        """Query vectors: the same text tower as documents."""
        return self.encode_documents(queries)

    def encode_sparse(self, texts: List[str]) -> List[Dict[int, float]]:
        """BGE-M3's lexical weights per text as ``{token_id: weight}``: what a ``SPARSE_FLOAT_VECTOR`` field and a
        sparse ``AnnSearchRequest`` take (needs the sparse head, else ``MissingHeadError``)."""
        return [embedding.to_dict() for embedding in self.vectorizer.encode_texts_sparse(
            texts, batch_size=self.batch_size, show_progress=self.show_progress)]

    def encode_images(self, images: Iterable[Any]) -> List[np.ndarray]:
        """One float32 vector per image: paths, URLs, bytes, base64 / data URIs, PIL images, uint8 arrays."""
        return list(self.vectorizer.encode_images(images, batch_size=self.batch_size,
                                                  show_progress=self.show_progress))

    def __repr__(self) -> str:
        return f"BGESigLIPEmbeddingFunction(model_name={self.model_name!r}, dim={self.dim}, batch_size={self.batch_size})"
