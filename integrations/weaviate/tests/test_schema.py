"""Module mode: the collection config our helpers build, serialised by the weaviate-client's own payload code.

``_CollectionConfigCreate(...)._to_dict()`` is exactly what ``client.collections.create`` posts to ``/v1/schema``
(see weaviate/collections/collections/executor.py), so these tests check the wire format without a server.
"""

from __future__ import annotations

import pytest
from weaviate.classes.config import Configure, DataType, Multi2VecField, Property
from weaviate.collections.classes.config import _CollectionConfigCreate

from bge_siglip_weaviate import multi2vec_clip_config, multi2vec_collection_arguments


def _payload(name: str = "photos", **kwargs) -> dict:
    return _CollectionConfigCreate(name=name, **multi2vec_collection_arguments(**kwargs))._to_dict()


def _module_settings(payload: dict, vector: str = "default") -> dict:
    vectorizer = payload["vectorConfig"][vector]["vectorizer"]
    assert list(vectorizer) == ["multi2vec-clip"]
    return vectorizer["multi2vec-clip"]


def test_payload_names_the_module_fields_and_inference_url() -> None:
    payload = _payload(image_fields=["image"], text_fields=["caption"], inference_url="http://bge-siglip:8080")
    assert payload["class"] == "Photos"
    assert _module_settings(payload) == {
        "imageFields": ["image"],
        "textFields": ["caption"],
        "inferenceUrl": "http://bge-siglip:8080",
    }
    properties = {p["name"]: p["dataType"] for p in payload["properties"]}
    assert properties == {"image": ["blob"], "caption": ["text"]}


def test_same_config_as_the_stock_call() -> None:
    ours = multi2vec_clip_config(image_fields=["image"], text_fields=["caption"], inference_url="http://x:8080")
    stock = Configure.Vectors.multi2vec_clip(image_fields=["image"], text_fields=["caption"], inference_url="http://x:8080")
    assert ours._to_dict() == stock._to_dict()


def test_without_inference_url_weaviate_uses_clip_inference_api() -> None:
    settings = _module_settings(_payload(image_fields=["image"]))
    assert settings == {"imageFields": ["image"]}  # no textFields, no inferenceUrl, no weights


def test_weights_serialise_per_kind() -> None:
    payload = _payload(image_fields={"image": 0.7}, text_fields={"caption": 0.2, "title": 0.1})
    settings = _module_settings(payload)
    assert settings["imageFields"] == ["image"]
    assert settings["textFields"] == ["caption", "title"]
    assert settings["weights"] == {"imageFields": [0.7], "textFields": [0.2, 0.1]}


def test_client_field_objects_are_accepted() -> None:
    settings = _module_settings(_payload(image_fields=[Multi2VecField(name="photo", weight=1.0)], text_fields=None))
    assert settings == {"imageFields": ["photo"], "weights": {"imageFields": [1.0]}}


def test_named_vector_and_extra_properties() -> None:
    payload = _payload(
        image_fields=["image"], text_fields=["caption"], vector_name="bge_siglip",
        extra_properties=[Property(name="url", data_type=DataType.TEXT, skip_vectorization=True)],
    )
    assert list(payload["vectorConfig"]) == ["bge_siglip"]
    assert _module_settings(payload, "bge_siglip")["imageFields"] == ["image"]
    assert [p["name"] for p in payload["properties"]] == ["image", "caption", "url"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_fields": {"a": 0.5, "b": None}}, "weight"),  # Weaviate needs one weight per field or none
        ({"image_fields": [Multi2VecField(name="a", weight=0.5), "b"]}, "weight"),
        ({"image_fields": []}, "empty"),
        ({"image_fields": None, "text_fields": None}, "image_fields, text_fields"),
        ({"image_fields": ["x"], "text_fields": ["x"]}, "both"),
        ({"image_fields": ["x", "x"]}, "duplicate"),
    ],
)
def test_invalid_field_lists_are_refused_before_weaviate_sees_them(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        multi2vec_clip_config(**kwargs)


def test_a_single_string_is_not_a_field_list() -> None:
    with pytest.raises(TypeError, match="wrap it in a list"):
        multi2vec_clip_config(image_fields="image")


def test_extra_property_cannot_shadow_a_vectorised_field() -> None:
    with pytest.raises(ValueError, match="already"):
        multi2vec_collection_arguments(image_fields=["image"], extra_properties=[Property(name="image", data_type=DataType.TEXT)])
