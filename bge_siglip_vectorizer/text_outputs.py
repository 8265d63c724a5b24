"""BGE-M3's three text granularities: the types ``Vectorizer.encode_texts_*`` return, and the per-text
post-processing that turns a batch's per-token head outputs into them.

The post-processing is FlagEmbedding 1.4.2's ``M3Embedder`` (``_process_token_weights``, ``_process_colbert_vecs``):

* **sparse** (lexical): of each text's real tokens, drop the CLS, EOS, PAD and UNK token ids, drop weights that are
  not > 0, and keep the maximum weight per token id. FlagEmbedding returns ``{str(token_id): weight}``; we return
  the same pairs as arrays sorted by token id (what qdrant's ``SparseVector``, Chroma's ``SparseVector`` and scipy's
  CSR rows take as they are);
* **multi-vector** (ColBERT): the unit vectors of positions ``1 .. n-1`` of a text of ``n`` tokens, i.e. CLS
  dropped and the final ``</s>`` kept: ``n - 1`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SparseEmbedding", "TextEncodings", "sparse_excluded_ids", "sparse_embedding", "multivector_rows"]

#: The special tokens FlagEmbedding leaves out of sparse embeddings (``M3Embedder._process_token_weights``).
SPARSE_EXCLUDED_TOKENS = ("cls_token", "eos_token", "pad_token", "unk_token")


@dataclass(frozen=True, eq=False)
class SparseEmbedding:
    """One text's lexical weights: ``indices`` (int64 token ids, ascending, unique) and ``values`` (float32, > 0).

    The coordinates are the text tower's vocabulary (``Vectorizer.sparse_dim`` of them): qdrant
    ``models.SparseVector(indices=e.indices.tolist(), values=e.values.tolist())``, a scipy/Milvus CSR row
    ``csr_array((e.values, e.indices, [0, len(e)]), shape=(1, vec.sparse_dim))``.
    """

    indices: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        indices = np.asarray(self.indices, dtype=np.int64)
        values = np.asarray(self.values, dtype=np.float32)
        if indices.ndim != 1 or indices.shape != values.shape:
            raise ValueError(f"indices and values must be 1-D and of one length, got {indices.shape} and {values.shape}")
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return len(self.indices)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SparseEmbedding):
            return NotImplemented
        return np.array_equal(self.indices, other.indices) and np.array_equal(self.values, other.values)

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside

    def to_dict(self) -> dict[int, float]:
        """``{token_id: weight}`` (FlagEmbedding's ``lexical_weights`` item, with int keys)."""
        return dict(zip(self.indices.tolist(), self.values.tolist()))

    def dot(self, other: "SparseEmbedding") -> float:
        """Sum of weight products over shared token ids: FlagEmbedding's ``compute_lexical_matching_score``."""
        _, mine, theirs = np.intersect1d(self.indices, other.indices, assume_unique=True, return_indices=True)
        return float(np.dot(self.values[mine].astype(np.float64), other.values[theirs].astype(np.float64)))

    def __repr__(self) -> str:
        return f"SparseEmbedding({len(self)} tokens)"


@dataclass(frozen=True)
class TextEncodings:
    """What ``Vectorizer.encode_texts_all`` returns for ``n`` texts, from one forward pass per batch.

    ``dense``: float32 ``(n, dim)`` unit vectors (= ``encode_texts``); ``sparse``: ``n`` :class:`SparseEmbedding`;
    ``multivector``: ``n`` float32 ``(tokens - 1, multivector_dim)`` arrays of unit rows. An output that was not
    asked for is ``None``.
    """

    dense: np.ndarray
    sparse: list[SparseEmbedding] | None = None
    multivector: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.dense)


def sparse_excluded_ids(tokenizer: Any) -> np.ndarray:
    """Token ids that never appear in a sparse embedding (XLM-R: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3)."""
    special = tokenizer.special_tokens_map
    ids = [tokenizer.convert_tokens_to_ids(special[name]) for name in SPARSE_EXCLUDED_TOKENS if name in special]
    return np.array(sorted({int(i) for i in ids if i is not None}), dtype=np.int64)


def sparse_embedding(token_ids: np.ndarray, weights: np.ndarray, excluded: np.ndarray) -> SparseEmbedding:
    """One text's (unpadded) token ids and per-token weights -> its sparse embedding (see module docstring)."""
    keep = (weights > 0) & ~np.isin(token_ids, excluded)
    indices, inverse = np.unique(token_ids[keep], return_inverse=True)
    values = np.zeros(len(indices), dtype=np.float32)  # every kept weight is > 0, so 0 is a neutral start for max
    np.maximum.at(values, inverse, weights[keep].astype(np.float32))
    return SparseEmbedding(indices, values)


def multivector_rows(token_vectors: np.ndarray, num_tokens: int) -> np.ndarray:
    """One text's rows of the ``(L - 1, d)`` token vectors (positions after CLS) -> its ``num_tokens - 1`` rows,
    copied out of the batch."""
    return np.array(token_vectors[: num_tokens - 1], dtype=np.float32)
