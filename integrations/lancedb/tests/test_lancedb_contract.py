"""The core's adapter contract suite, run against a real LanceDB directory through bge-siglip-lancedb.

The harness adds with ``add_images`` / ``add_texts`` (the suite's ids as explicit ids) into one
``create_table(...)`` table and queries with ``table.search(...)``, where LanceDB embeds the query with our
function. ``reopen()`` connects again and opens the table without passing a function (rebuilt from metadata).
Beyond today's ``StoreHarness`` it offers what the capability mixins will ask for (upsert, delete, metadata,
content ids, a second model); test_lancedb.py covers those promises with the real database.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import lancedb
import numpy as np
import pytest
from lancedb.embeddings import get_registry
from PIL import Image

import bge_siglip_lancedb
from bge_siglip_vectorizer.testing.contract import AdapterContractTests, StoreHarness


class LanceDBHarness(StoreHarness):
    def __init__(self, path: Path, model_dir: Path | None, name: str = "contract") -> None:
        self.path, self.name = path, name
        self.db = lancedb.connect(str(path))
        if model_dir is not None:
            func = get_registry().get("bge-siglip").create(model=str(model_dir), device="cpu")
            self.table = bge_siglip_lancedb.create_table(self.db, name, func, exist_ok=True)
        else:
            self.table = self.db.open_table(name)
        self.vectorizer = bge_siglip_lancedb.table_function(self.table).vectorizer

    # -- today's StoreHarness
    def add_images(self, ids: Sequence[str] | None, images: Sequence[Any], metadata: Sequence[dict] | None = None):
        return bge_siglip_lancedb.add_images(self.table, list(images), ids=ids, payloads=metadata).ids

    def add_texts(self, ids: Sequence[str] | None, texts: Sequence[str], metadata: Sequence[dict] | None = None):
        return bge_siglip_lancedb.add_texts(self.table, list(texts), ids=ids, payloads=metadata).ids

    def query_text(self, text: str, k: int) -> list[str]:
        return [hit["id"] for hit in self.table.search(text).limit(k).to_list()]

    def query_image(self, image: Any, k: int) -> list[str]:
        # LanceDB reads a numpy array as a query VECTOR; its users pass images as PIL (or a path, or bytes).
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        elif isinstance(image, bytes):
            image = Image.open(io.BytesIO(image))
        return [hit["id"] for hit in self.table.search(image).limit(k).to_list()]

    def count(self) -> int:
        return self.table.count_rows()

    def reopen(self) -> "LanceDBHarness":
        return LanceDBHarness(self.path, None, self.name)

    # -- what the capability mixins will need (add is an upsert on id)
    upsert_images = add_images
    upsert_texts = add_texts

    def delete(self, ids: Sequence[str]) -> None:
        quoted = ", ".join("'" + i.replace("'", "''") + "'" for i in ids)
        self.table.delete(f"id IN ({quoted})")

    def metadata(self, item_id: str) -> dict[str, Any]:
        row = self.table.search().where(f"id = '{item_id}'").limit(1).to_list()[0]
        return {key: value for key, value in row.items() if key not in ("id", "vector")}

    def with_model(self, model_dir: Path) -> "LanceDBHarness":
        """The same table, opened for another model (raises ModelMismatchError)."""
        return LanceDBHarness(self.path, model_dir, self.name)


class TestLanceDBContract(AdapterContractTests):
    @pytest.fixture
    def harness(self, bge_siglip_model_dir, tmp_path):
        return LanceDBHarness(tmp_path / "db", bge_siglip_model_dir)


def test_the_harness_operations_the_capability_mixins_will_use(bge_siglip_model_dir, bge_siglip_other_model_dir,
                                                                tmp_path):
    from bge_siglip_lancedb import ModelMismatchError, content_id

    store = LanceDBHarness(tmp_path / "db", bge_siglip_model_dir)
    assert store.add_images(None, [np.zeros((8, 8, 3), np.uint8)]) == [content_id(np.zeros((8, 8, 3), np.uint8))]
    store.add_images(None, [np.zeros((8, 8, 3), np.uint8)])  # the same content id: no duplicate
    store.upsert_texts(["x"], ["first"])
    store.upsert_texts(["x"], ["zweiter"])
    assert store.count() == 2 and store.query_text("zweiter", k=1) == ["x"]
    assert store.metadata("x") == {"modality": "text", "text": "zweiter", "source": None}
    store.delete(["x"])
    assert store.reopen().count() == 1
    with pytest.raises(ModelMismatchError):
        store.with_model(bge_siglip_other_model_dir)
