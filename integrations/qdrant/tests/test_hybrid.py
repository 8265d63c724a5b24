"""Hybrid collections: BGE-M3's dense, sparse and multi-vector text outputs (images dense) in real Qdrant local mode.

Expected values come from the core ``Vectorizer`` (``encode_texts_all``, ``SparseEmbedding.dot``), and expected
fused rankings from qdrant-client's own fusion functions applied to the core's scores. Tiny random models have no
semantics, but lexical matching still means something: a query sharing rare tokens (a product code) with exactly
one text must find it through the sparse vector alone.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.hybrid.fusion import distribution_based_score_fusion, reciprocal_rank_fusion

from bge_siglip_qdrant import (
    HYBRID_VECTORS,
    METADATA_KEY,
    MULTIVECTOR_MODEL_NAME,
    SPARSE_MODEL_NAME,
    AsyncBGESigLIPQdrant,
    BGESigLIPQdrant,
)
from bge_siglip_vectorizer import InvalidInputError, InvalidTextError, MissingHeadError, ModelMismatchError
from bge_siglip_vectorizer.testing.contract import LEXICAL_MATCH, LEXICAL_QUERY, LEXICAL_TEXTS, contract_images

MODEL = "bge-siglip"
TEXTS = LEXICAL_TEXTS  # only TEXTS[CODE_DOC] shares a token with CODE (a product code)
CODE, CODE_DOC = LEXICAL_QUERY, LEXICAL_MATCH
IMAGE_IDS = [100, 101, 102, 103]


def doc(text, model=MODEL):
    return models.Document(text=text, model=model)


def every_granularity(text):
    return {"dense": doc(text), "sparse": doc(text, SPARSE_MODEL_NAME), "multivector": doc(text, MULTIVECTOR_MODEL_NAME)}


@pytest.fixture
def db(bge_siglip_model_dir):
    client = BGESigLIPQdrant(":memory:", model=bge_siglip_model_dir, device="cpu")
    yield client
    client.close()


@pytest.fixture
def shop(db):
    """A hybrid collection with a multi-vector: the texts (ids 0..7, all three vectors) and four images (dense)."""
    db.create_collection("shop", hybrid=True, multivector=True)
    db.add_texts("shop", TEXTS, ids=list(range(len(TEXTS))))
    db.add_images("shop", contract_images(len(IMAGE_IDS)), ids=IMAGE_IDS)
    return db


def ids_of(response):
    return [p.id for p in response.points]


def stats_delta(vectorizer, action):
    before = dict(vars(vectorizer.stats))
    action()
    return {key: value - before[key] for key, value in vars(vectorizer.stats).items()}


def core_scores(db, query):
    """The core's own dense scores over every point and sparse scores over the texts (those sharing a token)."""
    vec = db.vectorizer
    q = vec.encode_texts_all([query])
    dense_ids = list(range(len(TEXTS))) + IMAGE_IDS
    dense = np.concatenate([vec.encode_texts(TEXTS), vec.encode_images(contract_images(len(IMAGE_IDS)))]) @ q.dense[0]
    sparse = {i: e.dot(q.sparse[0]) for i, e in enumerate(vec.encode_texts_sparse(TEXTS))}
    return dict(zip(dense_ids, dense.tolist())), {i: s for i, s in sparse.items() if s > 0}


def top(scores, k):
    """ScoredPoints of the ``k`` best, as Qdrant's prefetch would return them."""
    best = sorted(scores.items(), key=lambda item: -item[1])[:k]
    return [models.ScoredPoint(id=i, version=0, score=s) for i, s in best]


def assert_same_ranking(got, expected, what):
    """Same scores rank by rank, and each id's score as expected (ties may come in either order)."""
    assert [p.score for p in got] == pytest.approx([p.score for p in expected], rel=1e-4, abs=1e-6), what
    expected_by_id = {p.id: p.score for p in expected}
    for point in got:
        assert point.id in expected_by_id, f"{what}: {point.id} is not among {list(expected_by_id)}"
        assert point.score == pytest.approx(expected_by_id[point.id], rel=1e-4, abs=1e-6), what


# ------------------------------------------------------------------------------------------------ the collection
def test_hybrid_collection_layout_and_model_record(db):
    vec = db.vectorizer
    db.create_collection("full", hybrid=True, multivector=True, sparse_modifier=models.Modifier.IDF)
    config = db.get_collection("full").config
    dense, multi = config.params.vectors["dense"], config.params.vectors["multivector"]
    assert sorted(config.params.vectors) == ["dense", "multivector"]
    assert (dense.size, dense.distance, dense.multivector_config) == (vec.dim, models.Distance.COSINE, None)
    assert (multi.size, multi.multivector_config.comparator) == (vec.multivector_dim,
                                                                 models.MultiVectorComparator.MAX_SIM)
    assert multi.hnsw_config.m == 0  # a re-ranking vector: no graph
    assert config.params.sparse_vectors["sparse"].modifier == models.Modifier.IDF
    record = config.metadata[METADATA_KEY]
    assert record["fingerprints"] == vec.fingerprints and record["fingerprint"] == vec.fingerprint
    assert record["vectors"] == HYBRID_VECTORS

    db.create_collection("lean", hybrid=True)
    lean = db.get_collection("lean").config
    assert sorted(lean.params.vectors) == ["dense"] and lean.params.sparse_vectors["sparse"].modifier is None
    assert sorted(lean.metadata[METADATA_KEY]["fingerprints"]) == ["dense", "sparse"]
    assert lean.metadata[METADATA_KEY]["vectors"] == {"dense": "dense", "sparse": "sparse"}

    # A config of the caller's with a sparse vector: its fingerprint is recorded (guarded) too.
    db.create_collection("own", vectors_config={"d": db.vector_params()},
                         sparse_vectors_config={"s": models.SparseVectorParams()})
    assert sorted(db.get_collection("own").config.metadata[METADATA_KEY]["fingerprints"]) == ["dense", "sparse"]

    with pytest.raises(ValueError, match="hybrid=True makes"):
        db.create_collection("x", db.vector_params(), hybrid=True)
    with pytest.raises(ValueError, match="pass hybrid=True"):
        db.create_collection("x", multivector=True)
    assert not db.collection_exists("x")
    assert db.get_embedding_size(MULTIVECTOR_MODEL_NAME) == vec.multivector_dim
    with pytest.raises(ValueError, match="Sparse embeddings do not return fixed"):
        db.get_embedding_size(SPARSE_MODEL_NAME)


def test_a_dense_only_model_makes_no_hybrid_collection(bge_siglip_dense_only_model_dir, shop):
    dense_only = BGESigLIPQdrant(shop.client, model=bge_siglip_dense_only_model_dir, device="cpu")
    with pytest.raises(MissingHeadError, match="not sparse"):
        dense_only.create_collection("x", hybrid=True)
    assert not shop.collection_exists("x")
    # In an existing hybrid collection it still writes and queries dense (same dense space), and asking it for
    # the sparse vectors is the core's error naming the missing head; nothing is written.
    assert dense_only.vectorizer.fingerprint == shop.vectorizer.fingerprint
    assert ids_of(dense_only.query_points("shop", query=doc(TEXTS[1]), using="dense", limit=1)) == [1]
    with pytest.raises(MissingHeadError, match="sparse_linear.pt"):
        dense_only.add_texts("shop", ["new text"])
    assert shop.count("shop").count == len(TEXTS) + len(IMAGE_IDS)


# ------------------------------------------------------------------------------------------------ writing
def test_add_texts_fills_every_vector_and_add_images_the_dense_one(shop):
    vec = shop.vectorizer
    expected = vec.encode_texts_all(TEXTS)
    stored = {p.id: p.vector for p in shop.retrieve("shop", ids=list(range(len(TEXTS))), with_vectors=True)}
    for i in range(len(TEXTS)):
        np.testing.assert_allclose(stored[i]["dense"], expected.dense[i], atol=1e-5)
        np.testing.assert_allclose(stored[i]["multivector"], expected.multivector[i], atol=1e-5)
        assert stored[i].get("sparse", models.SparseVector(indices=[], values=[])).indices == \
            expected.sparse[i].indices.tolist()
        np.testing.assert_allclose(stored[i].get("sparse", models.SparseVector(indices=[], values=[])).values,
                                   expected.sparse[i].values, atol=1e-6)
    images = contract_images(len(IMAGE_IDS))
    for point in shop.retrieve("shop", ids=IMAGE_IDS, with_vectors=True):
        assert sorted(point.vector) == ["dense"]
        np.testing.assert_allclose(point.vector["dense"], vec.encode_images([images[IMAGE_IDS.index(point.id)]])[0],
                                   atol=1e-5)


def test_bulk_texts_are_one_forward_per_batch_and_written_in_bounded_groups(db, monkeypatch):
    from bge_siglip_qdrant import client as module

    db.create_collection("c", hybrid=True, multivector=True)
    monkeypatch.setattr(module, "_WRITE_FLOATS", 200)  # a few texts' multi-vectors per upsert
    writes = []
    original = QdrantClient.upsert
    monkeypatch.setattr(QdrantClient, "upsert", lambda self, name, points, **kw: (writes.append(len(points)),
                                                                                   original(self, name, points, **kw))[1])
    delta = stats_delta(db.vectorizer, lambda: db.add_texts("c", TEXTS, chunk_size=4))
    assert (delta["texts"], delta["text_batches"]) == (len(TEXTS), 2)  # two chunks of 4, one forward each
    assert sum(writes) == len(TEXTS) and len(writes) > 2 and db.count("c").count == len(TEXTS)
    # Texts are validated before anything is written, even though chunks are then written one by one.
    with pytest.raises(InvalidTextError) as info:
        db.add_texts("c", ["fine one", *["more"] * 6, "  "], chunk_size=2)
    assert info.value.index == 7 and db.count("c").count == len(TEXTS)


def test_stock_objects_name_the_granularity_and_one_upsert_is_one_forward(db):
    vec = db.vectorizer
    db.create_collection("c", hybrid=True, multivector=True)
    image = contract_images(1)[0]
    points = [models.PointStruct(id=i, vector=every_granularity(text)) for i, text in enumerate(TEXTS[:3])]
    points.append(models.PointStruct(id=9, vector={"dense": models.Image(image=image, model=MODEL)}))
    delta = stats_delta(vec, lambda: db.upsert("c", points=points))
    # Each text is asked for in three granularities: one forward pass gives them all.
    assert {k: delta[k] for k in ("texts", "text_batches", "images", "image_batches")} == \
        {"texts": 3, "text_batches": 1, "images": 1, "image_batches": 1}
    expected = vec.encode_texts_all(TEXTS[:3])
    stored = {p.id: p.vector for p in db.retrieve("c", ids=[0, 1, 2, 9], with_vectors=True)}
    for i in range(3):
        np.testing.assert_allclose(stored[i]["dense"], expected.dense[i], atol=1e-5)
        np.testing.assert_allclose(stored[i]["multivector"], expected.multivector[i], atol=1e-5)
        assert stored[i].get("sparse", models.SparseVector(indices=[], values=[])).indices == \
            expected.sparse[i].indices.tolist()
    assert sorted(stored[9]) == ["dense"]
    assert points[1].vector["sparse"] == doc(TEXTS[1], SPARSE_MODEL_NAME)  # the caller's objects are untouched


def test_bad_granularity_objects_are_typed_errors_and_write_nothing(db):
    db.create_collection("c", hybrid=True)
    with pytest.raises(InvalidInputError, match="images have dense vectors only") as info:
        db.upsert("c", points=[models.PointStruct(id=0, vector={"dense": doc("ok")}),
                               models.PointStruct(id=1, vector={"sparse": models.Image(
                                   image=contract_images(1)[0], model=SPARSE_MODEL_NAME)})])
    assert info.value.index == 1 and "points[1].vector['sparse']" in str(info.value)
    with pytest.raises(InvalidTextError) as info:
        db.upsert("c", points=[models.PointStruct(id=i, vector={"dense": doc(t), "sparse": doc(t, SPARSE_MODEL_NAME)})
                               for i, t in enumerate(["fine", "also fine", " "])])
    assert info.value.index == 2 and "points[2].vector['dense']" in str(info.value)
    assert db.count("c").count == 0


# ------------------------------------------------------------------------------------------------ ranking
def test_a_rare_shared_token_ranks_its_text_first_through_the_sparse_vector_alone(shop):
    vec = shop.vectorizer
    dense, sparse = core_scores(shop, CODE)
    # Preconditions on the data (the tiny model's, fixed by its seed): only the code's text shares a token with the
    # query, and the dense vector alone would not rank it first (so the sparse vector is what finds it).
    assert list(sparse) == [CODE_DOC]
    assert max(dense, key=dense.get) != CODE_DOC

    hits = shop.query_points("shop", query=doc(CODE, SPARSE_MODEL_NAME), using="sparse", limit=5).points
    assert [h.id for h in hits] == [CODE_DOC]
    assert hits[0].score == pytest.approx(sparse[CODE_DOC], rel=1e-5)  # Qdrant's score is the core's dot product
    # The IDF modifier changes the weights, not who shares the token.
    shop.create_collection("idf", hybrid=True, sparse_modifier=models.Modifier.IDF)
    shop.add_texts("idf", TEXTS, ids=list(range(len(TEXTS))))
    assert ids_of(shop.query_points("idf", query=doc(CODE, SPARSE_MODEL_NAME), using="sparse", limit=5)) == [CODE_DOC]
    assert vec.sparse_tokens(vec.encode_texts_sparse([CODE])[0])  # the code is tokens, not nothing


@pytest.mark.parametrize("fusion", ["rrf", "dbsf"])
def test_hybrid_query_fuses_the_dense_and_the_sparse_ranking_of_the_core(shop, fusion):
    candidates = 3
    dense, sparse = core_scores(shop, CODE)
    dense_top, sparse_top = top(dense, candidates), top(sparse, candidates)
    # Each list has what the other lacks (images and texts without the code; the code's text), so a result that
    # holds both kinds combined them.
    only_dense = {p.id for p in dense_top} - {p.id for p in sparse_top}
    only_sparse = {p.id for p in sparse_top} - {p.id for p in dense_top}
    assert only_dense and only_sparse

    got = shop.query_hybrid("shop", CODE, limit=4, fusion=fusion, candidates=candidates).points
    fuse = reciprocal_rank_fusion if fusion == "rrf" else distribution_based_score_fusion
    expected = fuse([dense_top, sparse_top], limit=4)
    assert_same_ranking(got, expected, f"{fusion} of the core's dense and sparse rankings")
    ids = {p.id for p in got}
    assert ids & only_dense and CODE_DOC in ids  # the code's text comes from the sparse list only


def test_multivector_rerank_is_maxsim_of_the_cores_vectors_over_the_fused_candidates(shop):
    vec = shop.vectorizer
    candidates = 6
    dense, sparse = core_scores(shop, TEXTS[1])
    fused = reciprocal_rank_fusion([top(dense, candidates), top(sparse, candidates)], limit=candidates)
    query = vec.encode_texts_multivector([TEXTS[1]])[0]
    stored = dict(enumerate(vec.encode_texts_multivector(TEXTS)))
    # Images have no multi-vector: the re-rank leaves them out (documented).
    maxsim = {p.id: float((query @ stored[p.id].T).max(axis=1).sum()) for p in fused if p.id in stored}
    got = shop.query_hybrid("shop", TEXTS[1], limit=3, candidates=candidates, rerank=True).points
    assert_same_ranking(got, top(maxsim, 3), "MaxSim re-rank")
    assert got[0].id == 1 and not {p.id for p in got} & set(IMAGE_IDS)


def test_a_hybrid_query_is_one_forward_pass(shop):
    delta = stats_delta(shop.vectorizer, lambda: shop.query_hybrid("shop", CODE, rerank=True))
    assert {k: delta[k] for k in ("texts", "text_batches", "images")} == {"texts": 1, "text_batches": 1, "images": 0}


def test_hybrid_requests_in_query_batch_points(shop):
    requests = [shop.hybrid_request(text, limit=3, with_payload=False) for text in (CODE, TEXTS[4])]
    responses: list = []
    delta = stats_delta(shop.vectorizer, lambda: responses.extend(shop.query_batch_points("shop", requests=requests)))
    assert (delta["texts"], delta["text_batches"]) == (2, 1)
    assert [ids_of(r) for r in responses] == [ids_of(shop.query_hybrid("shop", t, limit=3)) for t in (CODE, TEXTS[4])]
    assert responses[0].points[0].id == CODE_DOC
    assert requests[0].prefetch[1].query == doc(CODE, SPARSE_MODEL_NAME)  # our objects, resolved on a copy


def test_query_hybrid_needs_a_hybrid_collection(db):
    db.create_collection("plain")
    with pytest.raises(ValueError, match="not made with create_collection"):
        db.query_hybrid("plain", "x")
    db.create_collection("lean", hybrid=True)
    with pytest.raises(ValueError, match="rerank=True needs a multi-vector"):
        db.query_hybrid("lean", "x", rerank=True)
    with pytest.raises(ValueError, match="must be positive"):
        db.hybrid_request("x", limit=10, candidates=0)
    with pytest.raises(ValueError, match="is not a valid Fusion"):
        db.hybrid_request("x", fusion="max")
    with pytest.raises(InvalidTextError):
        db.hybrid_request("   ")


# ------------------------------------------------------------------------------------------------ model guard
def test_other_heads_are_refused_where_their_vectors_are_kept(shop, bge_siglip_other_heads_model_dir):
    other = BGESigLIPQdrant(shop.client, model=bge_siglip_other_heads_model_dir, device="cpu")
    # Precondition: the same dense space, so the dense fingerprint alone cannot tell.
    assert other.vectorizer.fingerprint == shop.vectorizer.fingerprint
    assert other.vectorizer.fingerprints["sparse"] != shop.vectorizer.fingerprints["sparse"]
    attempts = [
        lambda: other.upsert("shop", points=[models.PointStruct(id=50, vector=every_granularity("x"))]),
        lambda: other.upsert("shop", points=[models.PointStruct(id=50, vector={"dense": doc("x")})]),
        lambda: other.add_texts("shop", ["x"]),
        lambda: other.add_images("shop", contract_images(1)),
        lambda: other.query_hybrid("shop", CODE),
    ]
    for attempt in attempts:
        with pytest.raises(ModelMismatchError, match=r"'shop' \((sparse|multivector) vectors\)"):
            attempt()
    assert shop.count("shop").count == len(TEXTS) + len(IMAGE_IDS)
    # Its record cannot be pointed at those heads either.
    with pytest.raises(ModelMismatchError):
        other.update_collection("shop", metadata={METADATA_KEY: other.model_record(["sparse", "multivector"],
                                                                                    HYBRID_VECTORS)})
    assert shop.get_collection("shop").config.metadata[METADATA_KEY]["fingerprints"] == shop.vectorizer.fingerprints
    # A collection without sparse or multi-vectors keeps only dense ones: the same dense space is welcome there.
    shop.create_collection("dense")
    other.add_texts("dense", ["x"])
    assert shop.count("dense").count == 1


def test_a_multivector_head_is_guarded_only_where_the_collection_has_one(db, bge_siglip_other_heads_model_dir):
    db.create_collection("lean", hybrid=True)  # dense + sparse, no multi-vector
    record = db.get_collection("lean").config.metadata[METADATA_KEY]
    assert "multivector" not in record["fingerprints"]
    other = BGESigLIPQdrant(db.client, model=bge_siglip_other_heads_model_dir, device="cpu")
    with pytest.raises(ModelMismatchError, match=r"\(sparse vectors\)"):
        other.add_texts("lean", ["x"])


def test_async_client_writes_and_queries_hybrid_collections_like_the_sync_one(bge_siglip_model_dir, shop):
    async def scenario():
        db = AsyncBGESigLIPQdrant(":memory:", model=bge_siglip_model_dir, device="cpu")
        await db.create_collection("shop", hybrid=True, multivector=True)
        await db.add_texts("shop", TEXTS, ids=list(range(len(TEXTS))))
        await db.add_images("shop", contract_images(len(IMAGE_IDS)), ids=IMAGE_IDS)
        await db.upsert("shop", points=[models.PointStruct(id=60, vector=every_granularity("ein Hund"))])
        answers = [ids_of(await db.query_hybrid("shop", CODE, limit=5, fusion=fusion, candidates=4))
                   for fusion in ("rrf", "dbsf")]
        answers.append(ids_of(await db.query_hybrid("shop", TEXTS[2], limit=3, rerank=True)))
        stored = (await db.retrieve("shop", ids=[60], with_vectors=True))[0].vector
        await db.close()
        return answers, stored

    answers, stored = asyncio.run(scenario())
    shop.upsert("shop", points=[models.PointStruct(id=60, vector=every_granularity("ein Hund"))])
    assert answers == [ids_of(shop.query_hybrid("shop", CODE, limit=5, fusion=fusion, candidates=4))
                       for fusion in ("rrf", "dbsf")] + [ids_of(shop.query_hybrid("shop", TEXTS[2], limit=3,
                                                                                  rerank=True))]
    expected = shop.retrieve("shop", ids=[60], with_vectors=True)[0].vector
    assert sorted(stored) == sorted(expected) == ["dense", "multivector", "sparse"]
    assert stored["sparse"] == expected["sparse"]


# ------------------------------------------------------------------------------------------------ example
def test_hybrid_example_runs_and_its_sparse_and_hybrid_lists_find_the_model_number(bge_siglip_model_dir, tmp_path,
                                                                                   capsys):
    """examples/hybrid_qdrant.py (the top README's "Hybrid search"), run in this process on the tiny model."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "examples" / "hybrid_qdrant.py"
    spec = importlib.util.spec_from_file_location("hybrid_qdrant", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    images = tmp_path / "photos"
    images.mkdir()
    from PIL import Image

    for i, array in enumerate(contract_images(2)):
        Image.fromarray(array).save(images / f"p{i}.png")
    argv = ["--model", str(bge_siglip_model_dir), "--db", str(tmp_path / "db"), "--images", str(images),
            "--query", "7381", "--limit", "3"]
    example.main(argv)
    example.main(argv)  # again on the same storage: content-derived ids, nothing doubles
    out = capsys.readouterr().out
    assert out.count(f"the collection holds {len(example.CATALOGUE) + 2} points") == 2
    last = out.split("query: '7381'")[-1]
    lines = {line.split()[0]: line for line in last.splitlines() if line.strip()}
    assert lines["sparse"].split("|")[0].split(None, 1)[1].startswith("Trail running shoe, waterproof, model 7381")
    assert "model 7381" in lines["hybrid"] and "model 7381" not in lines["dense"]
