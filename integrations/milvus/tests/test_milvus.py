"""bge-siglip-milvus against a real milvus-lite database and the real tiny model.

Expected vectors always come straight from the core ``Vectorizer``; expected rankings from those vectors, so a test
fails if anything was routed to the wrong tower, dropped, reordered or re-embedded with another model. Reopening in a
separate process is the contract's (test_milvus_contract.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from pymilvus import DataType
from pymilvus.model.base import BaseEmbeddingFunction

from bge_siglip_milvus import (
    FINGERPRINT_PROPERTY,
    SPARSE_FINGERPRINT_PROPERTY,
    BGESigLIPEmbeddingFunction,
    BGESigLIPMilvus,
    ModelMismatchError,
    content_id,
)
from bge_siglip_vectorizer import InvalidImageError, InvalidInputError, InvalidTextError
from bge_siglip_vectorizer.testing.images import sample_image, sample_image_files

TEXTS = ["a dog on the beach", "ein Hund am Strand", "un chat noir", "кошка на окне"]
BAD = b"\x89PNG\r\n\x1a\n not a png"
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "milvus_quickstart.py"


def count(db: BGESigLIPMilvus, collection: str) -> int:
    db.client.load_collection(collection)
    return db.client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"]


def stored(db: BGESigLIPMilvus, collection: str, ids: list[str]) -> dict[str, dict]:
    rows = db.client.query(collection, ids=ids, output_fields=["*"])
    return {row["id"]: row for row in rows}


# ------------------------------------------------------------------------------------------------ embedding function
def test_embedding_function_has_the_model_library_shape(embedding_function, bge_siglip_vectorizer):
    ef = embedding_function
    assert isinstance(ef, BaseEmbeddingFunction)
    assert ef.vectorizer is bge_siglip_vectorizer  # one model per process
    assert ef.dim == bge_siglip_vectorizer.dim
    expected = bge_siglip_vectorizer.encode_texts(TEXTS)
    for encode in (ef, ef.encode_documents, ef.encode_queries):
        vectors = encode(TEXTS)
        assert isinstance(vectors, list) and len(vectors) == len(TEXTS)
        assert all(v.dtype == np.float32 and v.shape == (ef.dim,) for v in vectors)
        np.testing.assert_allclose(np.stack(vectors), expected, atol=1e-6)
    images = [np.asarray(sample_image(40, 30, seed=i)) for i in range(3)]
    np.testing.assert_allclose(np.stack(ef.encode_images(images)), bge_siglip_vectorizer.encode_images(images),
                               atol=1e-6)


def test_embedding_function_batches_and_refuses_single_items(embedding_function):
    vec = embedding_function.vectorizer
    before = vec.stats.image_batches
    embedding_function.encode_images([np.asarray(sample_image(40, 30 + i, seed=i)) for i in range(9)])
    assert vec.stats.image_batches - before == 3  # batch_size=4: three forwards for nine images, not nine
    with pytest.raises(InvalidInputError, match="wrap it in a list"):
        embedding_function.encode_documents("ein Hund")
    with pytest.raises(InvalidTextError) as info:
        embedding_function.encode_queries(["fine", ""])
    assert info.value.index == 1


def test_embedding_function_arguments(bge_siglip_model_dir, bge_siglip_vectorizer):
    ef = BGESigLIPEmbeddingFunction(vectorizer=bge_siglip_vectorizer)
    assert ef.batch_size == 32 and ef.fingerprint == bge_siglip_vectorizer.fingerprint
    for kwargs in ({}, {"model": bge_siglip_model_dir, "vectorizer": bge_siglip_vectorizer},
                   {"vectorizer": bge_siglip_vectorizer, "device": "cpu"}, {"model": bge_siglip_model_dir,
                                                                            "batch_size": 0}):
        with pytest.raises(ValueError):
            BGESigLIPEmbeddingFunction(**kwargs)


# ------------------------------------------------------------------------------------------------ schema
def test_create_collection_writes_the_schema_and_records_the_model(db, collection):
    description = db.client.describe_collection(collection)
    fields = {field["name"]: field for field in description["fields"]}
    assert fields["id"]["type"] == DataType.VARCHAR and fields["id"].get("is_primary")
    assert fields["vector"]["type"] == DataType.FLOAT_VECTOR and fields["vector"]["params"]["dim"] == db.dim
    assert fields["modality"]["type"] == DataType.VARCHAR
    assert {fields["source"]["type"], fields["text"]["type"]} == {DataType.VARCHAR}
    assert description["enable_dynamic_field"] is True and description["auto_id"] is False
    assert description["properties"][FINGERPRINT_PROPERTY] == db.vectorizer.fingerprint
    index = db.client.describe_index(collection, "vector")
    assert index["metric_type"] == "COSINE"


# ------------------------------------------------------------------------------------------------ ingest
def test_add_images_from_a_folder_stores_core_vectors_provenance_and_content_ids(db, collection, tmp_path):
    paths = sample_image_files(tmp_path / "photos", 5)
    result = db.add_images(collection, tmp_path / "photos", chunk_size=2,
                           payloads=[{"album": "beach"}] + [None] * 4)
    assert result.ids == [content_id(p) for p in paths] and result.written == 5
    rows = stored(db, collection, result.ids)
    expected = db.vectorizer.encode_images(paths)
    for i, item_id in enumerate(result.ids):
        np.testing.assert_allclose(rows[item_id]["vector"], expected[i], atol=1e-6)
        assert rows[item_id]["modality"] == "image" and rows[item_id]["source"] == str(paths[i])
        assert rows[item_id]["text"] is None
    assert rows[result.ids[0]]["album"] == "beach"  # a dynamic field

    again = db.add_images(collection, paths)  # re-ingest: the same content ids, upserted
    assert again.ids == result.ids and count(db, collection) == 5


def test_add_texts_upserts_by_id_and_re_embeds(db, collection):
    result = db.add_texts(collection, TEXTS)
    assert result.ids == [content_id(t, "text") for t in TEXTS]
    db.add_texts(collection, ["ein Hund", "eine Katze"], ids=["mine", "other"])
    db.add_texts(collection, ["a completely different text"], ids=["mine"])  # same id: replaced, re-embedded
    assert count(db, collection) == len(TEXTS) + 2
    row = stored(db, collection, ["mine"])["mine"]
    assert row["text"] == "a completely different text" and row["modality"] == "text"
    np.testing.assert_allclose(row["vector"], db.vectorizer.encode_texts([row["text"]])[0], atol=1e-6)
    db.client.delete(collection, ids=["mine"])
    assert count(db, collection) == len(TEXTS) + 1


def test_a_bad_item_writes_nothing(db, collection, tmp_path):
    paths: list = sample_image_files(tmp_path, 3)
    with pytest.raises(InvalidImageError) as info:
        db.add_images(collection, paths + [BAD], chunk_size=2)  # the bad item is in the last chunk
    assert info.value.index == 3
    with pytest.raises(InvalidTextError) as text_info:
        db.add_texts(collection, ["fine", "   "])
    assert text_info.value.index == 1
    assert count(db, collection) == 0


def test_skip_leaves_bad_items_out(db, collection, tmp_path):
    good = sample_image_files(tmp_path, 3)
    result = db.add_images(collection, [good[0], BAD, good[1], str(tmp_path / "missing.png"), good[2]],
                           on_error="skip", chunk_size=2)
    assert [error.index for error in result.skipped] == [1, 3]
    assert result.ids[1] is None and result.ids[3] is None and result.written == 3
    assert count(db, collection) == 3


def test_strings_longer_than_the_fields_are_refused_before_encoding(db, collection):
    encoded = db.vectorizer.stats.texts
    huge = "x" * 70_000
    with pytest.raises(InvalidTextError, match="max_length 65,535") as info:
        db.add_texts(collection, ["fine", huge])
    assert info.value.index == 1 and db.vectorizer.stats.texts == encoded  # nothing was even encoded
    result = db.add_texts(collection, ["fine", huge], on_error="skip")
    assert result.written == 1 and count(db, collection) == 1


def test_payloads_may_not_set_the_adapters_fields(db, collection):
    with pytest.raises(ValueError, match="writes itself"):
        db.add_texts(collection, ["a"], payloads=[{"vector": [0.0]}])


# ------------------------------------------------------------------------------------------------ search
def test_search_by_text_and_image_ranks_as_the_core(db, collection):
    images = [np.asarray(sample_image(40 + 10 * i, 36, seed=20 + i)) for i in range(4)]
    image_ids = db.add_images(collection, images).ids
    text_ids = db.add_texts(collection, TEXTS).ids
    ids = image_ids + text_ids
    vectors = np.concatenate([db.vectorizer.encode_images(images), db.vectorizer.encode_texts(TEXTS)])

    hits = db.search(collection, texts=TEXTS[:2], limit=len(ids), output_fields=["modality", "text"])
    assert len(hits) == 2
    for query, query_hits in zip(TEXTS[:2], hits):
        scores = vectors @ db.vectorizer.encode_texts([query])[0]
        assert [hit["id"] for hit in query_hits][:3] == [ids[i] for i in np.argsort(-scores)][:3]
        assert query_hits[0]["entity"]["text"] == query  # a text finds itself first
        assert query_hits[0]["distance"] == pytest.approx(1.0, abs=1e-4)  # COSINE: similarity
    image_hits = db.search(collection, images=[images[2]], limit=3, filter='modality == "image"')[0]
    assert image_hits[0]["id"] == image_ids[2]
    only_texts = db.search(collection, images=[images[2]], limit=10, filter='modality == "text"')[0]
    assert {hit["id"] for hit in only_texts} == set(text_ids)
    with pytest.raises(ValueError, match="exactly one"):
        db.search(collection, texts=["a"], images=[images[0]])


# ------------------------------------------------------------------------------------------------ model guard
def test_another_model_is_refused_for_writes_and_queries(db, collection, bge_siglip_other_model_dir):
    db.add_texts(collection, TEXTS[:2])
    other = BGESigLIPMilvus(db.client, model=bge_siglip_other_model_dir, device="cpu")
    assert other.vectorizer.fingerprint != db.vectorizer.fingerprint
    with pytest.raises(ModelMismatchError, match="not of this model"):
        other.add_texts(collection, ["ein Hund"])
    with pytest.raises(ModelMismatchError):
        other.add_images(collection, [np.asarray(sample_image(32, 32))])
    with pytest.raises(ModelMismatchError):
        other.search(collection, texts=["ein Hund"])
    assert count(db, collection) == 2


def test_a_collection_without_a_recorded_model_or_of_another_dim_is_refused(db):
    db.client.create_collection("hand_made", dimension=db.dim)
    db.client.create_collection("wrong_dim", dimension=db.dim + 1, properties=db.collection_properties())
    try:
        with pytest.raises(ModelMismatchError, match="records no BGE-SigLIP model"):
            db.add_texts("hand_made", ["a"])
        with pytest.raises(ModelMismatchError, match=f"FLOAT_VECTOR field of dim {db.dim}"):
            db.search("wrong_dim", texts=["a"])
    finally:
        db.client.drop_collection("hand_made")
        db.client.drop_collection("wrong_dim")


# ------------------------------------------------------------------------------------------------ the example
def test_the_quickstart_example_runs_twice_without_duplicates(bge_siglip_model_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("milvus_quickstart", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    sample_image_files(tmp_path / "photos", 3)
    args = ["--model", str(bge_siglip_model_dir), "--images", str(tmp_path / "photos"),
            "--db", str(tmp_path / "example.db")]
    example.main(args)
    first = capsys.readouterr().out
    example.main(args)
    second = capsys.readouterr().out
    assert "the collection holds 3 images" in first and "the collection holds 3 images" in second
    assert "ein Hund spielt am Strand" in first and first.split("text:", 1)[1] == second.split("text:", 1)[1]


# ------------------------------------------------------------------------------------------------ sparse, hybrid
@pytest.fixture
def sparse_collection(db: BGESigLIPMilvus):
    name = "sparse_texts"
    db.create_collection(name, sparse=True)
    yield name
    db.client.drop_collection(name)


def test_sparse_texts_are_stored_from_the_same_forward(db, sparse_collection, embedding_function):
    description = db.client.describe_collection(sparse_collection)
    fields = {field["name"]: field for field in description["fields"]}
    assert fields["sparse"]["type"] == DataType.SPARSE_FLOAT_VECTOR
    assert db.client.describe_index(sparse_collection, "sparse")["metric_type"] == "IP"
    assert description["properties"][SPARSE_FINGERPRINT_PROPERTY] == db.vectorizer.fingerprints["sparse"]
    forwards = db.vectorizer.stats.text_batches
    ids = db.add_texts(sparse_collection, TEXTS).ids
    assert db.vectorizer.stats.text_batches - forwards == 1  # dense and sparse from one forward (batch_size 4)
    rows = stored(db, sparse_collection, ids)
    expected = embedding_function.encode_sparse(TEXTS)
    assert all(expected)  # every text has lexical weights
    for item_id, text, weights in zip(ids, TEXTS, expected):
        assert rows[item_id]["sparse"].keys() == weights.keys()
        np.testing.assert_allclose(list(rows[item_id]["sparse"].values()), list(weights.values()), rtol=1e-6)
        np.testing.assert_allclose(rows[item_id]["vector"], db.vectorizer.encode_texts([text])[0], atol=1e-6)
    with pytest.raises(ValueError, match="image rows cannot fill"):
        db.add_images(sparse_collection, [np.asarray(sample_image(32, 32))])
    assert count(db, sparse_collection) == len(TEXTS)


def test_hybrid_search_fuses_dense_and_sparse(db, sparse_collection, embedding_function):
    ids = db.add_texts(sparse_collection, TEXTS).ids
    for ranker in ("rrf", "weighted"):
        hits = db.hybrid_search(sparse_collection, TEXTS[1:3], limit=4, ranker=ranker, output_fields=["text"])
        assert [query_hits[0]["id"] for query_hits in hits] == ids[1:3]  # each text finds itself first
        assert len(hits[0]) == 4
    # A query that is not stored: each half ranks as the core's dense / lexical scores, and RRF fuses their ranks.
    query = "ein Hund"
    dense = db.vectorizer.encode_texts(TEXTS) @ db.vectorizer.encode_texts([query])[0]
    lexical = np.asarray([db.vectorizer.encode_texts_sparse([query])[0].dot(s)
                          for s in db.vectorizer.encode_texts_sparse(TEXTS)])
    only_dense = db.hybrid_search(sparse_collection, [query], limit=1, ranker="weighted", weights=(1.0, 0.0))[0]
    assert only_dense[0]["id"] == ids[int(np.argmax(dense))]
    if lexical.max() > 0:
        only_sparse = db.hybrid_search(sparse_collection, [query], limit=1, ranker="weighted", weights=(0.0, 1.0))[0]
        assert only_sparse[0]["id"] == ids[int(np.argmax(lexical))]
    dense_rank = {int(i): r for r, i in enumerate(np.argsort(-dense))}
    sparse_rank = {int(i): r for r, i in enumerate(np.argsort(-lexical))}
    fused = {i: 1 / (61 + dense_rank[i]) + 1 / (61 + sparse_rank[i]) for i in range(len(TEXTS))}
    best = {ids[i] for i, score in fused.items() if score == max(fused.values())}
    assert db.hybrid_search(sparse_collection, [query], limit=4)[0][0]["id"] in best


def test_hybrid_search_needs_a_sparse_field(db, collection):
    with pytest.raises(ValueError, match="no sparse field"):
        db.hybrid_search(collection, ["ein Hund"])


def test_a_sparse_collection_of_another_sparse_head_is_refused(db, sparse_collection):
    db.client.alter_collection_properties(sparse_collection, properties={SPARSE_FINGERPRINT_PROPERTY: "0" * 64})
    with pytest.raises(ModelMismatchError, match="another sparse head"):
        db.add_texts(sparse_collection, ["ein Hund"])
    with pytest.raises(ModelMismatchError):
        db.hybrid_search(sparse_collection, ["ein Hund"])
