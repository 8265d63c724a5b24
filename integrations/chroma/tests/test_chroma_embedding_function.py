"""``BGESigLIPEmbeddingFunction`` against the real chromadb registry, validators and collections (no mocks)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from pathlib import Path

import chromadb
import numpy as np
import pytest
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.api.types import validate_embedding_function
from chromadb.utils.data_loaders import ImageLoader
from chromadb.utils.embedding_functions import config_to_embedding_function, known_embedding_functions
from PIL import Image

from bge_siglip_chroma import BGESigLIPEmbeddingFunction, ImageURI, ImageURILoader
from bge_siglip_vectorizer import (
    MODEL_DIR_ENV,
    InvalidImageError,
    InvalidInputError,
    InvalidTextError,
    ModelLoadError,
    ModelMismatchError,
    VectorizerOptions,
    vector_option_names,
)
from bge_siglip_vectorizer.errors import UnsupportedImageTypeError
from bge_siglip_vectorizer.testing.contract import CONTRACT_TEXTS, contract_images
from bge_siglip_vectorizer.testing.images import encode_image


@pytest.fixture
def ef(bge_siglip_model_dir) -> BGESigLIPEmbeddingFunction:
    return BGESigLIPEmbeddingFunction(bge_siglip_model_dir, device="cpu")


@pytest.fixture
def client(chroma_settings):
    return chromadb.EphemeralClient(settings=chroma_settings())


@pytest.fixture
def collection_name(client):
    name = f"ef-{uuid.uuid4().hex[:12]}"
    yield name
    if name in [c.name for c in client.list_collections()]:
        client.delete_collection(name)


def _png_file(directory: Path, array: np.ndarray, name: str) -> str:
    path = directory / name
    path.write_bytes(encode_image(Image.fromarray(array), "PNG"))
    return str(path)


# ------------------------------------------------------------------------------------------------- registry & config
def test_name_is_registered_and_namespaced(ef):
    assert BGESigLIPEmbeddingFunction.name() == "bge-siglip"
    assert known_embedding_functions["bge-siglip"] is BGESigLIPEmbeddingFunction
    # Chroma's own names use underscores or vendor names; ours must not be one of theirs.
    assert not any(name.startswith("bge") for name in known_embedding_functions if name != "bge-siglip")
    validate_embedding_function(ef)  # Chroma's own __call__ signature check
    assert ef.is_legacy() is False


def test_config_is_json_and_round_trips(ef, bge_siglip_model_dir):
    config = ef.get_config()
    # Options that change vectors are stored even at their default (null): derived from the core's marks.
    assert config == {"model": str(Path(bge_siglip_model_dir).resolve()), "device": "cpu", "batch_size": 32,
                      **{name: None for name in vector_option_names(VectorizerOptions)},
                      "fingerprint": ef.vectorizer.fingerprint}
    stored = json.loads(json.dumps(config))  # what Chroma persists
    rebuilt = config_to_embedding_function({"name": "bge-siglip", "config": stored})
    assert isinstance(rebuilt, BGESigLIPEmbeddingFunction)
    assert rebuilt.get_config() == config
    assert rebuilt.vectorizer is ef.vectorizer  # one model per (model, options) per process
    probe = ["ein Hund am Strand", contract_images(1)[0]]
    assert all(np.array_equal(a, b) for a, b in zip(rebuilt(probe), ef(probe)))


def test_relative_model_path_is_stored_absolute(bge_siglip_model_dir, monkeypatch):
    model = Path(bge_siglip_model_dir)
    monkeypatch.chdir(model.parent)
    ef = BGESigLIPEmbeddingFunction(model.name, device="cpu")
    assert ef.get_config()["model"] == str(model.resolve())


def test_same_config_shares_one_model(bge_siglip_model_dir, bge_siglip_vectorizer):
    a = BGESigLIPEmbeddingFunction(bge_siglip_model_dir, device="cpu")
    b = BGESigLIPEmbeddingFunction(str(bge_siglip_model_dir), device="cpu", batch_size=4)
    assert a.vectorizer is b.vectorizer is bge_siglip_vectorizer


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"model": ""},
        {"model": 3},
        {"model": "m", "batch_size": 0},
        {"model": "m", "batch_size": True},
        {"model": "m", "max_num_patches": "256"},
        {"model": "m", "device": 0},
        {"model": "m", "api_key": "secret"},
        {"model": "m", "allow_urls": "no"},
        {"model": "m", "max_num_patches": 0},
        {"model": "m", "backend": "tensorflow"},
    ],
)
def test_validate_config_rejects(bad):
    with pytest.raises(ValueError):
        BGESigLIPEmbeddingFunction.validate_config(bad)


def test_validate_config_update_refuses_a_model_change(ef, tmp_path):
    old = ef.get_config()
    ef.validate_config_update(old, {**old, "device": None, "batch_size": 8, "max_num_patches": 64})  # allowed
    ef.validate_config_update(old, {**old, "model": "/moved/here"})  # same fingerprint: the same model, moved
    with pytest.raises(ModelMismatchError):
        ef.validate_config_update(old, {**old, "fingerprint": "0" * 64})  # another model, even at the same path
    with pytest.raises(ValueError, match="fingerprint"):  # every stored config names its model's fingerprint
        BGESigLIPEmbeddingFunction.build_from_config({k: v for k, v in old.items() if k != "fingerprint"})


def test_a_model_replaced_in_place_is_refused_on_reopen(ef):
    stored = {**ef.get_config(), "fingerprint": "f" * 64}  # as if the directory had been retrained since
    with pytest.raises(ModelMismatchError, match="restore the model it was made with"):
        BGESigLIPEmbeddingFunction.build_from_config(stored)


def test_a_moved_model_can_be_pointed_at_with_modify(ef, client, collection_name, bge_siglip_model_dir, tmp_path):
    collection = client.create_collection(collection_name, embedding_function=ef)
    moved = shutil.copytree(bge_siglip_model_dir, tmp_path / "moved-model")
    collection.modify(configuration={"embedding_function": BGESigLIPEmbeddingFunction(moved, device="cpu",
                                                                                      batch_size=8)})
    stored = client.get_collection(collection_name).configuration_json["embedding_function"]
    assert stored["config"]["batch_size"] == 8
    assert stored["config"]["model"] == str(Path(moved).resolve())
    assert stored["config"]["fingerprint"] == ef.get_config()["fingerprint"]


def test_get_or_create_with_another_model_is_refused(ef, client, collection_name, bge_siglip_other_model_dir):
    client.create_collection(collection_name, embedding_function=ef).add(ids=["a"], documents=["ein Hund"])
    other = BGESigLIPEmbeddingFunction(bge_siglip_other_model_dir, device="cpu")
    with pytest.raises(ModelMismatchError, match=collection_name):
        client.get_or_create_collection(collection_name, embedding_function=other)
    again = client.get_or_create_collection(collection_name, embedding_function=ef)  # the same model: fine
    assert again.count() == 1


def test_upsert_and_update_by_uri_embed_the_image(ef, client, collection_name, tmp_path):
    images = contract_images(3)
    uris = [_png_file(tmp_path, image, f"{i}.png") for i, image in enumerate(images)]
    collection = client.create_collection(collection_name, embedding_function=ef)  # no data loader: URIs as is
    collection.upsert(ids=["a", "b"], uris=uris[:2])  # Chroma alone refuses this ("embed only documents, images")
    collection.update(ids=["a"], uris=[uris[2]])  # ... and silently kept the old vector for this
    stored = collection.get(ids=["a", "b"], include=["embeddings", "uris"])
    expected = ef.vectorizer.encode_images([uris[2], uris[1]])
    np.testing.assert_allclose(np.asarray(stored["embeddings"]), expected, atol=1e-5)
    assert stored["uris"] == [uris[2], uris[1]]


def test_from_collection_gives_back_the_function(ef, client, collection_name, chroma_settings):
    client.create_collection(collection_name, embedding_function=ef)
    reopened = client.get_collection(collection_name)  # no function passed: rebuilt from the stored config
    function = BGESigLIPEmbeddingFunction.from_collection(reopened)
    assert function.get_config() == ef.get_config() and function.vectorizer is ef.vectorizer
    plain = client.create_collection(collection_name + "-plain", embedding_function=None)
    try:
        with pytest.raises(ValueError, match="does not use bge-siglip"):
            BGESigLIPEmbeddingFunction.from_collection(plain)
    finally:
        client.delete_collection(plain.name)


# ------------------------------------------------------------------------------------------------- core options
def test_every_core_option_is_an_option_of_the_function(bge_siglip_model_dir):
    from bge_siglip_chroma import _model_function as module

    assert set(module._OPTION_TYPES) == {f.name for f in dataclasses.fields(VectorizerOptions)}
    assert "max_num_patches" in vector_option_names(VectorizerOptions)
    ef = BGESigLIPEmbeddingFunction(bge_siglip_model_dir, device="cpu", max_image_pixels=10**6, allow_urls=False,
                                    max_num_patches=64)
    config = ef.get_config()
    assert {k: config[k] for k in ("max_image_pixels", "allow_urls", "max_num_patches")} == {
        "max_image_pixels": 10**6, "allow_urls": False, "max_num_patches": 64}
    rebuilt = BGESigLIPEmbeddingFunction.build_from_config(json.loads(json.dumps(config)))
    assert rebuilt.vectorizer is ef.vectorizer  # the same options: the same shared model
    assert rebuilt.vectorizer.limits.allow_urls is False and rebuilt.vectorizer.max_num_patches == 64
    # Options that change vectors are written even at their default, so a later default cannot change them.
    assert BGESigLIPEmbeddingFunction(bge_siglip_model_dir, device="cpu").get_config()["max_num_patches"] is None
    with pytest.raises(TypeError, match=r"unknown options \['max_patches'\]"):
        BGESigLIPEmbeddingFunction(bge_siglip_model_dir, max_patches=64)


def test_portable_model_reference_reopens_on_another_machine(bge_siglip_model_dir, tmp_path, monkeypatch,
                                                             chroma_server, chroma_settings):
    """A ``chroma run`` collection made on one machine, opened on another whose models live elsewhere."""
    here, there = tmp_path / "here", tmp_path / "there"
    shutil.copytree(bge_siglip_model_dir, here / "photos-model")
    shutil.copytree(bge_siglip_model_dir, there / "photos-model")
    monkeypatch.setenv(MODEL_DIR_ENV, str(here))
    ef = BGESigLIPEmbeddingFunction(here / "photos-model", device="cpu")
    assert ef.get_config()["model"] == "$BGE_SIGLIP_MODEL_DIR/photos-model"
    name = f"portable-{uuid.uuid4().hex[:8]}"
    remote = chromadb.HttpClient(host=chroma_server.host, port=chroma_server.port, settings=chroma_settings())
    remote.create_collection(name, embedding_function=ef).add(ids=["t"], documents=["ein Hund am Strand"])
    try:
        monkeypatch.setenv(MODEL_DIR_ENV, str(there))  # the other machine
        SharedSystemClient.clear_system_cache()
        fresh = chromadb.HttpClient(host=chroma_server.host, port=chroma_server.port, settings=chroma_settings())
        collection = fresh.get_collection(name)
        function = BGESigLIPEmbeddingFunction.from_collection(collection)
        assert function.vectorizer.components.source == str(there / "photos-model")
        assert collection.query(query_texts=["ein Hund am Strand"], n_results=1)["ids"] == [["t"]]
        monkeypatch.delenv(MODEL_DIR_ENV)
        with pytest.raises(ValueError, match="BGE_SIGLIP_MODEL_DIR, which is not set"):  # Chroma wraps ours
            BGESigLIPEmbeddingFunction.from_collection(fresh.get_collection(name))
    finally:
        remote.delete_collection(name)


def test_collection_defaults_to_cosine(ef, client, collection_name):
    collection = client.create_collection(collection_name, embedding_function=ef)
    assert collection.configuration_json["hnsw"]["space"] == "cosine"
    assert ef.default_space() in ef.supported_spaces()


# ------------------------------------------------------------------------------------------------- output & routing
def test_output_is_a_list_of_unit_float32_vectors(ef):
    vectors = ef(["a photo of a dog on the beach", contract_images(1)[0]])
    assert isinstance(vectors, list) and len(vectors) == 2
    for vector in vectors:
        assert isinstance(vector, np.ndarray)
        assert vector.dtype == np.float32 and vector.shape == (ef.vectorizer.dim,)
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-4


def test_embed_query_by_keyword_matches_call(ef):
    image = contract_images(1)[0]
    for item in (CONTRACT_TEXTS[1], image):
        query = ef.embed_query(input=[item])
        assert len(query) == 1 and query[0].dtype == np.float32
        np.testing.assert_array_equal(query[0], ef([item])[0])


def test_mixed_items_route_to_the_right_tower_in_one_batched_call(ef, tmp_path):
    images = contract_images(3)
    uri = ImageURI(_png_file(tmp_path, images[2], "two.png"))
    items = [CONTRACT_TEXTS[0], images[0], CONTRACT_TEXTS[1], images[1], uri, CONTRACT_TEXTS[2]]
    stats = ef.vectorizer.stats
    before = (stats.image_batches, stats.text_batches, stats.images, stats.texts)
    vectors = np.stack(ef(items))
    after = (stats.image_batches, stats.text_batches, stats.images, stats.texts)
    # 3 images and 3 texts, each in ONE forward batch (Chroma's OpenCLIP function runs one forward per item).
    assert tuple(b - a for a, b in zip(before, after)) == (1, 1, 3, 3)
    expected_text = ef.vectorizer.encode_texts(CONTRACT_TEXTS[:3])
    expected_image = ef.vectorizer.encode_images(images)  # the PNG file decodes to the same pixels as images[2]
    np.testing.assert_allclose(vectors[[0, 2, 5]], expected_text, atol=1e-6)
    np.testing.assert_allclose(vectors[[1, 3, 4]], expected_image, atol=1e-6)


def test_plain_strings_are_documents_even_if_they_name_files(ef, tmp_path):
    path = _png_file(tmp_path, contract_images(1)[0], "dog.png")
    as_text, as_image = ef([path, ImageURI(path)])
    np.testing.assert_allclose(as_text, ef.vectorizer.encode_texts([path])[0], atol=1e-6)
    np.testing.assert_allclose(as_image, ef.vectorizer.encode_images([path])[0], atol=1e-6)


def test_mixed_documents_and_images_in_one_add(ef, client, collection_name, tmp_path):
    collection = client.create_collection(collection_name, embedding_function=ef, data_loader=ImageURILoader())
    images = contract_images(2)
    uri = _png_file(tmp_path, images[1], "one.png")
    # Chroma itself refuses documents= and images=/uris= together (exactly one embeddable field per call) ...
    with pytest.raises(ValueError, match="Exactly one of"):
        collection.add(ids=["t", "i"], documents=["ein Hund am Strand", "x"], images=images)
    # ... so a mixed add embeds the mixed list in one call and stores documents and URIs alongside.
    items = [CONTRACT_TEXTS[1], images[0], ImageURI(uri), CONTRACT_TEXTS[3]]
    collection.add(
        ids=["txt-1", "img-0", "img-1", "txt-3"],
        embeddings=ef(items),
        documents=[CONTRACT_TEXTS[1], None, None, CONTRACT_TEXTS[3]],
        uris=[None, None, uri, None],
    )
    assert collection.count() == 4
    assert collection.query(query_texts=[CONTRACT_TEXTS[3]], n_results=4)["ids"][0][0] == "txt-3"
    assert collection.query(query_images=[images[0]], n_results=4)["ids"][0][0] == "img-0"
    assert collection.query(query_uris=[uri], n_results=4)["ids"][0][0] == "img-1"
    assert collection.get(ids=["img-1"], include=["uris"])["uris"] == [uri]


# ------------------------------------------------------------------------------------------------- loaders
def test_chroma_image_loader_and_uris(ef, client, collection_name, tmp_path):
    images = contract_images(4)
    uris = [_png_file(tmp_path, image, f"{i}.png") for i, image in enumerate(images)]
    loader = ImageLoader(max_workers=2)  # Chroma's own loader: decodes with PIL, hands us numpy arrays
    collection = client.create_collection(collection_name, embedding_function=ef, data_loader=loader)
    collection.add(ids=[f"img-{i}" for i in range(4)], uris=uris)
    for i, image in enumerate(images):
        assert collection.query(query_images=[image], n_results=2)["ids"][0][0] == f"img-{i}"
    assert collection.query(query_uris=[uris[2]], n_results=2)["ids"][0][0] == "img-2"
    data = collection.get(ids=["img-3"], include=["data"])["data"]
    np.testing.assert_array_equal(data[0], images[3])


def test_image_uri_loader_passes_uris_undecoded(tmp_path):
    uris = [str(tmp_path / "a.png"), None, "https://example.com/b.jpg"]
    loaded = ImageURILoader()(uris=uris)
    assert loaded == uris
    assert isinstance(loaded[0], ImageURI) and loaded[1] is None and isinstance(loaded[2], ImageURI)


def test_image_uri_loader_gives_typed_errors_and_writes_nothing(ef, client, collection_name, tmp_path):
    collection = client.create_collection(collection_name, embedding_function=ef, data_loader=ImageURILoader())
    good = _png_file(tmp_path, contract_images(1)[0], "good.png")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(InvalidImageError) as info:
        collection.add(ids=["a", "b", "c"], uris=[good, str(corrupt), good])
    assert info.value.index == 1
    assert info.value.source == str(corrupt)
    assert "#1" in str(info.value) and "corrupt.jpg" in str(info.value)
    with pytest.raises(InvalidImageError) as info:
        collection.add(ids=["a", "b"], uris=[good, str(tmp_path / "missing.png")])
    assert info.value.index == 1
    assert collection.count() == 0


# ------------------------------------------------------------------------------------------------- bad input
def test_bad_array_in_images_is_the_core_error_and_writes_nothing(ef, client, collection_name):
    collection = client.create_collection(collection_name, embedding_function=ef)
    collection.add(ids=["seed"], images=contract_images(1))
    bad = np.zeros((16, 16, 3), dtype=np.float32)  # Chroma's own validation accepts it (ndarray, ndim >= 2)
    with pytest.raises(InvalidImageError) as info:
        collection.add(ids=["a", "b", "c"], images=[contract_images(2)[1], contract_images(3)[2], bad])
    assert info.value.index == 2
    assert "uint8" in str(info.value)
    with pytest.raises(InvalidTextError) as info:
        collection.query(query_texts=["fine", " "])
    assert info.value.index == 1
    assert collection.count() == 1


def test_unsupported_types_raise_typed_errors(ef):
    with pytest.raises(UnsupportedImageTypeError) as info:
        ef(["fine", 3.5])
    assert info.value.index == 1
    for single in ("just one string", contract_images(1)[0]):
        with pytest.raises(InvalidInputError, match="expected a list"):
            ef(single)


def test_a_missing_model_fails_when_the_function_is_built(tmp_path):
    with pytest.raises(ModelLoadError, match="no-model-here"):
        BGESigLIPEmbeddingFunction(tmp_path / "no-model-here", device="cpu")
