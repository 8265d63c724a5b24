"""The contract suite run against an in-memory reference store: proves the suite itself passes for a correct
adapter (brute-force cosine over vectors from the core) before any database adapter relies on it."""

from __future__ import annotations

import numpy as np
import pytest

from bge_siglip_vectorizer.testing.contract import AdapterContractTests, StoreHarness


class InMemoryHarness(StoreHarness):
    def __init__(self, vectorizer, rows=None):
        self.vectorizer = vectorizer
        self.rows: dict[str, np.ndarray] = rows if rows is not None else {}

    def _write(self, ids, vectors):
        self.rows.update(zip(ids, vectors))  # only reached when encoding succeeded for the whole batch

    def add_images(self, ids, images):
        self._write(ids, self.vectorizer.encode_images(images))

    def add_texts(self, ids, texts):
        self._write(ids, self.vectorizer.encode_texts(texts))

    def _nearest(self, query, k):
        ids = list(self.rows)
        scores = np.stack([self.rows[i] for i in ids]) @ query
        return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]

    def query_text(self, text, k):
        return self._nearest(self.vectorizer.encode_texts([text])[0], k)

    def query_image(self, image, k):
        return self._nearest(self.vectorizer.encode_images([image])[0], k)

    def count(self):
        return len(self.rows)

    def reopen(self):
        return InMemoryHarness(self.vectorizer, dict(self.rows))


class TestInMemoryReference(AdapterContractTests):
    @pytest.fixture
    def harness(self, bge_siglip_vectorizer):
        return InMemoryHarness(bge_siglip_vectorizer)
