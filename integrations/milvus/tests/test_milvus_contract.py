"""The core's adapter contract suite, run against milvus-lite through ``BGESigLIPMilvus``.

The harness adds with ``add_images`` / ``add_texts`` (the suite's ids as explicit primary keys) and queries with
``search``. Beyond today's ``StoreHarness`` it already offers what the capability mixins will ask for (upsert,
delete, metadata, content ids, a second model), and the Milvus tests cover those promises with the real database.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
from pymilvus import MilvusClient

from bge_siglip_milvus import BGESigLIPEmbeddingFunction, BGESigLIPMilvus
from bge_siglip_vectorizer.testing.contract import AdapterContractTests, StoreHarness

_names = itertools.count()


class MilvusHarness(StoreHarness):
    """One collection of a milvus-lite database (the session's client; reopening makes a new client object)."""

    def __init__(self, path: Path, client: MilvusClient, model_dir: Path, collection: str, create: bool = True):
        self.path, self.client, self.model_dir, self.collection = path, client, model_dir, collection
        self.db = BGESigLIPMilvus(client, BGESigLIPEmbeddingFunction(model=model_dir, device="cpu"))
        self.vectorizer = self.db.vectorizer
        if create:
            self.db.create_collection(collection)

    # -- today's StoreHarness
    def add_images(self, ids: Sequence[str] | None, images: Sequence[Any], metadata: Sequence[dict] | None = None):
        return self.db.add_images(self.collection, list(images), ids=ids, payloads=metadata).ids

    def add_texts(self, ids: Sequence[str] | None, texts: Sequence[str], metadata: Sequence[dict] | None = None):
        return self.db.add_texts(self.collection, list(texts), ids=ids, payloads=metadata).ids

    def query_text(self, text: str, k: int) -> list[str]:
        return [hit["id"] for hit in self.db.search(self.collection, texts=[text], limit=k)[0]]

    def query_image(self, image: Any, k: int) -> list[str]:
        return [hit["id"] for hit in self.db.search(self.collection, images=[image], limit=k)[0]]

    def count(self) -> int:
        self.client.load_collection(self.collection)
        return self.client.query(self.collection, filter="", output_fields=["count(*)"])[0]["count(*)"]

    def reopen(self) -> "MilvusHarness":
        # One milvus-lite file is served by one process: a new client on the same file shares its server. The
        # separate-process reopen is test_milvus.py's (it releases the file first).
        return MilvusHarness(self.path, MilvusClient(str(self.path)), self.model_dir, self.collection, create=False)

    def close(self) -> None:
        if self.client.has_collection(self.collection):
            self.client.drop_collection(self.collection)

    # -- what the capability mixins will need (add/upsert are one operation in Milvus)
    upsert_images = add_images
    upsert_texts = add_texts

    def delete(self, ids: Sequence[str]) -> None:
        self.client.delete(self.collection, ids=list(ids))

    def metadata(self, item_id: str) -> dict[str, Any]:
        row = self.client.query(self.collection, ids=[item_id], output_fields=["*"])[0]
        return {key: value for key, value in row.items() if key not in ("id", "vector")}

    def with_model(self, model_dir: Path) -> "MilvusHarness":
        """The same collection, driven by another model (writes and queries must be refused)."""
        return MilvusHarness(self.path, self.client, model_dir, self.collection, create=False)


class TestMilvusContract(AdapterContractTests):
    @pytest.fixture
    def harness(self, milvus_db_path, milvus_client, bge_siglip_model_dir):
        return MilvusHarness(milvus_db_path, milvus_client, bge_siglip_model_dir, f"contract_{next(_names)}")


def test_the_harness_operations_the_capability_mixins_will_use(milvus_db_path, milvus_client, bge_siglip_model_dir,
                                                                bge_siglip_other_model_dir):
    from bge_siglip_milvus import ModelMismatchError, content_id

    store = MilvusHarness(milvus_db_path, milvus_client, bge_siglip_model_dir, f"extras_{next(_names)}")
    try:
        assert store.add_texts(None, ["ein Hund", "a cat"]) == [content_id("ein Hund", "text"),
                                                               content_id("a cat", "text")]
        store.add_texts(None, ["ein Hund"])  # the same content id: no duplicate
        store.upsert_images(["x"], [np.zeros((8, 8, 3), np.uint8)], metadata=[{"lang": "en"}])
        store.upsert_texts(["x"], ["zweiter"], metadata=[{"lang": "de"}])
        assert store.count() == 3 and store.query_text("zweiter", k=1) == ["x"]
        assert store.metadata("x") == {"modality": "text", "text": "zweiter", "source": None, "lang": "de"}
        store.delete(["x"])
        assert store.count() == 2
        with pytest.raises(ModelMismatchError):
            store.with_model(bge_siglip_other_model_dir).add_texts(None, ["y"])
        assert store.reopen().count() == 2
    finally:
        store.close()
