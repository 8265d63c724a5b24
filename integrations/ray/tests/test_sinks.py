"""The LanceDB and Milvus sinks on real LanceDB and milvus-lite, on Ray and in-process: the same ids, vectors and
payloads, idempotent re-runs, BGE-M3's sparse weights into Milvus' sparse field and ColBERT vectors into a LanceDB
multi-vector column, and stores of another model refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bge_siglip_vectorizer import BGESigLIPError, ModelMismatchError, content_id

from bge_siglip_ray import MilvusDatasink, RowColumns, WRITE_TASK_ARGS, embed_dataset, ingest

TEXTS = ["a dog on a beach", "ein Hund am Strand", "un chien sur la plage", "猫", "x " * 50]


def _lance_rows(folder: Path, table: str) -> dict[str, dict]:
    import lancedb

    return {row["id"]: row for row in lancedb.connect(folder).open_table(table).to_arrow().to_pylist()}


def _milvus_rows(file: Path, collection: str, fields: list[str]) -> dict[str, dict]:
    """Every row of a milvus-lite collection, read in this process; the file is released afterwards (milvus-lite
    serves a .db from one process, and later runs in these tests open it from a Ray worker)."""
    from milvus_lite.server_manager import server_manager_instance
    from pymilvus import MilvusClient

    client = MilvusClient(str(file))
    try:
        client.load_collection(collection)
        rows = client.query(collection, filter="", output_fields=["id", *fields], limit=1000)
        return {row["id"]: row for row in rows}
    finally:
        client.close()
        server_manager_instance.release_server(str(file))


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_folder_into_lancedb_on_ray_equals_in_process_and_a_rerun_adds_nothing(
        ray_session, photos, bge_siglip_model_dir, bge_siglip_vectorizer, tmp_path):
    import lancedb

    import bge_siglip_lancedb

    on_ray = ingest(photos, f"lancedb:{tmp_path / 'ray'}#photos", bge_siglip_model_dir, ray="local", batch_size=4,
                    device="cpu")
    assert (on_ray.rows, on_ray.written, on_ray.failed, on_ray.count) == (13, 12, 1, 12)
    assert on_ray.errors[0].startswith("InvalidImageError") and "broken.png" in on_ray.errors[0]
    local = ingest(photos, f"lancedb:{tmp_path / 'local'}#photos", bge_siglip_model_dir, batch_size=3, device="cpu")
    again = ingest(photos, f"lancedb:{tmp_path / 'ray'}#photos", bge_siglip_model_dir, batch_size=5, device="cpu")
    assert (local.count, again.written, again.count) == (12, 12, 12)  # the in-process re-run overwrote, by id

    ray_rows, local_rows = _lance_rows(tmp_path / "ray", "photos"), _lance_rows(tmp_path / "local", "photos")
    files = sorted(f for f in photos.iterdir() if f.name != "broken.png")
    vectors = bge_siglip_vectorizer.encode_images([str(f) for f in files])
    expected = dict(zip((content_id(str(f)) for f in files), vectors))
    assert set(ray_rows) == set(local_rows) == set(expected)
    for row_id, row in ray_rows.items():
        np.testing.assert_allclose(row["vector"], expected[row_id], atol=1e-6, rtol=0)
        assert {k: v for k, v in row.items() if k != "vector"} == {k: v for k, v in local_rows[row_id].items()
                                                                   if k != "vector"}
        assert row["modality"] == "image" and Path(row["source"]).parent == photos.resolve() and row["text"] is None
    # The table is the adapter's: its function is the model's, and a text query is embedded by it.
    table = lancedb.connect(tmp_path / "ray").open_table("photos")
    assert bge_siglip_lancedb.stored_fingerprints(table) == {bge_siglip_vectorizer.fingerprint}
    image = str(files[3])
    assert table.search(bge_siglip_vectorizer.encode_images([image])[0]).limit(1).to_list()[0]["source"] == image


def test_embedded_dataset_into_milvus_through_the_datasink_then_in_process(ray_session, image_dir, bge_siglip_model_dir,
                                                                             bge_siglip_vectorizer, tmp_path):
    """``embed_dataset`` + ``MilvusDatasink`` (the Python form) on Ray; the ingest command in-process on the same
    rows into another file gives the same rows, and into the Ray run's file changes nothing."""
    files = sorted(str(f) for f in image_dir.glob("*.png"))[:3]
    rows = [{"image": f, "caption": f"photo {i}", "sku": i} for i, f in enumerate(files)]
    rows += [{"image": None, "caption": text, "sku": 10 + i} for i, text in enumerate(TEXTS[:3])]
    rows.append({"image": None, "caption": "y" * 70_000, "sku": 99})  # longer than Milvus' VARCHAR: refused
    ds = embed_dataset(ray_session.data.from_items(rows, override_num_blocks=2), bge_siglip_model_dir,
                       image_column="image", text_column="caption", id_column="id", batch_size=3, device="cpu")
    sink = MilvusDatasink("catalogue", bge_siglip_model_dir, path=tmp_path / "ray.db",
                          columns=RowColumns(image="image", text="caption"), device="cpu")
    ds.write_datasink(sink, ray_remote_args=WRITE_TASK_ARGS)
    assert (sink.result.written, sink.result.failed, sink.result.count) == (6, 1, 6)
    assert sink.result.errors[0].startswith("InvalidTextError") and "max_length 65,535" in sink.result.errors[0]

    source = _jsonl(tmp_path / "rows.jsonl", rows)
    local = ingest(source, f"milvus:{tmp_path / 'local.db'}#catalogue", bge_siglip_model_dir, device="cpu")
    again = ingest(source, f"milvus:{tmp_path / 'ray.db'}#catalogue", bge_siglip_model_dir, device="cpu")
    assert (local.written, local.failed, local.count, again.count) == (6, 1, 6, 6)

    fields = ["vector", "modality", "source", "text", "sku", "caption"]
    on_ray, in_process = _milvus_rows(tmp_path / "ray.db", "catalogue", fields), _milvus_rows(
        tmp_path / "local.db", "catalogue", fields)
    images = dict(zip((content_id(f) for f in files), bge_siglip_vectorizer.encode_images(files)))
    texts = dict(zip((content_id(t, "text") for t in TEXTS[:3]), bge_siglip_vectorizer.encode_texts(TEXTS[:3])))
    assert set(on_ray) == set(in_process) == set(images) | set(texts)
    for row_id, row in on_ray.items():
        np.testing.assert_allclose(row["vector"], {**images, **texts}[row_id], atol=1e-6, rtol=0)
        assert {k: row.get(k) for k in fields[1:]} == {k: in_process[row_id].get(k) for k in fields[1:]}
    some_image = on_ray[content_id(files[1])]
    assert (some_image["modality"], some_image["source"], some_image["text"]) == ("image", files[1], None)
    assert (some_image["caption"], some_image["sku"]) == ("photo 1", 1)  # the row's columns as dynamic fields
    some_text = on_ray[content_id(TEXTS[2], "text")]
    assert (some_text["modality"], some_text["text"], some_text["source"], some_text["sku"]) == (
        "text", TEXTS[2], None, 12)


def test_texts_with_sparse_weights_into_milvus_on_ray(ray_session, bge_siglip_model_dir, bge_siglip_vectorizer,
                                                      tmp_path):
    from bge_siglip_milvus import SPARSE_FIELD, BGESigLIPMilvus
    from milvus_lite.server_manager import server_manager_instance
    from pymilvus import MilvusClient

    source = _jsonl(tmp_path / "texts.jsonl", [{"text": text, "n": i} for i, text in enumerate(TEXTS)])
    report = ingest(source, f"milvus:{tmp_path / 'm.db'}#texts", bge_siglip_model_dir, ray="local", sparse=True,
                    batch_size=2, device="cpu")
    assert (report.written, report.failed, report.count) == (5, 0, 5)
    # Into the collection that has a sparse field, the texts again in-process: without --sparse it is refused.
    with pytest.raises(ValueError, match="sparse field"):
        ingest(source, f"milvus:{tmp_path / 'm.db'}#texts", bge_siglip_model_dir, device="cpu")
    assert ingest(source, f"milvus:{tmp_path / 'm.db'}#texts", bge_siglip_model_dir, sparse=True,
                  device="cpu").count == 5

    rows = _milvus_rows(tmp_path / "m.db", "texts", ["vector", SPARSE_FIELD, "text"])
    expected = bge_siglip_vectorizer.encode_texts_all(TEXTS, multivector=False)
    for text, dense, weights in zip(TEXTS, expected.dense, expected.sparse):
        row = rows[content_id(text, "text")]
        np.testing.assert_allclose(row["vector"], dense, atol=1e-6, rtol=0)
        stored = {int(k): v for k, v in row[SPARSE_FIELD].items()}
        assert sorted(stored) == weights.indices.tolist()  # the same forward's lexical weights
        np.testing.assert_allclose([stored[i] for i in sorted(stored)], weights.values, atol=1e-6, rtol=0)
    # The adapter's hybrid search over what the sink wrote: a text finds itself first.
    db = BGESigLIPMilvus(MilvusClient(str(tmp_path / "m.db")), model=bge_siglip_model_dir, device="cpu")
    try:
        hits = db.hybrid_search("texts", [TEXTS[1]], limit=2, output_fields=["text"])
        assert hits[0][0]["entity"]["text"] == TEXTS[1]
    finally:
        db.client.close()
        server_manager_instance.release_server(str(tmp_path / "m.db"))


def test_sparse_and_multivector_are_refused_where_they_have_no_place(photos, bge_siglip_model_dir, tmp_path):
    texts = _jsonl(tmp_path / "texts.jsonl", [{"text": t} for t in TEXTS])
    with pytest.raises(BGESigLIPError, match="--sparse: qdrant has no place"):
        ingest(texts, f"qdrant:{tmp_path / 'q'}#t", bge_siglip_model_dir, sparse=True)
    with pytest.raises(BGESigLIPError, match="--multivector: milvus has no place"):
        ingest(texts, f"milvus:{tmp_path / 'm.db'}#t", bge_siglip_model_dir, multivector=True)
    with pytest.raises(BGESigLIPError, match="holds texts only"):
        ingest(photos, f"milvus:{tmp_path / 'm.db'}#t", bge_siglip_model_dir, sparse=True)
    assert not (tmp_path / "q").exists() and not (tmp_path / "m.db").exists()  # refused before anything opened


def test_texts_with_colbert_vectors_into_a_lancedb_multivector_column(bge_siglip_model_dir, bge_siglip_vectorizer,
                                                                      tmp_path):
    import lancedb

    source = _jsonl(tmp_path / "texts.jsonl", [{"text": text, "n": i} for i, text in enumerate(TEXTS)])
    report = ingest(source, f"lancedb:{tmp_path / 'db'}#texts", bge_siglip_model_dir, multivector=True,
                    batch_size=2, device="cpu")
    assert (report.written, report.count) == (5, 5)
    rows = _lance_rows(tmp_path / "db", "texts")
    expected = bge_siglip_vectorizer.encode_texts_all(TEXTS, sparse=False)
    for i, (text, dense, colbert) in enumerate(zip(TEXTS, expected.dense, expected.multivector)):
        row = rows[content_id(text, "text")]
        np.testing.assert_allclose(row["vector"], dense, atol=1e-6, rtol=0)
        np.testing.assert_allclose(np.asarray(row["multivector"]), colbert, atol=1e-6, rtol=0)
        assert (row["modality"], row["text"], row["n"]) == ("text", text, i)
    # LanceDB's own multi-vector search (MaxSim) over the column; the dense column still embeds text queries.
    table = lancedb.connect(tmp_path / "db").open_table("texts")
    query = bge_siglip_vectorizer.encode_texts_multivector([TEXTS[2]])[0]
    assert table.search(query.tolist(), vector_column_name="multivector").limit(1).to_list()[0]["text"] == TEXTS[2]
    assert table.search(TEXTS[3], vector_column_name="vector").limit(1).to_list()[0]["text"] == TEXTS[3]


def test_stores_of_another_model_are_refused(ray_session, image_dir, bge_siglip_model_dir, bge_siglip_other_model_dir,
                                             tmp_path):
    files = sorted(str(f) for f in image_dir.glob("*.jpg"))[:2]
    source = _jsonl(tmp_path / "rows.jsonl", [{"image": f} for f in files])
    for target in (f"lancedb:{tmp_path / 'db'}#photos", f"milvus:{tmp_path / 'm.db'}#photos",
                   f"qdrant:{tmp_path / 'q'}#photos"):
        assert ingest(source, target, bge_siglip_model_dir, device="cpu").count == 2
        with pytest.raises(ModelMismatchError):
            ingest(source, target, bge_siglip_other_model_dir, device="cpu")
    # On Ray the writer actor refuses it when it opens the store, before any row is embedded; the driver gets the
    # store's own error.
    with pytest.raises(ModelMismatchError):
        ingest(source, f"qdrant:{tmp_path / 'q'}#photos", bge_siglip_other_model_dir, ray="local", device="cpu")
    assert ingest(source, f"qdrant:{tmp_path / 'q'}#photos", bge_siglip_model_dir, device="cpu").count == 2


class _Recorder:
    """A writer that keeps what it is handed (the payload rules are the sinks' own; the stores are tested above)."""

    wants_sparse = keeps_multivector = False

    def __init__(self) -> None:
        self.batches = []

    def check(self, item, modality) -> None:
        if modality == "text" and len(item) > 20:
            from bge_siglip_vectorizer import InvalidTextError

            raise InvalidTextError("too long for this store")

    def upsert(self, batch, types) -> None:
        self.batches.append(batch)


def test_rows_become_batches_with_the_adapters_provenance(bge_siglip_vectorizer, image_dir):
    import pyarrow as pa

    from bge_siglip_ray.sinks import write_table

    here = str(sorted(image_dir.glob("*.png"))[0])
    elsewhere = "/mnt/cluster-only/photo.jpg"  # a path only the workers see: kept under the row's own column name
    texts = ["ein Hund", "z" * 30]
    vectors = np.concatenate([bge_siglip_vectorizer.encode_images([here, here]),
                              bge_siglip_vectorizer.encode_texts(texts), np.zeros((1, bge_siglip_vectorizer.dim))])
    table = pa.table({
        "image": [here, elsewhere, None, None, "broken.jpg"],
        "caption": ["a photo", None, texts[0], texts[1], None],
        "sku": [1, 2, 3, 4, 5],
        "bytes": [b"raw", None, None, None, None],
        "embedding": list(vectors.astype(np.float32)),
        "id": ["i1", "i2", "t1", "t2", None],
        "error": [None, None, None, None, "InvalidImageError: image ('broken.jpg'): truncated"],
    })
    writer = _Recorder()
    result = write_table(writer, table, RowColumns(image="image", text="caption"))
    assert (result.written, result.failed) == (3, 2)
    assert result.errors[0].startswith("InvalidTextError: text") and "too long for this store" in result.errors[0]
    assert result.errors[1].startswith("InvalidImageError")
    images, texts_batch = writer.batches
    assert (images.modality, images.ids) == ("image", ["i1", "i2"])
    assert (texts_batch.modality, texts_batch.ids) == ("text", ["t1"])
    assert images.payloads == [{"modality": "image", "source": here, "caption": "a photo", "sku": 1},
                               {"modality": "image", "image": elsewhere, "sku": 2}]
    assert texts_batch.payloads == [{"modality": "text", "text": texts[0], "sku": 3}]
    np.testing.assert_array_equal(texts_batch.vectors, vectors[2:3].astype(np.float32))
