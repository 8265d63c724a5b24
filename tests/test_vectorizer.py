"""The encode API: shapes, normalisation, padding invariance, de-duplication, mixed lists, save/load round trip."""

from __future__ import annotations

import numpy as np
import pytest

from bge_siglip_vectorizer import InvalidTextError, MissingProjectorError, ModelLoadError, Vectorizer, shared_vectorizer
from bge_siglip_vectorizer.testing import make_tiny_model
from bge_siglip_vectorizer.testing.images import sample_images

TEXTS = [
    "a",
    "a photo of a dog on the beach",
    "ein Hund am Strand, der einem roten Ball hinterherläuft, während die Sonne untergeht",
    "海滩上的一只狗",
    "кошка спит на окне " * 20,
    "un chat",
    "γάτα στο παράθυρο",
    "x " * 300,
]


def test_vectors_are_float32_unit_length(bge_siglip_vectorizer):
    images = bge_siglip_vectorizer.encode_images(sample_images()[:5])
    texts = bge_siglip_vectorizer.encode_texts(TEXTS[:3])
    for vectors, n in ((images, 5), (texts, 3)):
        assert vectors.dtype == np.float32 and vectors.shape == (n, bge_siglip_vectorizer.dim)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_image_vectors_do_not_depend_on_the_batch(bge_siglip_vectorizer):
    images = sample_images(seed=5)  # 15 images, 1x1 to 1600x1200, every mode
    images.append(images[0].resize((37, 19)))
    alone = np.stack([bge_siglip_vectorizer.encode_images([image])[0] for image in images])
    for batch_size in (16, 5, 3):
        together = bge_siglip_vectorizer.encode_images(images, batch_size=batch_size)
        assert np.abs(alone - together).max() <= 1e-5


def test_text_vectors_do_not_depend_on_the_batch(bge_siglip_vectorizer):
    alone = np.stack([bge_siglip_vectorizer.encode_texts([text])[0] for text in TEXTS])
    for batch_size in (8, 3):
        together = bge_siglip_vectorizer.encode_texts(TEXTS, batch_size=batch_size)
        assert np.abs(alone - together).max() <= 1e-5


def test_different_inputs_give_different_vectors(bge_siglip_vectorizer):
    # Guards against a collapsed (constant) tiny model: the suite's ranking tests rely on distinct vectors.
    images = bge_siglip_vectorizer.encode_images(sample_images()[:6])
    texts = bge_siglip_vectorizer.encode_texts(TEXTS)
    for vectors in (images, texts):
        similarity = vectors @ vectors.T
        assert similarity[~np.eye(len(vectors), dtype=bool)].max() < 0.9999


def test_identical_items_get_bit_identical_vectors_and_are_computed_once(bge_siglip_model_dir):
    vectorizer = Vectorizer.from_pretrained(bge_siglip_model_dir)
    images = sample_images()[:3]
    vectors = vectorizer.encode_images([images[0], images[1], images[0], np.asarray(images[0]), images[2]])
    assert np.array_equal(vectors[0], vectors[2]) and np.array_equal(vectors[0], vectors[3])
    assert vectorizer.stats.images == 3  # the duplicates were not run through the model
    texts = vectorizer.encode_texts(["same", "other", "same"])
    assert np.array_equal(texts[0], texts[2]) and vectorizer.stats.texts == 2


def test_batches_sort_by_size(bge_siglip_model_dir):
    vectorizer = Vectorizer.from_pretrained(bge_siglip_model_dir)
    vectorizer.encode_images(sample_images(seed=1) + sample_images(seed=2), batch_size=4)
    assert vectorizer.stats.image_batches == 8  # 30 images / 4 per batch
    vectorizer.encode_texts(TEXTS, batch_size=3)
    assert vectorizer.stats.text_batches == 3


def test_encode_mixed_keeps_order_and_names_the_mixed_index(bge_siglip_vectorizer):
    images = sample_images()[:2]
    mixed = bge_siglip_vectorizer.encode_mixed(
        ["a dog", images[0], "un chien", images[1]], ["text", "image", "text", "image"]
    )
    np.testing.assert_allclose(mixed[[0, 2]], bge_siglip_vectorizer.encode_texts(["a dog", "un chien"]), atol=1e-6)
    np.testing.assert_allclose(mixed[[1, 3]], bge_siglip_vectorizer.encode_images(images), atol=1e-6)
    with pytest.raises(ValueError) as info:
        bge_siglip_vectorizer.encode_mixed(["a dog", images[0], b"junk"], ["text", "image", "image"])
    assert info.value.index == 2 and str(info.value).startswith("image #2")
    with pytest.raises(ValueError) as info:
        bge_siglip_vectorizer.encode_mixed([images[0], ""], ["image", "text"])
    assert info.value.index == 1
    with pytest.raises(ValueError, match="kinds"):
        bge_siglip_vectorizer.encode_mixed(["a"], ["audio"])


def test_save_and_load_round_trip(bge_siglip_vectorizer, tmp_path):
    saved = bge_siglip_vectorizer.save_pretrained(tmp_path / "copy")
    assert {p.name for p in saved.iterdir()} >= {"bge_siglip_config.json", "projector.safetensors", "vision", "text"}
    reloaded = Vectorizer.from_pretrained(saved)
    images = sample_images()[:4]
    np.testing.assert_array_equal(reloaded.encode_images(images), bge_siglip_vectorizer.encode_images(images))
    np.testing.assert_array_equal(reloaded.encode_texts(TEXTS), bge_siglip_vectorizer.encode_texts(TEXTS))
    assert reloaded.describe()["dim"] == bge_siglip_vectorizer.dim


def test_saving_with_tower_references_keeps_them(bge_siglip_vectorizer, tmp_path):
    saved = bge_siglip_vectorizer.save_pretrained(tmp_path / "refs", copy_towers=False)
    assert not (saved / "vision").exists()
    reloaded = Vectorizer.from_pretrained(saved)
    np.testing.assert_array_equal(reloaded.encode_texts(["hund"]), bge_siglip_vectorizer.encode_texts(["hund"]))


def test_max_num_patches_override(bge_siglip_model_dir):
    small = Vectorizer.from_pretrained(bge_siglip_model_dir, max_num_patches=64)
    assert small.max_num_patches == 64
    small.encode_images(sample_images()[:2])


def test_missing_projector_is_an_error_that_says_how_to_get_one(tmp_path):
    directory = make_tiny_model(tmp_path / "m")
    (directory / "projector.safetensors").unlink()
    with pytest.raises(MissingProjectorError, match="bge-siglip train.*bge-siglip convert"):
        Vectorizer.from_pretrained(directory)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="not a BGE-SigLIP model directory"):
        Vectorizer.from_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="no such model directory"):
        Vectorizer.from_pretrained(tmp_path / "absent")
    checkpoint = tmp_path / "model_checkpoint.pt"
    checkpoint.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="bge-siglip convert"):
        Vectorizer.from_pretrained(checkpoint)


def test_newer_format_version_is_refused(tmp_path):
    import json

    directory = make_tiny_model(tmp_path / "m")
    config = json.loads((directory / "bge_siglip_config.json").read_text())
    config["format_version"] = 99
    (directory / "bge_siglip_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="Upgrade"):
        Vectorizer.from_pretrained(directory)


def test_make_tiny_model_is_deterministic(tmp_path, bge_siglip_vectorizer):
    again = Vectorizer.from_pretrained(make_tiny_model(tmp_path / "again"))
    np.testing.assert_array_equal(again.encode_texts(TEXTS[:2]), bge_siglip_vectorizer.encode_texts(TEXTS[:2]))
    other = Vectorizer.from_pretrained(make_tiny_model(tmp_path / "other", seed=1))
    assert not np.allclose(other.encode_texts(TEXTS[:2]), bge_siglip_vectorizer.encode_texts(TEXTS[:2]))


def test_shared_vectorizer_is_one_instance_per_configuration(bge_siglip_model_dir):
    first = shared_vectorizer(bge_siglip_model_dir, device="cpu")
    assert shared_vectorizer(str(bge_siglip_model_dir), device="cpu") is first
    assert shared_vectorizer(bge_siglip_model_dir, device="cpu", max_num_patches=64) is not first


def test_bad_batch_size(bge_siglip_vectorizer):
    with pytest.raises(ValueError, match="batch_size"):
        bge_siglip_vectorizer.encode_texts(["a"], batch_size=0)


def test_identical_items_are_computed_once_across_decode_windows(bge_siglip_model_dir):
    vectorizer = Vectorizer.from_pretrained(bge_siglip_model_dir)
    images = sample_images()[:3]
    vectors = vectorizer.encode_images(images * 60, batch_size=4)  # 180 items: several windows of 64
    assert vectorizer.stats.images == 3
    for i in range(3, 180):
        assert np.array_equal(vectors[i], vectors[i % 3])


def test_encode_prepared_equals_encode_images(bge_siglip_vectorizer):
    images = sample_images(seed=2)[:6]
    prepared = bge_siglip_vectorizer.prepare_images(images)
    np.testing.assert_array_equal(
        bge_siglip_vectorizer.encode_prepared(prepared, batch_size=4), bge_siglip_vectorizer.encode_images(images, batch_size=4)
    )
    assert bge_siglip_vectorizer.encode_prepared([]).shape == (0, bge_siglip_vectorizer.dim)


def test_empty_texts_only_when_allowed(bge_siglip_vectorizer):
    vectors = bge_siglip_vectorizer.encode_texts(["", "  ", "a"], allow_empty=True)
    assert vectors.shape == (3, bge_siglip_vectorizer.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="empty text"):
        bge_siglip_vectorizer.encode_texts(["", "a"])


def test_fingerprint_identifies_the_mapping(bge_siglip_vectorizer, bge_siglip_model_dir, tmp_path):
    copy = Vectorizer.from_pretrained(bge_siglip_vectorizer.save_pretrained(tmp_path / "moved"))
    assert copy.fingerprint == bge_siglip_vectorizer.fingerprint  # same model, another place
    other = Vectorizer.from_pretrained(make_tiny_model(tmp_path / "other", seed=3))
    assert other.fingerprint != bge_siglip_vectorizer.fingerprint
    # A smaller patch budget keeps less detail but stays in the same space: compatible, same fingerprint.
    fewer_patches = Vectorizer.from_pretrained(bge_siglip_model_dir, max_num_patches=64)
    assert fewer_patches.fingerprint == bge_siglip_vectorizer.fingerprint


def test_image_preparer_without_the_model_prepares_what_encode_images_encodes(bge_siglip_vectorizer,
                                                                              bge_siglip_model_dir):
    import io
    import pickle

    from PIL import Image

    from bge_siglip_vectorizer import ImagePreparer, ImageTooLargeError, InvalidImageError, PatchedImage

    preparer = pickle.loads(pickle.dumps(ImagePreparer.from_pretrained(bge_siglip_model_dir)))  # travels to workers
    assert preparer == bge_siglip_vectorizer.preparer
    images = sample_images(seed=4)[:5]
    # Through bytes, as a decode stage in another process hands them on.
    prepared = [PatchedImage.from_bytes(p.to_bytes(), p.grid) for p in map(preparer.prepare, images)]
    np.testing.assert_array_equal(bge_siglip_vectorizer.encode_prepared(prepared, batch_size=2),
                                  bge_siglip_vectorizer.encode_images(images, batch_size=2))
    # The options Vectorizer.from_pretrained takes decide the same things here.
    small = ImagePreparer.from_pretrained(bge_siglip_model_dir, max_num_patches=16, max_image_pixels=10_000)
    assert small.preprocessing.max_num_patches == 16 and small.limits.max_pixels == 10_000
    assert small.prepare(np.zeros((90, 100, 3), np.uint8)).num_patches <= 16
    big = io.BytesIO()
    Image.new("RGB", (200, 100)).save(big, format="PNG")
    with pytest.raises(ImageTooLargeError, match="#3"):
        small.prepare(big.getvalue(), 3)
    with pytest.raises(InvalidImageError, match="#7.*not an image"):
        preparer.prepare(b"not an image at all", 7)
    with pytest.raises(ValueError, match="do not hold"):
        PatchedImage.from_bytes(b"\0" * 10, (2, 2))


def test_content_ids_are_derived_from_content(tmp_path):
    import uuid

    from bge_siglip_vectorizer import ID_NAMESPACE, content_id

    data = (tmp_path / "a.bin")
    data.write_bytes(b"\x89PNG fake bytes")
    copy = tmp_path / "copy.bin"
    copy.write_bytes(data.read_bytes())
    assert content_id(str(data)) == content_id(copy) == content_id(data.read_bytes())  # a file is its bytes
    assert content_id("a dog", "text") != content_id("a dog", "image")  # the string is a (missing) path there
    assert content_id("a dog", "text") == content_id("a dog", "text")
    assert content_id("https://example.org/x.jpg") != content_id("https://example.org/y.jpg")
    assert content_id(np.zeros((2, 3), np.uint8)) != content_id(np.zeros((3, 2), np.uint8))
    assert uuid.UUID(content_id(b"x")).version == 5 and ID_NAMESPACE.version == 5


def test_encode_query_composes_text_and_image(bge_siglip_vectorizer):
    image = sample_images()[1]
    text_vector = bge_siglip_vectorizer.encode_texts(["in red"])[0]
    image_vector = bge_siglip_vectorizer.encode_images([image])[0]
    for query, expected in (
        (bge_siglip_vectorizer.encode_query(text="in red"), text_vector),
        (bge_siglip_vectorizer.encode_query(image=image), image_vector),
        (bge_siglip_vectorizer.encode_query(text="in red", image=image, weights=(1.0, 0.0)), text_vector),
    ):
        assert query.dtype == np.float32 and query.shape == (bge_siglip_vectorizer.dim,)
        np.testing.assert_allclose(query, expected, atol=1e-6)
    composed = bge_siglip_vectorizer.encode_query(text="in red", image=image, weights=(0.3, 0.7))
    expected = 0.3 * text_vector.astype(np.float64) + 0.7 * image_vector
    np.testing.assert_allclose(composed, expected / np.linalg.norm(expected), atol=1e-6)
    assert abs(float(np.linalg.norm(composed)) - 1.0) <= 1e-6
    # Between the two, and nearer the heavier one.
    assert composed @ image_vector > composed @ text_vector > text_vector @ image_vector


def test_encode_query_errors_name_what_is_wrong(bge_siglip_vectorizer):
    from bge_siglip_vectorizer import InvalidImageError, InvalidInputError, InvalidTextError

    with pytest.raises(InvalidInputError, match="text=, image= or both"):
        bge_siglip_vectorizer.encode_query()
    for weights in ((-1.0, 1.0), (float("nan"), 1.0), (1.0,), "ab", None, (0.0, 0.0)):
        with pytest.raises(ValueError, match="weights"):
            bge_siglip_vectorizer.encode_query(text="a dog", image=sample_images()[0], weights=weights)
    with pytest.raises(ValueError, match="weight 0"):
        bge_siglip_vectorizer.encode_query(text="a dog", weights=(0.0, 1.0))  # the image weight, but no image
    with pytest.raises(InvalidTextError) as info:
        bge_siglip_vectorizer.encode_query(text=" ", image=sample_images()[0])
    assert str(info.value) == "text: empty text" and info.value.index is None
    with pytest.raises(InvalidTextError, match="^text: expected a string"):
        bge_siglip_vectorizer.encode_query(text=["a dog"])
    with pytest.raises(InvalidImageError, match="^image"):
        bge_siglip_vectorizer.encode_query(text="a dog", image=b"not an image")


def test_count_tokens_is_what_the_text_tower_is_given(bge_siglip_vectorizer):
    counts = bge_siglip_vectorizer.count_tokens(TEXTS + [""])
    tokenizer, limit = bge_siglip_vectorizer.tokenizer, bge_siglip_vectorizer.text_max_length
    assert counts == [len(tokenizer(t, truncation=True, max_length=limit)["input_ids"]) for t in TEXTS + [""]]
    assert bge_siglip_vectorizer.count_tokens(["x " * (2 * limit)]) == [limit]  # truncated at the tower's limit
    assert bge_siglip_vectorizer.count_tokens([]) == []
    with pytest.raises(InvalidTextError) as info:
        bge_siglip_vectorizer.count_tokens(["fine", 3])
    assert info.value.index == 1
