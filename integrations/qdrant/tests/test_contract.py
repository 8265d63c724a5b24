"""The core adapter contract suite, run against Qdrant (qdrant-client local mode) through ``BGESigLIPQdrant``.

Two harnesses, because users have two ways in:
* stock types: ``upsert`` of ``PointStruct(vector=models.Image/Document(model="bge-siglip"))``, on disk (``path=``);
* bulk ingest: ``add_images`` / ``add_texts``, in memory (``":memory:"``).
Both query with ``query_points(query=models.Document/Image(...))``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Sequence

import pytest
from qdrant_client import QdrantClient, models

from bge_siglip_qdrant import BGESigLIPQdrant
from bge_siglip_vectorizer.testing.contract import AdapterContractTests, StoreHarness

MODEL = "bge-siglip"
COLLECTION = "contract"
_NS = uuid.UUID("0b5c1a55-3f0e-4a51-8d9c-1c0ffee00001")


def point_id(harness_id: str) -> str:
    # Qdrant ids are unsigned ints or UUIDs; the suite's ids are free strings, kept in the payload.
    return str(uuid.uuid5(_NS, harness_id))


class QdrantHarness(StoreHarness):
    def __init__(self, model_dir: Path, location: str | None, path: Path | None, create: bool = True):
        self.model_dir, self.location, self.path = model_dir, location, path
        client = QdrantClient(location=location) if location else QdrantClient(path=str(path))
        self.db = BGESigLIPQdrant(client, model=model_dir, device="cpu", model_name=MODEL)
        self.vectorizer = self.db.vectorizer
        if create:
            self.db.create_collection(COLLECTION)

    def _query(self, query: Any, k: int) -> list[str]:
        response = self.db.query_points(COLLECTION, query=query, limit=k, with_payload=["hid"])
        return [hit.payload["hid"] for hit in response.points]

    def query_text(self, text: str, k: int) -> list[str]:
        return self._query(models.Document(text=text, model=MODEL), k)

    def query_image(self, image: Any, k: int) -> list[str]:
        return self._query(models.Image(image=image, model=MODEL), k)

    def count(self) -> int:
        return self.db.count(COLLECTION, exact=True).count  # delegated to the wrapped client

    def close(self) -> None:
        self.db.close()


class StockTypesHarness(QdrantHarness):
    """Adds through ``upsert`` with stock ``models.Image`` / ``models.Document`` vectors; storage on disk."""

    def _upsert(self, ids: Sequence[str], objects: list[Any]) -> None:
        points = [
            models.PointStruct(id=point_id(hid), vector=obj, payload={"hid": hid}) for hid, obj in zip(ids, objects)
        ]
        self.db.upsert(COLLECTION, points=points)

    def add_images(self, ids: Sequence[str], images: Sequence[Any]) -> None:
        self._upsert(ids, [models.Image(image=image, model=MODEL) for image in images])

    def add_texts(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        self._upsert(ids, [models.Document(text=text, model=MODEL) for text in texts])

    def reopen(self) -> "StockTypesHarness":
        # Local mode locks its folder: one client at a time, so the first one is closed before the second opens.
        # Qdrant stores no embedding function, so the new wrapper is given the model again.
        self.db.close()
        return StockTypesHarness(self.model_dir, None, self.path, create=False)


class BulkIngestHarness(QdrantHarness):
    """Adds through ``add_images`` / ``add_texts``; storage in memory."""

    def add_images(self, ids: Sequence[str], images: Sequence[Any]) -> None:
        self.db.add_images(
            COLLECTION, images, ids=[point_id(h) for h in ids], payloads=[{"hid": h} for h in ids]
        )

    def add_texts(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        self.db.add_texts(COLLECTION, texts, ids=[point_id(h) for h in ids], payloads=[{"hid": h} for h in ids])

    def reopen(self) -> "BulkIngestHarness":
        # ":memory:" storage lives in its client and cannot be opened by a second one: the closest equivalent is a new
        # wrapper (and a new client object handle) on that same storage. Disk reopening is covered by the other
        # harness and, across processes, by test_adapter.py.
        other = BulkIngestHarness.__new__(BulkIngestHarness)
        other.model_dir, other.location, other.path = self.model_dir, self.location, self.path
        other.db = BGESigLIPQdrant(self.db.client, model=self.model_dir, device="cpu", model_name=MODEL)
        other.vectorizer = other.db.vectorizer
        return other


class TestQdrantStockTypesContract(AdapterContractTests):
    @pytest.fixture
    def harness(self, bge_siglip_model_dir, tmp_path):
        return StockTypesHarness(bge_siglip_model_dir, None, tmp_path / "qdrant")


class TestQdrantBulkIngestContract(AdapterContractTests):
    @pytest.fixture
    def harness(self, bge_siglip_model_dir):
        return BulkIngestHarness(bge_siglip_model_dir, ":memory:", None)
