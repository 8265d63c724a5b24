"""The core adapter contract, run against Qdrant (qdrant-client local mode) through ``BGESigLIPQdrant``.

Four harnesses, because users have four ways in:
* stock types: ``upsert`` of ``PointStruct(vector=models.Image/Document(model="bge-siglip"))``, on disk (``path=``),
  reopened in a new process the way a user would (a new client given the model again: Qdrant stores no function);
* bulk ingest: ``add_images`` / ``add_texts``, in memory (``":memory:"``), content-derived ids;
* async: ``AsyncBGESigLIPQdrant`` in memory; its sync harness methods run the async client too (one storage);
* hybrid: a ``hybrid=True, multivector=True`` collection on disk, texts upserted with a stock ``Document`` per
  granularity (``"bge-siglip"``, ``"bge-siglip-sparse"``, ``"bge-siglip-multivector"``), images dense, text queries
  through ``query_hybrid`` (dense + sparse, RRF), reopened in a new process.
The others query with ``query_points(query=models.Document/Image(...))``. The model guard is the fingerprint recorded in
the collection metadata by ``create_collection``; ``change_model`` tries to overwrite that record with another
model's through ``update_collection(metadata=...)``.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, Sequence

import pytest
from qdrant_client import models

from bge_siglip_qdrant import (
    METADATA_KEY,
    MULTIVECTOR_MODEL_NAME,
    SPARSE_MODEL_NAME,
    AsyncBGESigLIPQdrant,
    BGESigLIPQdrant,
)
from bge_siglip_vectorizer.testing import contract as c

MODEL = "bge-siglip"
COLLECTION = "contract"
_NS = uuid.UUID("0b5c1a55-3f0e-4a51-8d9c-1c0ffee00001")


def point_id(harness_id: str) -> str:
    # Qdrant ids are unsigned ints or UUIDs; the suite's ids are free strings, kept in the payload.
    return str(uuid.uuid5(_NS, harness_id))


def _payloads(ids: Sequence[str], metadatas: Sequence[dict] | None) -> list[dict[str, Any]]:
    return [{**(metadatas[i] if metadatas else {}), "hid": hid} for i, hid in enumerate(ids)]


def _hids(response: models.QueryResponse) -> list[str]:
    return [hit.payload.get("hid", str(hit.id)) for hit in response.points]


class QdrantHarness(c.StoreHarness):
    """Shared by the sync harnesses: queries, counts, payloads, the guard and deletes through ``self.db``."""

    #: create_collection's options for this harness's collection
    collection_options: dict[str, Any] = {}

    def __init__(self, db: BGESigLIPQdrant, model_dir: Path, path: Path | None = None, create: bool = True):
        self.db, self.model_dir, self.path = db, Path(model_dir), path
        self.vectorizer = db.vectorizer
        if create:
            db.create_collection(COLLECTION, **self.collection_options)

    def _query(self, query: Any, k: int) -> list[str]:
        return _hids(self.db.query_points(COLLECTION, query=query, limit=k, with_payload=["hid"]))

    def query_text(self, text, k):
        return self._query(models.Document(text=text, model=MODEL), k)

    def query_image(self, image, k):
        return self._query(models.Image(image=image, model=MODEL), k)

    def count(self):
        return self.db.count(COLLECTION, exact=True).count

    def get_metadata(self, ids):
        by_hid = {p.payload["hid"]: p.payload for p in self.db.retrieve(COLLECTION, [point_id(i) for i in ids])}
        return [by_hid.get(i) for i in ids]

    def delete(self, ids):
        self.db.delete(COLLECTION, points_selector=[point_id(i) for i in ids])

    def with_model(self, model_dir):
        # The same connection (local mode locks its folder), another model.
        other = type(self).__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.db = BGESigLIPQdrant(self.db.client, model=model_dir, device="cpu", model_name=MODEL)
        other.vectorizer = other.db.vectorizer
        return other

    def change_model(self, model_dir):
        other = BGESigLIPQdrant(self.db.client, model=model_dir, device="cpu", model_name=MODEL)
        other.update_collection(COLLECTION, metadata={METADATA_KEY: other.model_record()})

    def stored_config(self):
        # Local mode holds one client per storage; this reads the collection's config as stored there.
        return self.db.get_collection(COLLECTION).config.model_dump(mode="json")

    def close(self):
        self.db.close()


class StockTypesHarness(QdrantHarness):
    """Adds through ``upsert`` with stock ``models.Image`` / ``models.Document`` vectors; storage on disk."""

    @classmethod
    def create(cls, model_dir: Path, path: Path) -> "StockTypesHarness":
        return cls(BGESigLIPQdrant(path=str(path), model=model_dir, device="cpu", model_name=MODEL), model_dir, path)

    def _upsert(self, ids, objects, metadatas=None):
        points = [models.PointStruct(id=point_id(hid), vector=obj, payload=payload)
                  for hid, obj, payload in zip(ids, objects, _payloads(ids, metadatas))]
        self.db.upsert(COLLECTION, points=points)

    def add_images(self, ids, images, metadatas=None):
        self._upsert(ids, [models.Image(image=image, model=MODEL) for image in images], metadatas)

    def add_texts(self, ids, texts, metadatas=None):
        self._upsert(ids, [models.Document(text=text, model=MODEL) for text in texts], metadatas)

    def upsert_images(self, ids, images):
        # Replace the vector only (the payload stays): update_vectors with stock objects.
        self.db.update_vectors(COLLECTION, points=[models.PointVectors(id=point_id(i), vector=models.Image(
            image=image, model=MODEL)) for i, image in zip(ids, images)])

    def upsert_texts(self, ids, texts):
        self.add_texts(ids, texts)

    def reopen(self):
        # Local mode locks its folder: one client at a time, so this one is closed before the next opens.
        self.db.close()
        return type(self).reopen_from(self.reopen_spec())

    def reopen_spec(self):
        return {"path": str(self.path), "model": str(self.model_dir)}

    @classmethod
    def reopen_from(cls, spec):
        # Qdrant stores no embedding function: a user passes the model again (the recorded fingerprint guards it).
        db = BGESigLIPQdrant(path=spec["path"], model=spec["model"], device="cpu", model_name=MODEL)
        return cls(db, spec["model"], Path(spec["path"]), create=False)


class HybridHarness(StockTypesHarness):
    """A hybrid collection on disk: texts get all three granularities through stock ``Document`` objects (one
    forward pass per upsert), images the dense vector; text queries are hybrid (dense + sparse prefetch, RRF)."""

    collection_options = {"hybrid": True, "multivector": True}

    def add_images(self, ids, images, metadatas=None):
        self._upsert(ids, [{"dense": models.Image(image=image, model=MODEL)} for image in images], metadatas)

    def add_texts(self, ids, texts, metadatas=None):
        self._upsert(ids, [{"dense": models.Document(text=text, model=MODEL),
                            "sparse": models.Document(text=text, model=SPARSE_MODEL_NAME),
                            "multivector": models.Document(text=text, model=MULTIVECTOR_MODEL_NAME)}
                           for text in texts], metadatas)

    def query_text(self, text, k):
        return _hids(self.db.query_hybrid(COLLECTION, text, limit=k, with_payload=["hid"]))

    def query_image(self, image, k):
        return _hids(self.db.query_points(COLLECTION, query=models.Image(image=image, model=MODEL), using="dense",
                                          limit=k, with_payload=["hid"]))


class BulkIngestHarness(QdrantHarness):
    """Adds through ``add_images`` / ``add_texts``; storage in memory."""

    @classmethod
    def create(cls, model_dir: Path) -> "BulkIngestHarness":
        return cls(BGESigLIPQdrant(":memory:", model=model_dir, device="cpu", model_name=MODEL), model_dir)

    def add_images(self, ids, images, metadatas=None):
        self.db.add_images(COLLECTION, images, ids=[point_id(h) for h in ids], payloads=_payloads(ids, metadatas))

    def add_texts(self, ids, texts, metadatas=None):
        self.db.add_texts(COLLECTION, texts, ids=[point_id(h) for h in ids], payloads=_payloads(ids, metadatas))

    def add_images_by_content(self, images):
        return self.db.add_images(COLLECTION, images).ids

    def add_texts_by_content(self, texts):
        return self.db.add_texts(COLLECTION, texts).ids

    upsert_images = add_images  # bulk ingest upserts: a known id is replaced
    upsert_texts = add_texts

    def reopen(self):
        # ":memory:" lives in its client: a new client on that connection (the model record is read again).
        return type(self)(BGESigLIPQdrant(self.db.client, model=self.model_dir, device="cpu", model_name=MODEL),
                          self.model_dir, create=False)


class AsyncHarness(c.StoreHarness):
    """Everything through ``AsyncBGESigLIPQdrant`` (in memory): the sync methods run its coroutines, so both paths
    read and write one storage."""

    def __init__(self, db: AsyncBGESigLIPQdrant, model_dir: Path, create: bool = True) -> None:
        self.db, self.model_dir = db, Path(model_dir)
        self.vectorizer = db.vectorizer
        if create:
            asyncio.run(db.create_collection(COLLECTION))

    async def async_add_images(self, ids, images, metadatas=None):
        await self.db.add_images(COLLECTION, images, ids=[point_id(h) for h in ids],
                                 payloads=_payloads(ids, metadatas))

    async def async_add_texts(self, ids, texts, metadatas=None):
        await self.db.upsert(COLLECTION, points=[  # stock objects through the async upsert
            models.PointStruct(id=point_id(hid), vector=models.Document(text=text, model=MODEL), payload=payload)
            for hid, text, payload in zip(ids, texts, _payloads(ids, metadatas))])

    async def async_query_text(self, text, k):
        return _hids(await self.db.query_points(COLLECTION, query=models.Document(text=text, model=MODEL), limit=k))

    async def async_query_image(self, image, k):
        return _hids(await self.db.query_points(COLLECTION, query=models.Image(image=image, model=MODEL), limit=k))

    def add_images(self, ids, images, metadatas=None):
        asyncio.run(self.async_add_images(ids, images, metadatas))

    def add_texts(self, ids, texts, metadatas=None):
        asyncio.run(self.async_add_texts(ids, texts, metadatas))

    def query_text(self, text, k):
        return asyncio.run(self.async_query_text(text, k))

    def query_image(self, image, k):
        return asyncio.run(self.async_query_image(image, k))

    def count(self):
        return asyncio.run(self.db.count(COLLECTION, exact=True)).count

    def with_model(self, model_dir):
        other = AsyncHarness.__new__(AsyncHarness)
        other.db = AsyncBGESigLIPQdrant(self.db.client, model=model_dir, device="cpu", model_name=MODEL)
        other.model_dir, other.vectorizer = Path(model_dir), other.db.vectorizer
        return other

    def change_model(self, model_dir):
        other = AsyncBGESigLIPQdrant(self.db.client, model=model_dir, device="cpu", model_name=MODEL)
        asyncio.run(other.update_collection(COLLECTION, metadata={METADATA_KEY: other.model_record()}))

    def stored_config(self):
        return asyncio.run(self.db.get_collection(COLLECTION)).config.model_dump(mode="json")

    def reopen(self):
        db = AsyncBGESigLIPQdrant(self.db.client, model=self.model_dir, device="cpu", model_name=MODEL)
        return AsyncHarness(db, self.model_dir, create=False)

    def close(self):
        asyncio.run(self.db.close())


_IN_MEMORY = ("':memory:' storage lives in its client and cannot be opened by another process; reopening from "
              "disk in a new process is run by TestQdrantStockTypesContract")
_ASYNC_ELSEWHERE = "the async client is run by TestQdrantAsyncContract (AsyncBGESigLIPQdrant)"


class TestQdrantStockTypesContract(c.ContractTests, c.AddTests, c.RankingTests, c.BadBatchTests, c.MetadataTests,
                                   c.ExplicitIdTests, c.UpsertTests, c.DeleteTests, c.ModelGuardTests,
                                   c.ReopenTests):
    opt_outs = {
        "ContentIdTests": "a stock PointStruct carries the caller's id; content-derived ids are bulk ingest's, run "
                          "by TestQdrantBulkIngestContract",
        "AsyncTests": _ASYNC_ELSEWHERE,
        "AsyncOffLoopTests": _ASYNC_ELSEWHERE,
    }

    @pytest.fixture
    def harness(self, bge_siglip_model_dir, tmp_path):
        return StockTypesHarness.create(bge_siglip_model_dir, tmp_path / "qdrant")


class TestQdrantBulkIngestContract(c.ContractTests, c.AddTests, c.RankingTests, c.BadBatchTests, c.MetadataTests,
                                   c.ExplicitIdTests, c.ContentIdTests, c.UpsertTests, c.DeleteTests,
                                   c.ModelGuardTests):
    opt_outs = {"ReopenTests": _IN_MEMORY, "AsyncTests": _ASYNC_ELSEWHERE, "AsyncOffLoopTests": _ASYNC_ELSEWHERE}

    @pytest.fixture
    def harness(self, bge_siglip_model_dir):
        return BulkIngestHarness.create(bge_siglip_model_dir)


class TestQdrantAsyncContract(c.ContractTests, c.AddTests, c.RankingTests, c.BadBatchTests, c.ModelGuardTests,
                              c.AsyncTests, c.AsyncOffLoopTests):
    opt_outs = {
        "ReopenTests": _IN_MEMORY,
        "MetadataTests": "the payload path is the sync client's (the same code), run by the other two classes",
        "ExplicitIdTests": "bulk ingest's ids are the sync client's code, run by TestQdrantBulkIngestContract",
        "ContentIdTests": "bulk ingest's ids are the sync client's code, run by TestQdrantBulkIngestContract",
        "UpsertTests": "upsert is run by the sync classes; the async one shares its resolution code",
        "DeleteTests": "delete is qdrant-client's own method, untouched by the adapter; run by the sync classes",
    }

    @pytest.fixture
    def harness(self, bge_siglip_model_dir):
        return AsyncHarness(AsyncBGESigLIPQdrant(":memory:", model=bge_siglip_model_dir, device="cpu",
                                                 model_name=MODEL), bge_siglip_model_dir)


_FUSED = ("compares the store's ranking with the core's dense ranking; a hybrid text query fuses the dense and the "
          "sparse ranking by design. test_hybrid.py checks the fusion against Qdrant's fusion of the core's own "
          "scores, and the stored dense, sparse and multi-vectors against the core's")


class TestQdrantHybridContract(c.ContractTests, c.BadBatchTests, c.MetadataTests, c.ExplicitIdTests, c.DeleteTests,
                               c.ModelGuardTests, c.ReopenTests):
    opt_outs = {
        "AddTests": _FUSED,
        "RankingTests": _FUSED,
        "UpsertTests": _FUSED,
        "ContentIdTests": "a stock PointStruct carries the caller's id; content-derived ids are bulk ingest's (hybrid "
                          "bulk ingest: test_hybrid.py)",
        "AsyncTests": "async hybrid collections are checked against the sync client in test_hybrid.py; the async "
                      "client's contract is TestQdrantAsyncContract",
        "AsyncOffLoopTests": "the async hybrid path encodes through the same worker-thread code as "
                             "TestQdrantAsyncContract",
    }

    @pytest.fixture
    def harness(self, bge_siglip_model_dir, tmp_path):
        return HybridHarness.create(bge_siglip_model_dir, tmp_path / "qdrant")
