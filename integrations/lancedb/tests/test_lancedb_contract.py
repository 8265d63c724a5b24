"""The core's adapter contract, run against a real LanceDB directory through bge-siglip-lancedb.

The harness adds with ``add_images`` / ``add_texts`` (the suite's ids as explicit ids) into one ``create_table``
table and queries with ``table.search(...)``, where LanceDB embeds the query with our function. Reopening (in this
process or another) connects again and opens the table WITHOUT passing a function: LanceDB rebuilds ours from the
table's metadata. ``change_model`` is what a LanceDB user would do: ``create_table(..., exist_ok=True)`` with
another model's function.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import lancedb
import numpy as np
import pytest
from lancedb.embeddings import get_registry
from PIL import Image

import bge_siglip_lancedb
from bge_siglip_vectorizer.testing import contract as c

TABLE = "contract"
_ADAPTER_COLUMNS = ("id", "vector", "modality", "source", "text")


def _schema(func: bge_siglip_lancedb.BGESigLIPEmbeddings) -> type:
    """The mixed table plus columns for the suite's metadata: a LanceDB table has a fixed schema, so a user declares
    the columns their metadata goes into (``add_*(payloads=...)`` refuses keys that are not columns)."""

    class Item(bge_siglip_lancedb.schema(func)):
        name: Optional[str] = None
        n: Optional[int] = None
        score: Optional[float] = None
        flag: Optional[bool] = None

    return Item


class LanceDBHarness(c.StoreHarness):
    def __init__(self, path: Path, model_dir: Path | None) -> None:
        self.path = Path(path)
        self.db = lancedb.connect(str(self.path))
        if model_dir is not None:
            func = get_registry().get("bge-siglip").create(model=str(model_dir), device="cpu")
            self.table = bge_siglip_lancedb.create_table(self.db, TABLE, func, schema_model=_schema(func),
                                                         exist_ok=True)
        else:
            self.table = self.db.open_table(TABLE)  # no function passed: rebuilt from the metadata
        self.vectorizer = bge_siglip_lancedb.table_function(self.table).vectorizer

    def add_images(self, ids: Sequence[str], images: Sequence[Any], metadatas: Sequence[dict] | None = None):
        bge_siglip_lancedb.add_images(self.table, list(images), ids=list(ids), payloads=metadatas)

    def add_texts(self, ids: Sequence[str], texts: Sequence[str], metadatas: Sequence[dict] | None = None):
        bge_siglip_lancedb.add_texts(self.table, list(texts), ids=list(ids), payloads=metadatas)

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

    def get_metadata(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        rows = {row["id"]: row for row in self.table.to_arrow().to_pylist()}
        return [None if i not in rows else {k: v for k, v in rows[i].items() if k not in _ADAPTER_COLUMNS}
                for i in ids]

    def add_images_by_content(self, images: Sequence[Any]) -> list[str]:
        return bge_siglip_lancedb.add_images(self.table, list(images)).ids

    def add_texts_by_content(self, texts: Sequence[str]) -> list[str]:
        return bge_siglip_lancedb.add_texts(self.table, list(texts)).ids

    # add_* upsert on id (merge_insert)
    def upsert_images(self, ids: Sequence[str], images: Sequence[Any]) -> None:
        self.add_images(ids, images)

    def upsert_texts(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        self.add_texts(ids, texts)

    def delete(self, ids: Sequence[str]) -> None:
        quoted = ", ".join("'" + i.replace("'", "''") + "'" for i in ids)
        self.table.delete(f"id IN ({quoted})")

    def with_model(self, model_dir: Path) -> "LanceDBHarness":
        return LanceDBHarness(self.path, model_dir)

    def change_model(self, model_dir: Path) -> None:
        func = get_registry().get("bge-siglip").create(model=str(model_dir), device="cpu")
        bge_siglip_lancedb.create_table(self.db, TABLE, func, schema_model=_schema(func), exist_ok=True)

    def stored_config(self) -> Any:
        metadata = lancedb.connect(str(self.path)).open_table(TABLE).schema.metadata
        return json.loads(metadata[b"embedding_functions"])

    def reopen(self) -> "LanceDBHarness":
        return LanceDBHarness(self.path, None)

    def reopen_spec(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    @classmethod
    def reopen_from(cls, spec: dict[str, Any]) -> "LanceDBHarness":
        # This module imports bge_siglip_lancedb (registering "bge-siglip"), as a user's code would.
        return cls(Path(spec["path"]), None)


_NO_ASYNC = "the helpers and the registered function are tested with LanceDB's sync API; connect_async is not (README)"


class TestLanceDBContract(c.ContractTests, c.AddTests, c.RankingTests, c.BadBatchTests, c.MetadataTests,
                          c.ExplicitIdTests, c.ContentIdTests, c.UpsertTests, c.DeleteTests, c.ModelGuardTests,
                          c.ReopenTests):
    opt_outs = {"AsyncTests": _NO_ASYNC, "AsyncOffLoopTests": _NO_ASYNC}

    @pytest.fixture
    def harness(self, bge_siglip_model_dir, tmp_path):
        return LanceDBHarness(tmp_path / "db", bge_siglip_model_dir)
