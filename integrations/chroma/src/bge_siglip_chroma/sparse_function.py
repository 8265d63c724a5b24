"""``BGESigLIPSparseEmbeddingFunction``: BGE-M3's sparse (lexical) text vectors as a registered Chroma sparse
embedding function.

Chroma 1.x keeps sparse functions in a collection's *schema*: a ``SparseVectorIndexConfig(embedding_function=f,
source_key=Key.DOCUMENT)`` under a metadata key makes Chroma compute ``f(documents)`` on ``add`` and store the
result under that key, and embed a string ``Knn(query="...", key=...)`` of the Search API with ``f.embed_query``.
The schema is persisted as ``{"name": "bge-siglip-sparse", "type": "known", "config": get_config()}`` and rebuilt
through ``sparse_known_embedding_functions`` (filled by importing this module) in every later process.

Local Chroma (``PersistentClient``, ``EphemeralClient``, ``chroma run``) in chromadb 1.5 refuses sparse vector
indexes, sparse metadata values and the Search API: those need Chroma Cloud (see the README). Every vector comes
from the core ``Vectorizer.encode_texts_sparse``; this module only converts them to Chroma's ``SparseVector``.
"""

from __future__ import annotations

import os
from typing import Any

from chromadb.api.types import Documents, SparseEmbeddingFunction, SparseVectors
from chromadb.base_types import SparseVector
from chromadb.utils.embedding_functions import register_sparse_embedding_function, sparse_known_embedding_functions

from bge_siglip_vectorizer import InvalidInputError

from ._model_function import ModelFunction, claim_name

__all__ = ["BGESigLIPSparseEmbeddingFunction", "SPARSE_NAME"]

#: The sparse registry key stored in a collection's schema.
SPARSE_NAME = "bge-siglip-sparse"

claim_name(sparse_known_embedding_functions, SPARSE_NAME, __name__, "BGESigLIPSparseEmbeddingFunction")


@register_sparse_embedding_function
class BGESigLIPSparseEmbeddingFunction(ModelFunction, SparseEmbeddingFunction[Documents]):
    """BGE-M3's lexical weights of each document: ``SparseVector(indices=token ids (ascending), values=weights)``,
    exactly ``Vectorizer.encode_texts_sparse`` (FlagEmbedding's ``BGEM3FlagModel`` sparse output).

    Args:
        model: a BGE-SigLIP model directory or hub id whose text tower has BGE-M3's sparse head (else
            ``MissingHeadError``); stored as a portable reference, as for :class:`BGESigLIPEmbeddingFunction`.
        batch_size: texts per forward pass.
        include_tokens: also give each vector's ``labels`` (the vocabulary pieces, ``Vectorizer.sparse_tokens``), as
            Chroma's own BM25 function does with the same option.
        **options: any field of the core's ``VectorizerOptions``; with the same model and options as the dense
            function, both share one model in memory.

    The config records the model's *sparse* fingerprint (``Vectorizer.fingerprints["sparse"]``: the head, the text
    tower, the vocabulary), so a rebuilt function whose model has other heads is a ``ModelMismatchError``.
    """

    NAME = SPARSE_NAME
    GRANULARITY = "sparse"
    EXTRA_KEYS = {"include_tokens": bool}

    def __init__(self, model: str | os.PathLike[str], *, batch_size: int = 32, include_tokens: bool = False,
                 **options: Any) -> None:
        self.include_tokens = bool(include_tokens)
        self._load(model, batch_size, options, {"include_tokens": self.include_tokens})

    @classmethod
    def from_dense(cls, function: Any, *, include_tokens: bool = False) -> "BGESigLIPSparseEmbeddingFunction":
        """The sparse function of a dense :class:`BGESigLIPEmbeddingFunction`'s model and options (e.g. of
        ``BGESigLIPEmbeddingFunction.from_collection(collection)``): the same model in memory."""
        return cls(function.model, batch_size=function.batch_size, include_tokens=include_tokens, **function.options)

    def __call__(self, input: Documents) -> SparseVectors:
        """One ``SparseVector`` per document, in order (a bad document: the core's ``InvalidTextError`` naming it)."""
        if isinstance(input, str):
            raise InvalidInputError("expected a list of documents, got a single str")
        embeddings = self._vectorizer.encode_texts_sparse(list(input), batch_size=self.batch_size)
        return [
            SparseVector(indices=e.indices.tolist(), values=e.values.tolist(),
                         labels=self._vectorizer.sparse_tokens(e) if self.include_tokens else None)
            for e in embeddings
        ]

    def embed_query(self, input: Documents) -> SparseVectors:
        """Query vectors: BGE-M3 weighs query and document tokens with the same head."""
        return self.__call__(input)

    @staticmethod
    def name() -> str:
        return SPARSE_NAME

    def _extra_config(self) -> dict[str, Any]:
        return {"include_tokens": self.include_tokens}

    def __repr__(self) -> str:
        return f"BGESigLIPSparseEmbeddingFunction({self.get_config()!r})"
