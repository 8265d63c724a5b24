"""The core adapter contract suite, run wherever it applies without a Weaviate binary.

* :class:`ModuleModeHarness` drives our inference server over real HTTP the way Weaviate's ``multi2vec-clip`` module
  does: images as base64 of their file bytes, texts as they are. Each ``add_*`` call is ONE ``/vectorize`` request
  (like one object with several image or text fields), so when an item is bad it is the *server* that names its
  position: the harness turns the server's own answer (status and ``{"error": "images[i]: ..."}``) into the core's
  typed error, and writes nothing unless the server answered 200 with one vector per item. Any other answer becomes
  a :class:`ServerError`, which no bad-input contract test accepts. The vectors go into an in-memory brute-force
  index standing in for Weaviate's vector index. It proves the server routes texts and images to the right towers,
  answers bad items with errors that name them, and that its vectors rank exactly like the core's. (Many requests in
  flight, batched across requests, are covered in ``test_batching.py``.)
* :class:`ClientSideHarness` drives :class:`ClientSideCollection` through its real ``add_images`` / ``add_texts`` /
  ``near_text`` / ``near_image`` on an in-memory stand-in for a weaviate ``Collection`` (``data.insert_many`` stores,
  ``query.near_vector`` searches). So "nothing written" checks what the adapter actually inserted, not what a harness
  decided to store. It proves the client-side path up to the client call, not Weaviate's storage.
"""

from __future__ import annotations

import base64
import re
import uuid
from types import SimpleNamespace
from typing import Any, Sequence

import httpx
import numpy as np
import pytest
from PIL import Image
from weaviate.classes.data import DataObject

from bge_siglip_vectorizer import (
    ImageTooLargeError,
    InvalidImageError,
    InvalidInputError,
    InvalidTextError,
)
from bge_siglip_vectorizer.testing import contract as c
from bge_siglip_vectorizer.testing.contract import StoreHarness, contract_images
from bge_siglip_vectorizer.testing.images import encode_image, sample_image
from bge_siglip_weaviate import ClientSideCollection


class _InMemoryIndex:
    """Brute-force cosine search over unit vectors (what Weaviate's index answers for these small sets)."""

    def __init__(self, rows: dict[str, np.ndarray] | None = None) -> None:
        self.rows = rows if rows is not None else {}

    def nearest(self, query: Sequence[float], k: int) -> list[str]:
        ids = list(self.rows)
        scores = np.stack([self.rows[i] for i in ids]) @ np.asarray(query, np.float32)
        return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


# ------------------------------------------------------------------------------------------------ module mode
class ServerError(RuntimeError):
    """The server answered an error that does not name one item (overload, size limit, internal error, ...)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


_ITEM_ERROR = re.compile(r"^(texts|images)\[(\d+)\]: (.+)$", re.S)


def error_from_response(response: httpx.Response) -> Exception:
    """The exception a Weaviate user would act on, derived only from what the server answered."""
    try:
        message = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"HTTP {response.status_code} without an {{'error': ...}} body: {response.text!r}")
    match = _ITEM_ERROR.match(message)
    if match is None or response.status_code not in (400, 413):
        return ServerError(response.status_code, message)
    field, index, reason = match.group(1), int(match.group(2)), match.group(3)
    if field == "texts":
        return InvalidTextError(reason, index=index)
    if response.status_code == 413:
        return ImageTooLargeError(reason, index=index)
    return InvalidImageError(reason, index=index)


def _blob(item: Any) -> Any:
    """What a user stores in a BLOB property: base64 of file bytes. Arrays are saved as PNG first.

    Anything else cannot be stored as a BLOB at all; that is reported as a plain ``TypeError`` (never the core's
    typed error, so the harness cannot answer a bad-input contract test in the server's place).
    """
    if isinstance(item, bytes):
        return base64.b64encode(item).decode("ascii")
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 3 and item.shape[2] in (3, 4):
        return base64.b64encode(encode_image(Image.fromarray(item), "PNG")).decode("ascii")
    raise TypeError(f"cannot store {type(item).__name__} {getattr(item, 'shape', '')} as a Weaviate BLOB")


class ModuleModeHarness(StoreHarness):
    def __init__(self, url: str, vectorizer, index: _InMemoryIndex | None = None) -> None:
        self.url = url
        self.vectorizer = vectorizer
        self.index = index or _InMemoryIndex()

    def vectorize(self, texts: Sequence[Any] = (), images: Sequence[Any] = ()) -> dict:
        """One ``/vectorize`` request; raises what the server's answer means."""
        body: dict[str, list[Any]] = {}
        if texts:  # Weaviate omits empty fields
            body["texts"] = list(texts)
        if images:
            body["images"] = list(images)
        with httpx.Client(base_url=self.url, timeout=60) as http:
            response = http.post("/vectorize", json=body)
        if response.status_code != 200:
            raise error_from_response(response)
        answer = response.json()
        # What Weaviate checks ("inputs are not equal to vectors returned"), per modality.
        assert len(answer["textVectors"]) == len(texts) and len(answer["imageVectors"]) == len(images), answer
        return answer

    def _write(self, ids: Sequence[str], vectors: list) -> None:
        for object_id, vector in zip(ids, vectors, strict=True):
            self.index.rows[object_id] = np.asarray(vector, np.float32)

    def add_image_payloads(self, ids: Sequence[str], payloads: Sequence[Any]) -> None:
        """Send ``payloads`` as the request's ``images`` list as they are (any JSON values)."""
        self._write(ids, self.vectorize(images=payloads)["imageVectors"])

    def add_images(self, ids, images, metadatas=None) -> None:
        self.add_image_payloads(ids, [_blob(item) for item in images])

    def add_texts(self, ids, texts, metadatas=None) -> None:
        self._write(ids, self.vectorize(texts=texts)["textVectors"])

    def query_text(self, text: str, k: int) -> list[str]:  # nearText: the concept goes through /vectorize
        return self.index.nearest(self.vectorize(texts=[text])["textVectors"][0], k)

    def query_image(self, image: Any, k: int) -> list[str]:  # nearImage: base64 through /vectorize
        return self.index.nearest(self.vectorize(images=[_blob(image)])["imageVectors"][0], k)

    def count(self) -> int:
        return len(self.index.rows)


# What neither harness can prove without a Weaviate binary (none is installable here): Weaviate's own storage.
_WEAVIATE_STORAGE = ("objects, ids, properties and persistence are Weaviate's storage; no Weaviate can run here "
                     "(no binary, no Docker), and an in-memory stand-in would prove the stand-in, not Weaviate")


class TestModuleModeContract(c.ContractTests, c.AddTests, c.RankingTests, c.BadBatchTests):
    opt_outs = {
        "MetadataTests": _WEAVIATE_STORAGE, "ExplicitIdTests": _WEAVIATE_STORAGE,
        "ContentIdTests": _WEAVIATE_STORAGE, "UpsertTests": _WEAVIATE_STORAGE, "DeleteTests": _WEAVIATE_STORAGE,
        "ReopenTests": "the inference server stores nothing (Weaviate stores the vectors); " + _WEAVIATE_STORAGE,
        "ModelGuardTests": "a multi2vec-clip collection names its inference URL, not a model, and Weaviate calls "
                           "whatever model serves there; the server has one model per process",
        "AsyncTests": "module mode has no client-side API: Weaviate's Go module calls the server over HTTP",
        "AsyncOffLoopTests": "module mode has no client-side API: Weaviate's Go module calls the server over HTTP",
    }

    @pytest.fixture
    def harness(self, server, bge_siglip_vectorizer):
        return ModuleModeHarness(server.url, bge_siglip_vectorizer)

    def test_empty_text_writes_nothing(self, store: ModuleModeHarness) -> None:
        """Replaces the core test, which expects blank text to be refused: this server embeds it on purpose.

        Weaviate's ``multi2vec-clip`` module sends every string value of a vectorised text field, ``""`` included,
        and the reference container embeds it; refusing it would fail the user's insert inside Weaviate. What must
        still be refused is a text item that is not a string: the server names its position, nothing is written.
        """
        store.add_texts(["a", "b", "c"], ["fine", "", "   "])
        assert store.count() == 3
        expected = store.vectorizer.encode_texts(["fine", "", "   "], allow_empty=True)
        np.testing.assert_allclose(np.stack([store.index.rows[i] for i in "abc"]), expected, atol=1e-5)
        with pytest.raises(InvalidTextError) as info:
            store.add_texts(["d", "e", "f"], ["fine", 7, "also fine"])  # type: ignore[list-item]
        assert info.value.index == 1
        assert "string" in info.value.reason
        assert store.count() == 3

    def test_malformed_image_array_is_a_typed_error(self, store: ModuleModeHarness) -> None:
        """Replaces the core test: a float64 7-channel array cannot be put in a Weaviate BLOB property (base64 of an
        image file), so no request carrying it exists. The server-side counterpart: an ``images`` item that is not a
        base64 string is refused with its position, and nothing is written."""
        with pytest.raises(TypeError):  # the harness refuses it without pretending to be the server
            store.add_images(["a", "b"], [contract_images(1)[0], np.zeros((8, 8, 7), dtype=np.float64)])
        good = _blob(contract_images(1)[0])
        with pytest.raises(InvalidImageError) as info:
            store.add_image_payloads(["a", "b", "c"], [good, {"b64": "x"}, good])
        assert info.value.index == 1
        assert store.count() == 0


def test_module_mode_errors_come_from_the_server(server, start_server, bge_siglip_vectorizer) -> None:
    # Guard for the harness itself: the index is the one the server reported, and an error that names no item
    # does not become a typed input error.
    harness = ModuleModeHarness(server.url, bge_siglip_vectorizer)
    png = encode_image(sample_image(24, 24, seed=3), "PNG")
    with pytest.raises(InvalidImageError) as info:
        harness.add_images(["a", "b", "c"], [png, png, b"GIF89a junk"])
    assert info.value.index == 2 and "not an image" in info.value.reason
    assert harness.count() == 0

    small = ModuleModeHarness(start_server(max_items_per_request=2, max_image_pixels=30 * 30).url, bge_siglip_vectorizer)
    with pytest.raises(ServerError) as overflow:
        small.add_texts(["a", "b", "c"], ["x", "y", "z"])
    assert overflow.value.status == 413 and "at most 2" in overflow.value.message
    with pytest.raises(ImageTooLargeError) as too_large:
        small.add_images(["a", "b"], [png, encode_image(sample_image(40, 40, seed=4), "PNG")])
    assert too_large.value.index == 1
    assert small.count() == 0


# ------------------------------------------------------------------------------------------------ client-side mode
class _InMemoryCollection:
    """Stands in for a weaviate ``Collection``: the two calls :class:`ClientSideCollection` makes, with the client's
    return shapes (``insert_many`` -> ``.errors`` / ``.uuids``, ``near_vector`` -> ``.objects[i].uuid``)."""

    def __init__(self) -> None:
        self.index = _InMemoryIndex()
        self.properties: dict[str, dict[str, Any]] = {}
        self.data = SimpleNamespace(insert_many=self._insert_many)
        self.query = SimpleNamespace(near_vector=self._near_vector)

    def _insert_many(self, objects: list[DataObject]) -> Any:
        uuids = {}
        for position, obj in enumerate(objects):
            assert isinstance(obj, DataObject) and obj.uuid is not None
            self.index.rows[str(obj.uuid)] = np.asarray(obj.vector, np.float32)
            self.properties[str(obj.uuid)] = dict(obj.properties or {})
            uuids[position] = obj.uuid
        return SimpleNamespace(errors={}, uuids=uuids)

    def _near_vector(self, near_vector: list[float], limit: int, **options: Any) -> Any:
        return SimpleNamespace(objects=[SimpleNamespace(uuid=uuid.UUID(u)) for u in self.index.nearest(near_vector, limit)])


def _uuid(object_id: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, object_id)


class ClientSideHarness(StoreHarness):
    def __init__(self, vectorizer, collection: _InMemoryCollection | None = None) -> None:
        self.vectorizer = vectorizer
        self.collection = collection or _InMemoryCollection()
        self.adapter = ClientSideCollection(self.collection, vectorizer)
        self._names: dict[uuid.UUID, str] = {}

    def _add(self, add, ids, items, metadatas) -> None:
        uuids = [_uuid(i) for i in ids]
        self._names.update(zip(uuids, ids))
        assert add(items, properties=metadatas, uuids=uuids) == [str(u) for u in uuids]

    def add_images(self, ids, images, metadatas=None) -> None:
        self._add(self.adapter.add_images, ids, images, metadatas)

    def add_texts(self, ids, texts, metadatas=None) -> None:
        self._add(self.adapter.add_texts, ids, texts, metadatas)

    def get_metadata(self, ids) -> list:
        # What the adapter put in each DataObject's properties (the stand-in keeps them as given).
        return [self.collection.properties.get(str(_uuid(i))) for i in ids]

    def _ids(self, result) -> list[str]:
        return [self._names.get(obj.uuid, str(obj.uuid)) for obj in result.objects]

    def query_text(self, text: str, k: int) -> list[str]:
        return self._ids(self.adapter.near_text(text, limit=k))

    def query_image(self, image: Any, k: int) -> list[str]:
        return self._ids(self.adapter.near_image(image, limit=k))

    def count(self) -> int:
        return len(self.collection.index.rows)


class TestClientSideContract(c.ContractTests, c.AddTests, c.RankingTests, c.BadBatchTests, c.MetadataTests):
    """``MetadataTests`` here proves the adapter puts the caller's properties into each ``DataObject`` (what the
    stand-in keeps), not that Weaviate stores them."""

    opt_outs = {
        "ExplicitIdTests": _WEAVIATE_STORAGE, "ContentIdTests": _WEAVIATE_STORAGE, "UpsertTests": _WEAVIATE_STORAGE,
        "DeleteTests": _WEAVIATE_STORAGE, "ReopenTests": _WEAVIATE_STORAGE,
        "ModelGuardTests": "a Weaviate collection has no free-form metadata to record a model fingerprint in (only "
                           "its description), and no Weaviate runs here to test one; client-side mode does not "
                           "guard (its README says so)",
        "AsyncTests": "ClientSideCollection wraps the sync weaviate client only (WeaviateAsyncClient is not wrapped)",
        "AsyncOffLoopTests": "ClientSideCollection wraps the sync weaviate client only",
    }

    @pytest.fixture
    def harness(self, bge_siglip_vectorizer):
        return ClientSideHarness(bge_siglip_vectorizer)


def test_client_side_harness_counts_what_the_adapter_inserted(bge_siglip_vectorizer) -> None:
    # Guard for the harness: writes reach the stand-in only through the adapter's insert_many.
    harness = ClientSideHarness(bge_siglip_vectorizer)
    harness.adapter.prepare_texts(["prepared, never inserted"])
    assert harness.count() == 0
    harness.add_texts(["a"], ["inserted"])
    assert harness.count() == 1 and harness.query_text("inserted", k=1) == ["a"]


def test_client_side_takes_the_core_options(bge_siglip_model_dir) -> None:
    # Every VectorizerOptions field by name (derived from the core, not listed), for a model given by path.
    adapter = ClientSideCollection(_InMemoryCollection(), bge_siglip_model_dir, device="cpu", max_num_patches=64)
    assert adapter.vectorizer.max_num_patches == 64
    with pytest.raises(TypeError, match="unknown options"):
        ClientSideCollection(_InMemoryCollection(), bge_siglip_model_dir, max_patches=64)
