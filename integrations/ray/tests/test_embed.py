"""embed_dataset on a real local Ray: the core's vectors, bad items as error rows, columns passed through."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from bge_siglip_vectorizer import InvalidInputError, content_id
from bge_siglip_vectorizer.testing.images import encode_image, sample_image

from bge_siglip_ray import embed_dataset, sparse_from_arrow

TEXTS = ["a dog on a beach", "ein Hund am Strand", "un chien sur la plage", "猫", "x " * 50]


def _rows(ds) -> list[dict]:
    return ds.take_all()


def test_image_bytes_vectors_equal_encode_images(ray_session, image_dir, bge_siglip_model_dir, bge_siglip_vectorizer):
    ds = ray_session.data.read_binary_files(str(image_dir), include_paths=True)
    out = embed_dataset(ds, bge_siglip_model_dir, image_column="bytes", id_column="id", batch_size=4,
                        decode_batch_size=3, device="cpu").materialize()
    rows = {Path(r["path"]).name: r for r in _rows(out)}
    # Decoding runs in tasks of its own (on every CPU), not fused into the model actors.
    stats = out.stats()
    assert "MapBatches(PrepareImages)" in stats and "PrepareImages)->MapBatches(Embed)" not in stats, stats
    files = sorted(image_dir.rglob("*.*"))
    assert set(rows) == {f.name for f in files}
    expected = bge_siglip_vectorizer.encode_images([str(f) for f in files], batch_size=4)
    for file, vector in zip(files, expected):
        row = rows[file.name]
        assert row["error"] is None
        got = np.asarray(row["embedding"], dtype=np.float32)
        assert got.dtype == np.float32 and got.shape == (bge_siglip_vectorizer.dim,)
        np.testing.assert_allclose(got, vector, rtol=0, atol=1e-6)
        assert row["id"] == content_id(str(file))  # the file's id, derived from the bytes that were read
        assert "bytes" not in row  # the photo stays behind; the path passes through unchanged
        assert row["path"].endswith(file.name)
    schema = out.schema()
    assert str(schema.types[schema.names.index("embedding")]) == f"fixed_size_list<item: float>[{bge_siglip_vectorizer.dim}]"


def test_paths_urls_and_texts_with_columns_passed_through(ray_session, image_dir, bge_siglip_model_dir,
                                                          bge_siglip_vectorizer):
    files = sorted(str(f) for f in image_dir.glob("*.png"))[:3]
    rows = [{"image": f, "caption": None, "n": i, "tags": ["a", str(i)]} for i, f in enumerate(files)]
    rows += [{"image": None, "caption": t, "n": 100 + i, "tags": []} for i, t in enumerate(TEXTS)]
    rows.append({"image": files[0], "caption": "a caption stays a column", "n": 200, "tags": ["both"]})
    ds = ray_session.data.from_items(rows, override_num_blocks=3)
    out = {r["n"]: r for r in _rows(embed_dataset(ds, bge_siglip_model_dir, image_column="image",
                                                   text_column="caption", batch_size=3, device="cpu"))}
    images = bge_siglip_vectorizer.encode_images(files)
    texts = bge_siglip_vectorizer.encode_texts(TEXTS)
    for i in range(3):
        np.testing.assert_allclose(out[i]["embedding"], images[i], atol=1e-6, rtol=0)
        assert out[i]["tags"] == ["a", str(i)] and out[i]["image"] == files[i]
    for i in range(len(TEXTS)):
        np.testing.assert_allclose(out[100 + i]["embedding"], texts[i], atol=1e-6, rtol=0)
        assert out[100 + i]["caption"] == TEXTS[i]
    # A row with both is embedded from its image; its caption passes through.
    np.testing.assert_allclose(out[200]["embedding"], images[0], atol=1e-6, rtol=0)
    assert out[200]["caption"] == "a caption stays a column"
    assert all(r["error"] is None for r in out.values())


def test_sparse_and_multivector_columns_of_texts_come_from_the_same_forward(ray_session, image_dir,
                                                                            bge_siglip_model_dir,
                                                                            bge_siglip_vectorizer, caplog):
    image = str(sorted(image_dir.glob("*.png"))[0])
    rows = [{"image": None, "text": t, "n": i} for i, t in enumerate(TEXTS)] + [{"image": image, "text": None, "n": 9}]
    with caplog.at_level(logging.DEBUG):
        out = {r["n"]: r for r in _rows(embed_dataset(
            ray_session.data.from_items(rows, override_num_blocks=2), bge_siglip_model_dir, image_column="image",
            text_column="text", sparse_column="sparse", multivector_column="colbert", batch_size=2, device="cpu"))}
    expected = bge_siglip_vectorizer.encode_texts_all(TEXTS)
    for i in range(len(TEXTS)):
        np.testing.assert_allclose(out[i]["embedding"], expected.dense[i], atol=1e-6, rtol=0)
        weights = sparse_from_arrow(out[i]["sparse"])
        assert weights.indices.tolist() == expected.sparse[i].indices.tolist()
        np.testing.assert_allclose(weights.values, expected.sparse[i].values, atol=1e-6, rtol=0)
        np.testing.assert_allclose(np.asarray(out[i]["colbert"]), expected.multivector[i], atol=1e-6, rtol=0)
    assert out[9]["sparse"] is None and out[9]["colbert"] is None and out[9]["embedding"] is not None
    # The session is quiet: Ray Data's driver made no DEBUG/INFO records for pytest to capture (see conftest).
    chatter = [r for r in caplog.records if r.name.startswith("ray.data") and r.levelno < logging.WARNING]
    assert not chatter, chatter[:3]


def test_a_corrupt_file_among_many_becomes_an_error_row(ray_session, image_dir, bge_siglip_model_dir, tmp_path,
                                                        bge_siglip_vectorizer):
    good = sorted(image_dir.rglob("*.*"))
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in good:
        (folder / f.name).write_bytes(f.read_bytes())
    truncated = encode_image(sample_image(300, 200, seed=99), "JPEG")[:400]
    (folder / "broken.jpg").write_bytes(truncated)
    (folder / "notes.jpg").write_bytes(b"this is a text file")
    ds = ray_session.data.read_binary_files(str(folder), include_paths=True)
    rows = {Path(r["path"]).name: r for r in _rows(embed_dataset(ds, bge_siglip_model_dir, image_column="bytes",
                                                                  id_column="id", batch_size=4, device="cpu"))}
    assert len(rows) == len(good) + 2
    for name in ("broken.jpg", "notes.jpg"):
        row = rows[name]
        assert row["embedding"] is None and row["id"] is None
        assert row["error"].startswith("InvalidImageError: ") and name in row["error"]  # typed, names the file
    assert "truncated" in rows["broken.jpg"]["error"].lower() and "not an image" in rows["notes.jpg"]["error"]
    expected = bge_siglip_vectorizer.encode_images([str(f) for f in good])
    for file, vector in zip(good, expected):  # the batches the bad files were in still got every good vector
        assert rows[file.name]["error"] is None
        np.testing.assert_allclose(rows[file.name]["embedding"], vector, atol=1e-6, rtol=0)


def test_bad_texts_and_refused_urls_are_error_rows_or_raise(ray_session, bge_siglip_model_dir):
    ds = ray_session.data.from_items([
        {"text": "fine", "image": None, "key": "a"},
        {"text": "   ", "image": None, "key": "b"},
        {"text": None, "image": "http://127.0.0.1:9/x.jpg", "key": "c"},
        {"text": None, "image": None, "key": "d"},
    ])
    out = {r["key"]: r for r in _rows(embed_dataset(ds, bge_siglip_model_dir, image_column="image",
                                                     text_column="text", source_column="key", allow_urls=False,
                                                     device="cpu"))}
    assert out["a"]["error"] is None and out["a"]["embedding"] is not None
    assert out["b"]["error"] == "InvalidTextError: text ('b'): empty text"
    assert out["c"]["error"].startswith("ImageFetchError: image ('c'): URL inputs are disabled")
    assert out["d"]["error"].startswith("InvalidImageError: image ('d'): no image")
    with pytest.raises(InvalidInputError) as info:  # Ray's RayTaskError(<the typed error>)
        embed_dataset(ds, bge_siglip_model_dir, image_column="image", text_column="text", source_column="key",
                      allow_urls=False, on_error="raise", device="cpu").materialize()
    assert info.value.source in ("b", "c", "d")  # whichever bad row a task reached first


def test_options_are_checked_on_the_driver_before_anything_runs(ray_session, bge_siglip_model_dir):
    ds = ray_session.data.from_items([{"text": "a"}])
    with pytest.raises(TypeError, match="max_patches"):
        embed_dataset(ds, bge_siglip_model_dir, text_column="text", max_patches=64)
    with pytest.raises(ValueError, match="max_num_patches"):
        embed_dataset(ds, bge_siglip_model_dir, text_column="text", max_num_patches=0)
    with pytest.raises(ValueError, match="image_column and/or text_column"):
        embed_dataset(ds, bge_siglip_model_dir)
    with pytest.raises(ValueError, match="distinct"):
        embed_dataset(ds, bge_siglip_model_dir, text_column="text", output_column="text")
    with pytest.raises(ValueError, match="give text_column too"):
        embed_dataset(ds, bge_siglip_model_dir, image_column="text", sparse_column="sparse")
