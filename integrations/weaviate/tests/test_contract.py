"""The core adapter contract suite, run wherever it applies without a Weaviate binary.

* :class:`ModuleModeHarness` drives our inference server the way Weaviate's ``multi2vec-clip`` module does: one
  real HTTP ``/vectorize`` request per object (many in flight, so they are batched across requests), images as
  base64 of their file bytes. The returned vectors go into an in-memory brute-force index standing in for
  Weaviate's vector index. It proves the server routes texts and images to the right towers, keeps per-request
  order under concurrent batching, answers bad items with errors that name them, and that its vectors rank exactly
  like the core's.
* :class:`ClientSideHarness` drives :class:`ClientSideCollection` (the mode for Weaviate without the module): the
  objects it prepares for ``insert_many`` and the ``near_vector`` query vectors it computes, searched by the same
  in-memory index. It proves the client-side vector path, not Weaviate's storage.
"""

from __future__ import annotations

import base64
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import httpx
import numpy as np
import pytest
import weaviate
from weaviate.connect import ConnectionParams

from bge_siglip_vectorizer import InvalidImageError, InvalidInputError, InvalidTextError
from bge_siglip_vectorizer.inputs import load_image
from bge_siglip_vectorizer.testing.contract import AdapterContractTests, StoreHarness
from bge_siglip_vectorizer.testing.images import encode_image
from bge_siglip_weaviate import ClientSideCollection


class _InMemoryIndex:
    """Brute-force cosine search over unit vectors (what Weaviate's index answers for these small sets)."""

    def __init__(self, rows: dict[str, np.ndarray] | None = None) -> None:
        self.rows = rows if rows is not None else {}

    def nearest(self, query: Sequence[float], k: int) -> list[str]:
        ids = list(self.rows)
        scores = np.stack([self.rows[i] for i in ids]) @ np.asarray(query, np.float32)
        return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


class ModuleModeHarness(StoreHarness):
    def __init__(self, url: str, vectorizer, index: _InMemoryIndex | None = None) -> None:
        self.url = url
        self.vectorizer = vectorizer
        self.index = index or _InMemoryIndex()

    # Weaviate stores a BLOB as base64 of the file; arrays are saved as PNG first, the way a user would.
    @staticmethod
    def _file_bytes(images: Sequence[Any]) -> list[bytes]:
        out = []
        for i, item in enumerate(images):
            out.append(item if isinstance(item, bytes) else encode_image(load_image(item, i), "PNG"))
        return out

    def _vectorize(self, bodies: list[dict]) -> list[dict]:
        def post(body: dict) -> httpx.Response:
            with httpx.Client(base_url=self.url, timeout=60) as http:
                return http.post("/vectorize", json=body)

        with ThreadPoolExecutor(8) as pool:  # Weaviate keeps several object requests in flight
            responses = list(pool.map(post, bodies))
        for position, response in enumerate(responses):
            if response.status_code != 200:
                message = response.json()["error"]  # "images[0]: reason" for this object's request
                field, _, reason = message.partition(": ")
                error = InvalidTextError if field.startswith("texts") else InvalidImageError
                raise error(reason, index=position)
        return [response.json() for response in responses]

    def add_images(self, ids, images) -> None:
        payloads = [base64.b64encode(data).decode("ascii") for data in self._file_bytes(images)]
        answers = self._vectorize([{"images": [payload]} for payload in payloads])
        for object_id, answer in zip(ids, answers):  # written only when every object succeeded
            assert answer["textVectors"] == [] and len(answer["imageVectors"]) == 1
            self.index.rows[object_id] = np.asarray(answer["imageVectors"][0], np.float32)

    def add_texts(self, ids, texts) -> None:
        answers = self._vectorize([{"texts": [text]} for text in texts])
        for object_id, answer in zip(ids, answers):
            assert answer["imageVectors"] == [] and len(answer["textVectors"]) == 1
            self.index.rows[object_id] = np.asarray(answer["textVectors"][0], np.float32)

    def query_text(self, text: str, k: int) -> list[str]:  # nearText: the concept goes through /vectorize
        return self.index.nearest(self._vectorize([{"texts": [text]}])[0]["textVectors"][0], k)

    def query_image(self, image: Any, k: int) -> list[str]:  # nearImage: base64 through /vectorize
        payload = base64.b64encode(self._file_bytes([image])[0]).decode("ascii")
        return self.index.nearest(self._vectorize([{"images": [payload]}])[0]["imageVectors"][0], k)

    def count(self) -> int:
        return len(self.index.rows)

    def reopen(self) -> "ModuleModeHarness":
        return ModuleModeHarness(self.url, self.vectorizer, _InMemoryIndex(dict(self.index.rows)))


def _disconnected_collection(name: str):
    """A real weaviate-client Collection object; never connected (the harness only prepares objects with it)."""
    params = ConnectionParams.from_params(
        http_host="127.0.0.1", http_port=1, http_secure=False, grpc_host="127.0.0.1", grpc_port=2, grpc_secure=False
    )
    return weaviate.WeaviateClient(connection_params=params, skip_init_checks=True).collections.use(name)


class ClientSideHarness(StoreHarness):
    def __init__(self, vectorizer, index: _InMemoryIndex | None = None) -> None:
        self.vectorizer = vectorizer
        self.adapter = ClientSideCollection(_disconnected_collection("ContractTest"), vectorizer)
        self.index = index or _InMemoryIndex()

    def _store(self, ids, objects) -> None:
        for object_id, obj in zip(ids, objects):
            assert obj.uuid == uuid.uuid5(uuid.NAMESPACE_URL, object_id)
            self.index.rows[object_id] = np.asarray(obj.vector, np.float32)

    def add_images(self, ids, images) -> None:
        self._store(ids, self.adapter.prepare_images(images, uuids=[uuid.uuid5(uuid.NAMESPACE_URL, i) for i in ids]))

    def add_texts(self, ids, texts) -> None:
        self._store(ids, self.adapter.prepare_texts(texts, uuids=[uuid.uuid5(uuid.NAMESPACE_URL, i) for i in ids]))

    def query_text(self, text: str, k: int) -> list[str]:
        return self.index.nearest(self.adapter.text_query_vector(text), k)

    def query_image(self, image: Any, k: int) -> list[str]:
        return self.index.nearest(self.adapter.image_query_vector(image), k)

    def count(self) -> int:
        return len(self.index.rows)

    def reopen(self) -> "ClientSideHarness":
        return ClientSideHarness(self.vectorizer, _InMemoryIndex(dict(self.index.rows)))


class TestModuleModeContract(AdapterContractTests):
    @pytest.fixture
    def harness(self, server, bge_siglip_vectorizer):
        return ModuleModeHarness(server.url, bge_siglip_vectorizer)


class TestClientSideContract(AdapterContractTests):
    @pytest.fixture
    def harness(self, bge_siglip_vectorizer):
        return ClientSideHarness(bge_siglip_vectorizer)


def test_module_mode_error_keeps_the_core_type_and_index(server, bge_siglip_vectorizer) -> None:
    # Guard for the harness itself: a bad object is reported by the server, not by the harness's own decoding.
    harness = ModuleModeHarness(server.url, bge_siglip_vectorizer)
    with pytest.raises(InvalidInputError) as info:
        harness.add_images(["a", "b"], [encode_image(load_image(np.zeros((8, 8, 3), np.uint8)), "PNG"), b"GIF89a junk"])
    assert isinstance(info.value, InvalidImageError) and info.value.index == 1
    assert harness.count() == 0
