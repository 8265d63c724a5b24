"""The core's adapter contract, run against real Chroma clients through ``BGESigLIPEmbeddingFunction``.

Two storages: ``PersistentClient`` on ``tmp_path`` and ``HttpClient`` against a real ``chroma run`` server (the
server stores the config as opaque JSON; the client process embeds). Reopening (in-process and in a new process)
makes a new client and calls ``get_collection`` WITHOUT an embedding function, so Chroma must rebuild ours from the
stored config. Replacing items goes through ``update(ids, uris=...)`` for images (Chroma embedded nothing there
before the adapter's guard) and ``upsert(ids, documents=...)`` for texts.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any, Sequence

import chromadb
import numpy as np
import pytest
from chromadb.api import ClientAPI
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.config import Settings
from PIL import Image

from bge_siglip_chroma import BGESigLIPEmbeddingFunction, ImageURILoader
from bge_siglip_vectorizer.testing import contract as c
from bge_siglip_vectorizer.testing.images import encode_image

_file_counter = itertools.count()


def _client(spec: dict[str, Any]) -> ClientAPI:
    settings = Settings(anonymized_telemetry=False)  # a new object per client: chromadb mutates it
    if spec["kind"] == "persistent":
        return chromadb.PersistentClient(path=spec["path"], settings=settings)
    # Drop the cached client system so every client is a genuinely new one talking to the server.
    SharedSystemClient.clear_system_cache()
    return chromadb.HttpClient(host=spec["host"], port=spec["port"], settings=settings)


class ChromaHarness(c.StoreHarness):
    """One Chroma collection. Arrays go in as ``images=``; encoded bytes are written to files and go in as
    ``uris=`` through :class:`ImageURILoader` (how a Chroma user adds image files), so the core decodes them."""

    def __init__(self, spec: dict[str, Any], function: BGESigLIPEmbeddingFunction | None = None) -> None:
        self.spec = spec
        self.name = spec["name"]
        self.files = Path(spec["files"])
        self.client = _client(spec)
        if function is not None:
            self.collection = self.client.create_collection(self.name, embedding_function=function,
                                                            data_loader=ImageURILoader())
        else:
            # The point of reopening: no embedding function passed, Chroma rebuilds it from the persisted config.
            self.collection = self.client.get_collection(self.name, data_loader=ImageURILoader())
        self.vectorizer = BGESigLIPEmbeddingFunction.from_collection(self.collection).vectorizer

    def _uris(self, images: Sequence[Any]) -> list[str]:
        uris = []
        for item in images:
            data = item if isinstance(item, bytes) else encode_image(Image.fromarray(item), "PNG")
            path = self.files / f"image-{next(_file_counter)}.png"
            path.write_bytes(data)
            uris.append(str(path))
        return uris

    def add_images(self, ids, images, metadatas=None):
        if all(isinstance(image, np.ndarray) for image in images):
            self.collection.add(ids=list(ids), images=list(images), metadatas=metadatas)
        else:
            self.collection.add(ids=list(ids), uris=self._uris(images), metadatas=metadatas)

    def add_texts(self, ids, texts, metadatas=None):
        self.collection.add(ids=list(ids), documents=list(texts), metadatas=metadatas)

    def query_text(self, text, k):
        return self.collection.query(query_texts=[text], n_results=k)["ids"][0]

    def query_image(self, image, k):
        if isinstance(image, np.ndarray):
            return self.collection.query(query_images=[image], n_results=k)["ids"][0]
        return self.collection.query(query_uris=self._uris([image]), n_results=k)["ids"][0]

    def count(self):
        return self.collection.count()

    def get_metadata(self, ids):
        got = self.collection.get(ids=list(ids), include=["metadatas"])
        by_id = dict(zip(got["ids"], got["metadatas"]))
        return [by_id.get(i) for i in ids]

    def upsert_images(self, ids, images):
        self.collection.update(ids=list(ids), uris=self._uris(images))

    def upsert_texts(self, ids, texts):
        self.collection.upsert(ids=list(ids), documents=list(texts))

    def delete(self, ids):
        self.collection.delete(ids=list(ids))

    def with_model(self, model_dir):
        other = BGESigLIPEmbeddingFunction(model_dir, device="cpu")
        collection = self.client.get_collection(self.name, embedding_function=other, data_loader=ImageURILoader())
        harness = type(self).__new__(type(self))
        harness.__dict__.update(self.__dict__, collection=collection, vectorizer=other.vectorizer)
        return harness

    def change_model(self, model_dir):
        other = BGESigLIPEmbeddingFunction(model_dir, device="cpu")
        self.collection.modify(configuration={"embedding_function": other})

    def stored_config(self):
        stored = _client(self.spec).get_collection(self.name)._model  # raw JSON, read through a new client
        return {"configuration": stored.configuration_json, "schema": stored.serialized_schema}

    def reopen(self):
        return type(self)(self.spec)

    def reopen_spec(self):
        return self.spec

    @classmethod
    def reopen_from(cls, spec):
        return cls(spec)

    # Chroma's async client (AsyncHttpClient, against a server): the same collection, embedded by our function.
    async def _async_collection(self):
        client = await chromadb.AsyncHttpClient(host=self.spec["host"], port=self.spec["port"],
                                                settings=Settings(anonymized_telemetry=False))
        return await client.get_collection(self.name, data_loader=ImageURILoader())

    async def async_add_images(self, ids, images):
        await (await self._async_collection()).add(ids=list(ids), images=list(images))

    async def async_add_texts(self, ids, texts):
        await (await self._async_collection()).add(ids=list(ids), documents=list(texts))

    async def async_query_text(self, text, k):
        return (await (await self._async_collection()).query(query_texts=[text], n_results=k))["ids"][0]

    async def async_query_image(self, image, k):
        return (await (await self._async_collection()).query(query_images=[image], n_results=k))["ids"][0]


def _name() -> str:
    return f"contract-{uuid.uuid4().hex[:12]}"


_NO_CONTENT_IDS = ("Chroma's add requires the caller's ids, and the adapter is an embedding function, which never "
                   "sees them: there is nothing to derive (use a file path or your own hash as the id)")
_SYNC_EMBEDDING = ("Chroma's AsyncCollection calls the embedding function synchronously inside its coroutines "
                   "(chromadb 1.5, CollectionCommon._embed); an embedding function cannot move that off the loop")
_CHROMA_MIXINS = (c.AddTests, c.RankingTests, c.BadBatchTests, c.MetadataTests, c.ExplicitIdTests, c.UpsertTests,
                  c.DeleteTests, c.ModelGuardTests, c.ReopenTests)


class TestChromaPersistentContract(c.ContractTests, *_CHROMA_MIXINS):
    opt_outs = {
        "ContentIdTests": _NO_CONTENT_IDS,
        "AsyncTests": "chromadb has no async client for the embedded PersistentClient (AsyncHttpClient needs a "
                      "server: run by TestChromaHttpContract)",
        "AsyncOffLoopTests": _SYNC_EMBEDDING,
    }

    @pytest.fixture
    def harness(self, bge_siglip_model_dir, tmp_path):
        spec = {"kind": "persistent", "path": str(tmp_path / "db"), "name": _name(), "files": str(tmp_path)}
        harness = ChromaHarness(spec, BGESigLIPEmbeddingFunction(bge_siglip_model_dir, device="cpu"))
        assert (tmp_path / "db" / "chroma.sqlite3").exists()  # really on tmp_path, not some other client's storage
        return harness


class TestChromaHttpContract(c.ContractTests, *_CHROMA_MIXINS, c.AsyncTests):
    opt_outs = {"ContentIdTests": _NO_CONTENT_IDS, "AsyncOffLoopTests": _SYNC_EMBEDDING}

    @pytest.fixture
    def harness(self, bge_siglip_model_dir, tmp_path, chroma_server):
        spec = {"kind": "http", "host": chroma_server.host, "port": chroma_server.port, "name": _name(),
                "files": str(tmp_path)}
        harness = ChromaHarness(spec, BGESigLIPEmbeddingFunction(bge_siglip_model_dir, device="cpu"))
        yield harness
        _client(spec).delete_collection(harness.name)


def test_harness_reads_the_server_not_a_cache(bge_siglip_model_dir, tmp_path, chroma_server):
    """Guard for the harness: ``stored_config`` sees a change made by another client (it reads the server)."""
    spec = {"kind": "http", "host": chroma_server.host, "port": chroma_server.port, "name": _name(),
            "files": str(tmp_path)}
    harness = ChromaHarness(spec, BGESigLIPEmbeddingFunction(bge_siglip_model_dir, device="cpu"))
    try:
        before = harness.stored_config()
        harness.collection.modify(configuration={"embedding_function": BGESigLIPEmbeddingFunction(
            bge_siglip_model_dir, device="cpu", batch_size=8)})
        assert harness.stored_config() != before
    finally:
        _client(spec).delete_collection(harness.name)

