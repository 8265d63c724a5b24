"""Every case of the multi2vec-clip contract, over real HTTP against the running server."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from bge_siglip_vectorizer.testing.images import encode_image, sample_image


def _vectors(response) -> tuple[np.ndarray, np.ndarray]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"textVectors", "imageVectors"}
    return np.asarray(body["textVectors"], np.float32), np.asarray(body["imageVectors"], np.float32)


def _assert_error(response, status: int, *needles: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body  # never FastAPI's {"detail": ...}
    assert isinstance(body["error"], str) and body["error"]
    for needle in needles:
        assert needle in body["error"], body["error"]
    return body["error"]


# ------------------------------------------------------------------------------------------------ probes, meta
def test_ready_and_live_answer_204_without_body(client) -> None:
    for path in ("/.well-known/ready", "/.well-known/live"):
        response = client.get(path)
        assert response.status_code == 204
        assert response.content == b""


def test_meta_is_a_json_object_describing_the_model(client, bge_siglip_vectorizer, bge_siglip_model_dir) -> None:
    response = client.get("/meta")
    assert response.status_code == 200
    meta = response.json()
    assert isinstance(meta, dict)
    # Weaviate relays /meta to every user of /v1/meta: the server's model path is not in it.
    assert "source" not in meta
    assert str(bge_siglip_model_dir) not in response.text and str(bge_siglip_model_dir.parent) not in response.text
    assert meta["dim"] == bge_siglip_vectorizer.dim
    assert meta["max_num_patches"] == bge_siglip_vectorizer.max_num_patches
    for key in ("version", "vision_tower", "text_tower"):
        assert meta[key]
    assert meta["server"]["protocol"] == "multi2vec-clip"
    assert meta["server"]["batching"] is True


# ------------------------------------------------------------------------------------------------ shapes
def test_body_without_content_type_is_parsed(client) -> None:
    # Weaviate's Go client posts the JSON without setting a Content-Type header.
    response = client.post("/vectorize", content=b'{"texts": ["no header"]}')
    assert "content-type" not in response.request.headers
    text_vectors, _ = _vectors(response)
    assert len(text_vectors) == 1


def test_texts_only_with_images_field_omitted(client, bge_siglip_vectorizer) -> None:
    texts = ["a photo of a dog on the beach", "ein Hund am Strand", "海滩上的一只狗"]
    text_vectors, image_vectors = _vectors(client.post("/vectorize", json={"texts": texts}))
    assert image_vectors.shape == (0,)
    assert text_vectors.shape == (3, bge_siglip_vectorizer.dim)
    np.testing.assert_allclose(text_vectors, bge_siglip_vectorizer.encode_texts(texts), atol=1e-5)


def test_images_only_with_texts_field_omitted(client, bge_siglip_vectorizer, png_b64) -> None:
    images = [png_b64(1), png_b64(2, 90, 30)]
    text_vectors, image_vectors = _vectors(client.post("/vectorize", json={"images": images}))
    assert text_vectors.shape == (0,)
    expected = bge_siglip_vectorizer.encode_images([base64.b64decode(b) for b in images])
    np.testing.assert_allclose(image_vectors, expected, atol=1e-5)


def test_null_and_empty_fields_are_empty_lists(client, png_b64) -> None:
    # Weaviate's Go client omits empty fields (omitempty) or, in some versions, sends null.
    text_vectors, image_vectors = _vectors(client.post("/vectorize", json={"texts": None, "images": [png_b64(3)]}))
    assert len(text_vectors) == 0 and len(image_vectors) == 1
    assert client.post("/vectorize", json={}).json() == {"textVectors": [], "imageVectors": []}
    assert client.post("/vectorize", json={"texts": [], "images": []}).json() == {"textVectors": [], "imageVectors": []}


def test_several_texts_and_the_same_image_twice(client, bge_siglip_vectorizer, png_b64) -> None:
    texts = ["This is plane", "Boeing 737", "Blue plane"]
    image = png_b64(4, 64, 64)
    text_vectors, image_vectors = _vectors(client.post("/vectorize", json={"texts": texts, "images": [image, image]}))
    assert text_vectors.shape == (3, bge_siglip_vectorizer.dim)
    assert image_vectors.shape == (2, bge_siglip_vectorizer.dim)
    assert np.array_equal(image_vectors[0], image_vectors[1])  # exact, as the reference smoke test asserts
    assert client.post("/vectorize", json={"images": [image, image]}).json()["imageVectors"][0] == \
        client.post("/vectorize", json={"images": [image, image]}).json()["imageVectors"][1]
    # order preserved: each text's vector is its own
    np.testing.assert_allclose(text_vectors, bge_siglip_vectorizer.encode_texts(texts), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text_vectors, axis=1), 1.0, atol=1e-5)


def test_mixed_request_matches_the_core(client, bge_siglip_vectorizer, png_b64) -> None:
    texts = ["un chat noir sur un canapé", "кошка спит на окне"]
    images = [png_b64(5, 30, 70), png_b64(6, 128, 80), png_b64(7, 50, 50)]
    text_vectors, image_vectors = _vectors(client.post("/vectorize", json={"texts": texts, "images": images}))
    np.testing.assert_allclose(text_vectors, bge_siglip_vectorizer.encode_texts(texts), atol=1e-5)
    expected = bge_siglip_vectorizer.encode_images([base64.b64decode(b) for b in images])
    np.testing.assert_allclose(image_vectors, expected, atol=1e-5)


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"), ("L", "PNG"), ("RGB", "JPEG"), ("CMYK", "JPEG"), ("P", "GIF"),
     ("RGB", "WEBP")],
)
def test_image_modes_and_formats(client, bge_siglip_vectorizer, mode, fmt) -> None:
    data = encode_image(sample_image(60, 45, mode, seed=11), fmt)
    _, image_vectors = _vectors(client.post("/vectorize", json={"images": [base64.b64encode(data).decode()]}))
    np.testing.assert_allclose(image_vectors, bge_siglip_vectorizer.encode_images([data]), atol=1e-5)


def test_transparent_png_is_composited_not_black(client, bge_siglip_vectorizer) -> None:
    # An RGBA image must not be encoded as if its RGB channels were all there is (alpha dropped -> black areas).
    rgba = sample_image(64, 64, "RGBA", seed=12)
    data = encode_image(rgba, "PNG")
    _, vectors = _vectors(client.post("/vectorize", json={"images": [base64.b64encode(data).decode()]}))
    dropped_alpha = bge_siglip_vectorizer.encode_images([np.asarray(rgba)[:, :, :3].copy()])
    assert not np.allclose(vectors, dropped_alpha, atol=1e-3)


def test_data_uri_prefix_and_wrapped_base64_are_accepted(client, png_b64) -> None:
    bare = png_b64(8)
    wrapped = "\n".join(bare[i : i + 76] for i in range(0, len(bare), 76))  # MIME-style line wrapping
    bodies = [{"images": [bare]}, {"images": ["data:image/png;base64," + bare]}, {"images": [wrapped]}]
    vectors = [_vectors(client.post("/vectorize", json=body))[1] for body in bodies]
    np.testing.assert_allclose(vectors[1], vectors[0], atol=1e-6)
    np.testing.assert_allclose(vectors[2], vectors[0], atol=1e-6)


def test_long_text_is_truncated_not_an_error(client, bge_siglip_vectorizer) -> None:
    long_text = " ".join(["the quick brown fox jumps over the lazy dog"] * 600)  # thousands of tokens
    text_vectors, _ = _vectors(client.post("/vectorize", json={"texts": [long_text, "short"]}))
    np.testing.assert_allclose(text_vectors, bge_siglip_vectorizer.encode_texts([long_text, "short"]), atol=1e-5)


# ------------------------------------------------------------------------------------------------ errors
def test_bad_base64_is_400_naming_the_item(client, png_b64) -> None:
    error = _assert_error(client.post("/vectorize", json={"images": [png_b64(1), "!!not base64!!"]}), 400, "images[1]")
    assert "base64" in error


def test_not_an_image_is_400(client) -> None:
    payload = base64.b64encode(b"just some text, definitely not an image file").decode()
    _assert_error(client.post("/vectorize", json={"images": [payload]}), 400, "images[0]", "not an image")


def test_truncated_image_is_400(client) -> None:
    data = encode_image(sample_image(80, 80, seed=13), "PNG")
    truncated = base64.b64encode(data[: len(data) // 2]).decode()
    _assert_error(client.post("/vectorize", json={"texts": ["ok"], "images": [truncated]}), 400, "images[0]")


@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
def test_empty_and_blank_texts_get_a_vector(client, bge_siglip_vectorizer, blank) -> None:
    # Weaviate sends every string of a vectorised text field, "" included, and the reference container embeds it.
    text_vectors, _ = _vectors(client.post("/vectorize", json={"texts": ["fine", blank]}))
    assert text_vectors.shape == (2, bge_siglip_vectorizer.dim)
    np.testing.assert_allclose(text_vectors, bge_siglip_vectorizer.encode_texts(["fine", blank], allow_empty=True), atol=1e-5)
    text_vectors, _ = _vectors(client.post("/vectorize", json={"texts": [blank]}))
    assert text_vectors.shape == (1, bge_siglip_vectorizer.dim)


@pytest.mark.parametrize("bad", [123, None, ["nested"], {"text": "x"}])
def test_non_string_text_is_400(client, bad) -> None:
    _assert_error(client.post("/vectorize", json={"texts": ["fine", bad]}), 400, "texts[1]", "string")


def test_non_string_image_is_400(client) -> None:
    _assert_error(client.post("/vectorize", json={"images": [{"b64": "x"}]}), 400, "images[0]")


@pytest.mark.parametrize(
    ("body", "needle"),
    [(b"{not json", "JSON"), (b"[1, 2]", "object"), (b'{"texts": "one string"}', "texts"), (b'{"images": 5}', "images")],
)
def test_malformed_body_is_400(client, body, needle) -> None:
    response = client.post("/vectorize", content=body, headers={"content-type": "application/json"})
    _assert_error(response, 400, needle)


def test_unknown_route_and_wrong_method_are_json_errors(client) -> None:
    _assert_error(client.get("/nope"), 404)
    _assert_error(client.get("/vectorize"), 405)
    _assert_error(client.post("/meta"), 405)


def test_a_failed_request_leaves_the_server_healthy(client, png_b64) -> None:
    _assert_error(client.post("/vectorize", json={"images": ["%%%"]}), 400)
    text_vectors, image_vectors = _vectors(client.post("/vectorize", json={"texts": ["still fine"], "images": [png_b64(9)]}))
    assert len(text_vectors) == 1 and len(image_vectors) == 1
