"""The core's adapter contract suite, run against real Chroma clients through ``BGESigLIPEmbeddingFunction``.

Two storages: ``PersistentClient`` on ``tmp_path`` (the in-process engine that ``EphemeralClient``, used by the
other test modules, also runs) and ``HttpClient`` against a real ``chroma run`` server. ``reopen()`` always makes
a new client and calls ``get_collection`` WITHOUT an embedding function, so Chroma must rebuild ours from the
stored config.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

import chromadb
import numpy as np
import pytest
from chromadb.api import ClientAPI
from chromadb.api.shared_system_client import SharedSystemClient
from PIL import Image

from bge_siglip_chroma import BGESigLIPEmbeddingFunction, ImageURILoader
from bge_siglip_vectorizer.testing.contract import AdapterContractTests, StoreHarness
from bge_siglip_vectorizer.testing.images import encode_image

_file_counter = itertools.count()


class ChromaHarness(StoreHarness):
    """One Chroma collection. Arrays go in as ``images=``; encoded bytes are written to files and go in as
    ``uris=`` through :class:`ImageURILoader` (how a Chroma user adds image files), so the core decodes them."""

    def __init__(
        self,
        make_client: Callable[[], ClientAPI],
        collection: str,
        files: Path,
        embedding_function: BGESigLIPEmbeddingFunction | None = None,
    ) -> None:
        self.make_client = make_client
        self.name = collection
        self.files = files
        self.client = make_client()
        if embedding_function is not None:
            self.collection = self.client.create_collection(
                collection, embedding_function=embedding_function, data_loader=ImageURILoader()
            )
        else:
            # The point of reopen(): no embedding function passed, Chroma rebuilds it from the persisted config.
            self.collection = self.client.get_collection(collection, data_loader=ImageURILoader())
        ef = self.collection.configuration["embedding_function"]
        assert isinstance(ef, BGESigLIPEmbeddingFunction)
        self.vectorizer = ef.vectorizer

    def _to_uri(self, item: Any) -> str:
        data = item if isinstance(item, bytes) else encode_image(Image.fromarray(item), "PNG")
        path = self.files / f"image-{next(_file_counter)}.png"
        path.write_bytes(data)
        return str(path)

    def add_images(self, ids: Sequence[str], images: Sequence[Any]) -> None:
        if all(isinstance(image, np.ndarray) for image in images):
            self.collection.add(ids=list(ids), images=list(images))
        else:
            self.collection.add(ids=list(ids), uris=[self._to_uri(image) for image in images])

    def add_texts(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        self.collection.add(ids=list(ids), documents=list(texts))

    def query_text(self, text: str, k: int) -> list[str]:
        return self.collection.query(query_texts=[text], n_results=k)["ids"][0]

    def query_image(self, image: Any, k: int) -> list[str]:
        if isinstance(image, np.ndarray):
            return self.collection.query(query_images=[image], n_results=k)["ids"][0]
        return self.collection.query(query_uris=[self._to_uri(image)], n_results=k)["ids"][0]

    def count(self) -> int:
        return self.collection.count()

    def reopen(self) -> "ChromaHarness":
        return ChromaHarness(self.make_client, self.name, self.files)


def _collection_name() -> str:
    return f"contract-{uuid.uuid4().hex[:12]}"


class TestChromaPersistentContract(AdapterContractTests):
    @pytest.fixture
    def harness(self, bge_siglip_model_dir, tmp_path, chroma_settings):
        db = tmp_path / "db"

        def make_client() -> ClientAPI:
            return chromadb.PersistentClient(path=str(db), settings=chroma_settings())

        ef = BGESigLIPEmbeddingFunction(bge_siglip_model_dir, device="cpu")
        harness = ChromaHarness(make_client, _collection_name(), tmp_path, ef)
        assert (db / "chroma.sqlite3").exists()  # really on tmp_path, not some other cached client's storage
        return harness


class TestChromaHttpContract(AdapterContractTests):
    @pytest.fixture
    def harness(self, bge_siglip_model_dir, tmp_path, chroma_server, chroma_settings):
        def make_client() -> ClientAPI:
            # Drop the cached client system so every reopen() is a genuinely new client talking to the server.
            SharedSystemClient.clear_system_cache()
            return chromadb.HttpClient(host=chroma_server.host, port=chroma_server.port, settings=chroma_settings())

        ef = BGESigLIPEmbeddingFunction(bge_siglip_model_dir, device="cpu")
        harness = ChromaHarness(make_client, _collection_name(), tmp_path, ef)
        yield harness
        harness.client.delete_collection(harness.name)
