"""Client-side mode without a Weaviate server: the objects prepared for ``insert_many``, how the client packs them,
the query vectors, and agreement with the inference server's vectors."""

from __future__ import annotations

import base64
import uuid

import numpy as np
import pytest
import weaviate
from weaviate.collections.batch.grpc_batch import _BatchGRPC
from weaviate.collections.classes.batch import _BatchObject
from weaviate.collections.classes.config import _CollectionConfigCreate
from weaviate.connect import ConnectionParams
from weaviate.exceptions import WeaviateClosedClientError
from weaviate.util import _ServerVersion

from bge_siglip_vectorizer import InvalidImageError, InvalidTextError
from bge_siglip_vectorizer.testing.images import encode_image, sample_image
from bge_siglip_weaviate import ClientSideCollection, self_provided_collection_arguments


@pytest.fixture
def collection():
    """A real, never-connected weaviate-client Collection: calls get through argument validation, then stop."""
    params = ConnectionParams.from_params(
        http_host="127.0.0.1", http_port=1, http_secure=False, grpc_host="127.0.0.1", grpc_port=2, grpc_secure=False
    )
    client = weaviate.WeaviateClient(connection_params=params, skip_init_checks=True)
    return client.collections.use("Photos")


@pytest.fixture
def adapter(collection, bge_siglip_vectorizer) -> ClientSideCollection:
    return ClientSideCollection(collection, bge_siglip_vectorizer)


def test_collection_arguments_use_self_provided_vectors() -> None:
    payload = _CollectionConfigCreate(name="photos", **self_provided_collection_arguments())._to_dict()
    assert payload["vectorConfig"]["default"]["vectorizer"] == {"none": {}}
    assert {p["name"]: p["dataType"] for p in payload["properties"]} == {"image": ["blob"], "text": ["text"]}
    named = _CollectionConfigCreate(name="p", **self_provided_collection_arguments(vector_name="bge", text_property=None))._to_dict()
    assert list(named["vectorConfig"]) == ["bge"]
    assert [p["name"] for p in named["properties"]] == ["image"]


def test_prepare_images_from_every_input_kind(adapter, bge_siglip_vectorizer, tmp_path) -> None:
    pictures = [sample_image(40 + 8 * i, 48, "RGB", seed=30 + i) for i in range(6)]
    files = [encode_image(p, "PNG") for p in pictures]
    path = tmp_path / "photo.png"
    path.write_bytes(files[1])
    b64 = [base64.b64encode(f).decode("ascii") for f in files]
    inputs = [files[0], path, b64[2], "data:image/png;base64," + b64[3], pictures[4], np.asarray(pictures[5])]
    objects = adapter.prepare_images(inputs, properties=[{"n": i} for i in range(6)])
    expected = bge_siglip_vectorizer.encode_images(files)
    np.testing.assert_allclose(np.asarray([o.vector for o in objects]), expected, atol=1e-5)
    # the BLOB Weaviate would store: base64 of the file, data-URI prefix removed; decoded inputs have none
    assert [o.properties.get("image") for o in objects] == b64[:4] + [None, None]
    assert [o.properties["n"] for o in objects] == list(range(6))
    assert all(o.uuid is None for o in objects)


def test_prepare_texts_with_uuids_and_named_vector(collection, bge_siglip_vectorizer) -> None:
    adapter = ClientSideCollection(collection, bge_siglip_vectorizer, vector_name="bge", text_property="caption")
    texts = ["a photo of a dog on the beach", "ein Hund am Strand"]
    ids = [uuid.uuid4(), uuid.uuid4()]
    objects = adapter.prepare_texts(texts, uuids=ids)
    assert [o.uuid for o in objects] == ids
    assert [o.properties for o in objects] == [{"caption": t} for t in texts]
    assert all(list(o.vector) == ["bge"] for o in objects)
    np.testing.assert_allclose([o.vector["bge"] for o in objects], bge_siglip_vectorizer.encode_texts(texts), atol=1e-6)


def test_bad_items_raise_the_core_error_before_anything_is_prepared(adapter) -> None:
    good = encode_image(sample_image(32, 32, seed=1), "PNG")
    with pytest.raises(InvalidImageError) as info:
        adapter.prepare_images([good, good[:40]])
    assert info.value.index == 1
    with pytest.raises(InvalidTextError) as info:
        adapter.prepare_texts(["fine", ""])
    assert info.value.index == 1
    with pytest.raises(ValueError, match="uuids"):
        adapter.prepare_texts(["a", "b"], uuids=[uuid.uuid4()])


def test_objects_pack_into_the_clients_grpc_batch(adapter, bge_siglip_vectorizer) -> None:
    # The exact conversion insert_many applies (weaviate/collections/data/executor.py -> grpc_batch.py).
    obj = adapter.prepare_texts(["un chat noir sur un canapé"], uuids=[uuid.uuid4()])[0]
    batch_object = _BatchObject(collection="Photos", vector=obj.vector, uuid=str(obj.uuid), properties=obj.properties,
                                tenant=None, references=None, index=0)
    packed = _BatchGRPC(_ServerVersion(1, 37, 0), None, None).grpc_object(batch_object)
    sent = np.frombuffer(packed.vector_bytes, dtype=np.float32)
    np.testing.assert_array_equal(sent, np.asarray(obj.vector, np.float32))
    assert packed.uuid == str(obj.uuid)


def test_insert_and_query_calls_pass_the_clients_validation(adapter) -> None:
    # Not connected: the stock calls must get as far as the network, i.e. the client accepted our arguments.
    with pytest.raises(WeaviateClosedClientError):
        adapter.add_texts(["hello"])
    with pytest.raises(WeaviateClosedClientError):
        adapter.near_text("hello", limit=3)
    with pytest.raises(WeaviateClosedClientError):
        adapter.near_image(encode_image(sample_image(32, 32, seed=2), "PNG"), limit=3)
    assert adapter.add_texts([]) == []


def test_query_vectors_equal_the_core(adapter, bge_siglip_vectorizer) -> None:
    image = encode_image(sample_image(50, 40, seed=3), "PNG")
    np.testing.assert_allclose(adapter.text_query_vector("海滩上的一只狗"), bge_siglip_vectorizer.encode_texts(["海滩上的一只狗"])[0], atol=1e-6)
    np.testing.assert_allclose(adapter.image_query_vector(image), bge_siglip_vectorizer.encode_images([image])[0], atol=1e-6)


def test_client_side_vectors_equal_the_servers(adapter, client) -> None:
    # The two modes are interchangeable: a collection filled by one can be queried by the other.
    image = encode_image(sample_image(64, 48, seed=4), "JPEG")
    answer = client.post("/vectorize", json={"texts": ["кошка спит на окне"], "images": [base64.b64encode(image).decode()]}).json()
    np.testing.assert_allclose(answer["textVectors"][0], adapter.text_query_vector("кошка спит на окне"), atol=1e-5)
    np.testing.assert_allclose(answer["imageVectors"][0], adapter.image_query_vector(image), atol=1e-5)


def test_a_model_path_loads_the_model(collection, bge_siglip_model_dir, bge_siglip_vectorizer) -> None:
    adapter = ClientSideCollection(collection, bge_siglip_model_dir)
    np.testing.assert_allclose(adapter.text_query_vector("hi"), bge_siglip_vectorizer.encode_texts(["hi"])[0], atol=1e-6)
