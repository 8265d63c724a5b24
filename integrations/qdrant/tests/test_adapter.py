"""BGESigLIPQdrant against real qdrant-client (local mode, ``:memory:`` and ``path=``) and the real tiny model.

Expected vectors always come straight from the core ``Vectorizer``; expected rankings from the same query made with
those plain vectors, so a test fails if anything was routed to the wrong tower, dropped, reordered or mutated.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import AsyncQdrantClient, QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException

from bge_siglip_qdrant import METADATA_KEY, AsyncBGESigLIPQdrant, BGESigLIPQdrant, content_id
from bge_siglip_vectorizer.inputs import list_image_files
from bge_siglip_vectorizer import (
    InvalidImageError,
    InvalidInputError,
    InvalidTextError,
    ModelMismatchError,
    VectorizerOptions,
)
from bge_siglip_vectorizer.testing.contract import contract_images
from bge_siglip_vectorizer.testing.images import encode_image, sample_image_files as write_images

MODEL = "bge-siglip"
FOREIGN = "sentence-transformers/all-MiniLM-L6-v2"  # a FastEmbed model name: qdrant-client's business, not ours
TEXTS = ["a dog on the beach", "ein Hund am Strand", "un chat noir", "кошка на окне"]
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "qdrant_quickstart.py"


def doc(text: str, model: str = MODEL) -> models.Document:
    return models.Document(text=text, model=model)


def img(image, model: str = MODEL) -> models.Image:
    return models.Image(image=image, model=model)


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    return encode_image(Image.fromarray(array), "PNG")


@pytest.fixture
def db(bge_siglip_model_dir):
    wrapper = BGESigLIPQdrant(QdrantClient(":memory:"), model=bge_siglip_model_dir, device="cpu")
    yield wrapper
    wrapper.close()


@pytest.fixture
def named(db):
    """A collection with named vectors "image" and "text": each point has an image and its caption."""
    db.create_collection("named", vector_names=["image", "text"])
    points = [
        models.PointStruct(id=i, vector={"image": img(image), "text": doc(text)}, payload={"i": i})
        for i, (image, text) in enumerate(zip(contract_images(4), TEXTS))
    ]
    db.upsert("named", points=points)
    return db


def ids_of(response: models.QueryResponse) -> list:
    return [hit.id for hit in response.points]


def scores_of(response: models.QueryResponse) -> list[float]:
    return [hit.score for hit in response.points]


# ------------------------------------------------------------------------------------------------ basics
def test_create_collection_has_model_dim_and_cosine(db):
    db.create_collection("single")
    db.create_collection("multi", vector_names=["image", "text"])
    single = db.get_collection("single").config.params.vectors
    assert (single.size, single.distance) == (db.dim, models.Distance.COSINE)
    multi = db.get_collection("multi").config.params.vectors
    assert sorted(multi) == ["image", "text"]
    assert all(p.size == db.dim and p.distance == models.Distance.COSINE for p in multi.values())
    with pytest.raises(ValueError, match="not both"):
        db.create_collection("x", db.vector_params(), vector_names=["a"])


def test_it_is_a_qdrant_client_sharing_the_given_connection(db, bge_siglip_model_dir):
    assert isinstance(db, QdrantClient) and isinstance(db.client, QdrantClient) and db.client is not db
    assert db.scroll.__func__ is QdrantClient.scroll  # qdrant-client's own method, not re-implemented
    db.create_collection("shared")
    assert db.client.collection_exists("shared")  # one connection: the given client sees it
    assert db.model_names == {MODEL, str(bge_siglip_model_dir)}
    own = BGESigLIPQdrant(":memory:", model=bge_siglip_model_dir, device="cpu")  # or a client of its own
    assert own.client is own and own.get_collections().collections == []
    own.close()
    with pytest.raises(TypeError, match="AsyncBGESigLIPQdrant"):
        BGESigLIPQdrant(AsyncQdrantClient(":memory:"), model=bge_siglip_model_dir)


def test_core_options_are_client_options(bge_siglip_model_dir):
    """Every VectorizerOptions field is taken by name (derived, not listed); the rest goes to qdrant-client."""
    from bge_siglip_qdrant import client as module

    assert module._OPTION_NAMES == {f.name for f in dataclasses.fields(VectorizerOptions)}
    assert not module._OPTION_NAMES & set(inspect.signature(QdrantClient.__init__).parameters)
    db = BGESigLIPQdrant(location=":memory:", model=bge_siglip_model_dir, device="cpu", max_num_patches=64,
                         allow_urls=False)
    try:
        assert db.vectorizer.max_num_patches == 64 and db.vectorizer.limits.allow_urls is False
        assert db.get_embedding_size("bge-siglip") == db.get_embedding_size() == db.dim
        assert db.get_embedding_size(str(bge_siglip_model_dir)) == db.dim
    finally:
        db.close()


# ------------------------------------------------------------------------------------------------ writing
def test_mixed_upsert_stores_core_vectors_and_leaves_caller_objects_alone(db, bge_siglip_model_dir, tmp_path):
    vec = db.vectorizer
    images = contract_images(4)
    file = write_images(tmp_path / "f", 1)[0]
    plain = np.random.default_rng(0).normal(size=db.dim)
    plain /= np.linalg.norm(plain)
    db.create_collection("c", vector_names=["image", "text"])
    by_path = doc("un chat noir", model=str(bge_siglip_model_dir))  # the model path counts as our name too
    points = [
        models.PointStruct(id=0, vector={"image": img(images[0]), "text": doc("ein Hund")}),
        models.PointStruct(id=1, vector={"image": plain.tolist(), "text": doc("a cat")}),  # plain list
        models.PointStruct(id=2, vector={"image": img(png(images[2])), "text": plain.astype(np.float32)}),  # numpy
        models.PointStruct(id=3, vector={"image": img(str(file)), "text": by_path}),
    ]
    db.upsert("c", points=points)

    stored = {p.id: p.vector for p in db.retrieve("c", ids=[0, 1, 2, 3], with_vectors=True)}
    expect_image = {0: vec.encode_images([images[0]])[0], 1: plain, 2: vec.encode_images([images[2]])[0],
                    3: vec.encode_images([file])[0]}
    expect_text = {0: vec.encode_texts(["ein Hund"])[0], 1: vec.encode_texts(["a cat"])[0], 2: plain,
                   3: vec.encode_texts(["un chat noir"])[0]}
    for i in range(4):
        np.testing.assert_allclose(stored[i]["image"], expect_image[i], atol=1e-5)
        np.testing.assert_allclose(stored[i]["text"], expect_text[i], atol=1e-5)
    # The caller's points still hold their inference objects (copies were sent).
    assert isinstance(points[0].vector["image"], models.Image) and points[0].vector["image"].image is images[0]
    assert points[0].vector["text"] == doc("ein Hund") and points[3].vector["text"] is by_path


def test_one_upsert_is_one_encode_call(db):
    """The core de-duplicates only within one call: equal inputs spread over points are computed once."""
    db.create_collection("c", vector_names=["image", "text"])
    image = contract_images(1)[0]
    before = dict(vars(db.vectorizer.stats))
    db.upsert("c", points=[
        models.PointStruct(id=i, vector={"image": img(image.copy()), "text": doc("same caption")}) for i in range(3)
    ])
    after = vars(db.vectorizer.stats)
    assert {k: after[k] - before[k] for k in before} == {"images": 1, "texts": 1, "image_batches": 1, "text_batches": 1}
    assert db.count("c").count == 3


def test_upsert_batch_upload_points_and_update_vectors(db):
    vec = db.vectorizer
    images = contract_images(4)
    db.create_collection("c")
    db.upsert("c", points=models.Batch(ids=[0, 1], vectors=[doc("a cat"), doc("ein Hund")]))
    db.upload_points("c", (models.PointStruct(id=i, vector=img(images[i])) for i in (2, 3)), batch_size=1, wait=True)
    assert db.count("c").count == 4
    db.update_vectors("c", points=[models.PointVectors(id=0, vector=img(images[0]))])
    stored = {p.id: p.vector for p in db.retrieve("c", ids=[0, 1, 3], with_vectors=True)}
    np.testing.assert_allclose(stored[0], vec.encode_images([images[0]])[0], atol=1e-5)
    np.testing.assert_allclose(stored[1], vec.encode_texts(["ein Hund"])[0], atol=1e-5)
    np.testing.assert_allclose(stored[3], vec.encode_images([images[3]])[0], atol=1e-5)


# ------------------------------------------------------------------------------------------------ querying
def test_query_points_matches_plain_vector_queries(named):
    vec = named.vectorizer
    image = contract_images(4)[2]
    cases = [
        (doc(TEXTS[1]), vec.encode_texts([TEXTS[1]])[0], "image"),
        (img(image), vec.encode_images([image])[0], "image"),
        (models.NearestQuery(nearest=doc(TEXTS[3])), vec.encode_texts([TEXTS[3]])[0], "text"),
    ]
    for query, plain, using in cases:
        ours = named.query_points("named", query=query, using=using, limit=4)
        reference = named.query_points("named", query=plain.tolist(), using=using, limit=4)
        assert ids_of(ours) == ids_of(reference) and len(ours.points) == 4
        assert scores_of(ours) == pytest.approx(scores_of(reference), abs=1e-5)
    assert ids_of(named.query_points("named", query=img(image), using="image", limit=1)) == [2]
    assert ids_of(named.query_points("named", query=doc(TEXTS[0]), using="text", limit=1)) == [0]


def test_nested_prefetch_with_our_objects(named):
    vec = named.vectorizer
    image = contract_images(4)[1]
    v_img, v_t0, v_t2 = vec.encode_images([image])[0].tolist(), *vec.encode_texts([TEXTS[0], TEXTS[2]]).tolist()

    def request(q_img, q_t0, q_t2):
        return dict(
            prefetch=[
                models.Prefetch(query=q_img, using="image", limit=3),
                models.Prefetch(prefetch=models.Prefetch(query=q_t0, using="text", limit=4), query=q_t2,
                                using="text", limit=3),
            ],
            query=models.FusionQuery(fusion=models.Fusion.RRF),
            limit=4,
        )

    ours_args = request(img(image), doc(TEXTS[0]), doc(TEXTS[2]))
    prefetch_before = ours_args["prefetch"]
    ours = named.query_points("named", **ours_args)
    reference = named.query_points("named", **request(v_img, v_t0, v_t2))
    assert ids_of(ours) == ids_of(reference) and len(ours.points) >= 3
    assert scores_of(ours) == pytest.approx(scores_of(reference))
    assert prefetch_before[1].prefetch.query == doc(TEXTS[0])  # the caller's nested Prefetch is untouched

    # Our object as the main query, rescoring prefetched candidates.
    rescored = named.query_points("named", query=img(image), using="image",
                                  prefetch=models.Prefetch(query=doc(TEXTS[1]), using="text", limit=3), limit=3)
    plain = named.query_points("named", query=v_img, using="image",
                               prefetch=models.Prefetch(query=vec.encode_texts([TEXTS[1]])[0].tolist(), using="text",
                                                        limit=3), limit=3)
    assert ids_of(rescored) == ids_of(plain)


def test_query_batch_points_in_one_encode_call(named):
    vec = named.vectorizer
    images = contract_images(4)
    v = {t: x.tolist() for t, x in zip(TEXTS, vec.encode_texts(TEXTS))}
    w = [x.tolist() for x in vec.encode_images(images)]

    def requests(d, i):
        return [
            models.QueryRequest(query=d(TEXTS[0]), using="text", limit=3),
            models.QueryRequest(query=models.NearestQuery(nearest=i(3)), using="image", limit=3),
            models.QueryRequest(query=models.RecommendQuery(recommend=models.RecommendInput(
                positive=[i(1)], negative=[d(TEXTS[2])])), using="image", limit=3),
            models.QueryRequest(query=w[0], using="image", limit=3),  # a plain vector among them
            models.QueryRequest(prefetch=models.Prefetch(query=d(TEXTS[3]), using="text", limit=3),
                                query=i(3), using="image", limit=2),
            models.QueryRequest(query=models.DiscoverQuery(discover=models.DiscoverInput(
                target=d(TEXTS[1]), context=[models.ContextPair(positive=i(0), negative=i(2))])),
                using="image", limit=4),
            models.QueryRequest(query=models.ContextQuery(context=models.ContextPair(positive=d(TEXTS[0]),
                                                                                   negative=d(TEXTS[3]))),
                                using="text", limit=4),
        ]

    before = dict(vars(vec.stats))
    ours = named.query_batch_points("named", requests=requests(doc, lambda k: img(images[k])))
    after = vars(vec.stats)
    assert (after["image_batches"] - before["image_batches"], after["text_batches"] - before["text_batches"]) == (1, 1)
    reference = named.query_batch_points("named", requests=requests(lambda t: v[t], lambda k: w[k]))
    assert [ids_of(r) for r in ours] == [ids_of(r) for r in reference]
    assert ids_of(ours[0])[0] == 0 and ids_of(ours[1])[0] == 3 and ids_of(ours[3])[0] == 0
    assert all(len(r.points) >= 2 for r in ours)


def test_query_points_groups(named):
    for i in range(4):
        named.set_payload("named", payload={"group": i % 2}, points=[i])
    image = contract_images(4)[3]
    ours = named.query_points_groups("named", "group", query=img(image), using="image", limit=2, group_size=2)
    plain = named.query_points_groups("named", "group", query=named.vectorizer.encode_images([image])[0].tolist(),
                                      using="image", limit=2, group_size=2)
    assert [[h.id for h in g.hits] for g in ours.groups] == [[h.id for h in g.hits] for g in plain.groups]
    assert ours.groups[0].id == 1 and ours.groups[0].hits[0].id == 3


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_items_are_named_and_nothing_is_written(db):
    images = contract_images(3)
    good = png(images[0])
    db.create_collection("c", vector_names=["image", "text"])
    db.upsert("c", points=[models.PointStruct(id=99, vector={"image": img(images[0]), "text": doc("seed")})])

    with pytest.raises(InvalidImageError) as info:
        db.upsert("c", points=[
            models.PointStruct(id=i, vector={"text": doc(f"ok {i}"), "image": img(image)})
            for i, image in enumerate([images[1], images[2], good[: len(good) // 2]])
        ])
    assert info.value.index == 2 and "#2" in str(info.value) and "points[2].vector['image']" in str(info.value)
    assert "truncated" in str(info.value)

    with pytest.raises(InvalidTextError) as info:
        db.upsert("c", points=models.Batch(ids=[1, 2, 3], vectors={"image": [img(i) for i in images],
                                                                   "text": [doc("a"), doc("b"), doc("  ")]}))
    assert info.value.index == 2 and "points.vectors['text'][2]" in str(info.value)

    with pytest.raises(InvalidImageError) as info:
        db.upload_points("c", iter([models.PointStruct(id=5, vector={"image": img(images[0]), "text": doc("x")}),
                                    models.PointStruct(id=6, vector={"image": img(b"junk"), "text": doc("y")})]))
    assert info.value.index == 1
    assert db.count("c").count == 1  # only the seed point

    with pytest.raises(InvalidImageError) as info:
        db.query_batch_points("c", requests=[models.QueryRequest(query=doc("fine"), using="text"),
                                             models.QueryRequest(query=img("no/such/file.png"), using="image")])
    assert info.value.index == 1 and "requests[1]" in str(info.value) and "no such file" in str(info.value)

    with pytest.raises(InvalidImageError) as info:
        db.query_points("c", query=img(b"junk"), using="image")
    assert info.value.index is None and "(at query)" in str(info.value)

    with pytest.raises(InvalidInputError, match="ambiguous"):
        db.query_points("c", query=models.InferenceObject(object="a dog", model=MODEL), using="text")
    with pytest.raises(InvalidInputError, match="takes no options"):
        db.query_points("c", query=models.Document(text="a dog", model=MODEL, options={"lang": "de"}), using="text")


# ------------------------------------------------------------------------------------------------ other models
@pytest.mark.skipif(importlib.util.find_spec("fastembed") is not None, reason="asserts the no-fastembed behaviour")
def test_other_models_are_left_to_qdrant_client(db):
    db.create_collection("c", vector_names=["ours", "theirs"])
    foreign = doc("hello", model=FOREIGN)
    mine = img(contract_images(1)[0])
    point = models.PointStruct(id=1, vector={"ours": mine, "theirs": foreign})

    resolved = db.resolve([point])[0]
    assert resolved.vector["theirs"] is foreign  # passed on as the very same object
    assert isinstance(resolved.vector["ours"], list) and len(resolved.vector["ours"]) == db.dim

    # qdrant-client itself then handles it: in local mode without fastembed it refuses before writing anything.
    with pytest.raises(ImportError, match="fastembed is not installed"):
        db.upsert("c", points=[point])
    with pytest.raises(ImportError, match="fastembed is not installed"):
        db.query_points("c", query=foreign, using="theirs")
    assert db.count("c").count == 0
    assert point.vector == {"ours": mine, "theirs": foreign}

    # A different configured name makes "bge-siglip" foreign as well.
    other = BGESigLIPQdrant(db.client, vectorizer=db.vectorizer, model_name="my-clip")
    assert other.resolve(mine) is mine
    assert isinstance(other.resolve(img(contract_images(1)[0], model="my-clip")), list)


def test_remote_client_gets_plain_vectors(bge_siglip_model_dir):
    """Nothing assumes local mode: with a server URL (nothing listens there) our objects are embedded and the request
    goes out (connection refused), while a foreign object is rejected by qdrant-client's own inference check."""
    client = QdrantClient(url="http://127.0.0.1:1", check_compatibility=False, timeout=2)
    db = BGESigLIPQdrant(client, model=bge_siglip_model_dir, device="cpu")
    try:
        with pytest.raises(ResponseHandlingException):
            db.query_points("c", query=doc("ein Hund"))
        with pytest.raises(ResponseHandlingException):
            db.upsert("c", points=[models.PointStruct(id=1, vector=img(contract_images(1)[0]))])
        with pytest.raises(InvalidImageError):  # bad input fails before any request
            db.upsert("c", points=[models.PointStruct(id=1, vector=img(b"junk"))])
        with pytest.raises(ValueError, match=f"{FOREIGN} is not found among supported models"):
            db.query_points("c", query=doc("hello", model=FOREIGN))
    finally:
        db.close()


# ------------------------------------------------------------------------------------------------ bulk ingest
def test_folder_ingest_is_idempotent_and_records_provenance(db, tmp_path):
    folder = tmp_path / "photos"
    paths = write_images(folder, 3) + write_images(folder / "sub", 1, seed=10)
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(paths[0].read_bytes())
    db.create_collection("c")

    first = db.add_images("c", folder, chunk_size=2)
    assert first.written == 4 and first.skipped == []
    assert first.ids == [content_id(p) for p in list_image_files(folder)]
    assert db.count("c").count == 4
    payloads = {p.id: p.payload for p in db.scroll("c", limit=10)[0]}
    assert {pl["source"] for pl in payloads.values()} == {str(p) for p in paths}
    assert {pl["modality"] for pl in payloads.values()} == {"image"}

    again = db.add_images("c", folder)
    same_bytes = db.add_images("c", [paths[1].read_bytes()], payloads=[{"tag": "bytes"}])
    assert again.ids == first.ids and same_bytes.ids[0] == content_id(paths[1])
    assert db.count("c").count == 4  # no duplicates: ids come from content

    texts = db.add_texts("c", ["ein Hund", "a dog"], payloads=[{"lang": "de"}, None])
    db.add_texts("c", ["ein Hund"])
    assert db.count("c").count == 6
    text_point = db.retrieve("c", ids=[texts.ids[0]])[0]
    assert text_point.payload == {"modality": "text", "text": "ein Hund"}  # re-ingest replaced the payload too

    hit = db.query_points("c", query=img(str(paths[2])), limit=1).points[0]
    assert hit.id == content_id(paths[2]) and hit.score == pytest.approx(1.0, abs=1e-5)
    hit = db.query_points("c", query=doc("a dog"), limit=1).points[0]
    assert hit.payload["text"] == "a dog" and hit.score == pytest.approx(1.0, abs=1e-5)

    with pytest.raises(InvalidInputError, match="folder or a list"):
        db.add_images("c", str(paths[0]))


def test_bad_file_in_bulk_ingest(db, tmp_path):
    folder = tmp_path / "photos"
    write_images(folder, 5)
    (folder / "img02.jpg").write_bytes(b"\xff\xd8\xff broken jpeg")  # position 2 in sorted order
    db.create_collection("c")

    with pytest.raises(InvalidImageError) as info:
        db.add_images("c", folder)
    assert info.value.index == 2 and info.value.source.endswith("img02.jpg")
    assert db.count("c").count == 0  # one chunk: nothing written

    with pytest.raises(InvalidImageError) as info:
        db.add_images("c", folder, chunk_size=2)
    assert info.value.index == 2
    assert db.count("c").count == 0  # several chunks: still nothing written, not even the chunk before

    result = db.add_images("c", folder, chunk_size=2, on_error="skip")
    assert [e.index for e in result.skipped] == [2] and result.ids[2] is None
    assert result.written == 4 and db.count("c").count == 4


def test_bulk_ingest_into_named_vector_with_user_ids(db):
    db.create_collection("c", vector_names=["image", "text"])
    images = contract_images(2)
    result = db.add_images("c", images, ids=[10, 11], vector_name="image", payloads=[{"a": 1}, {"a": 2}])
    assert result.ids == [10, 11]
    point = db.retrieve("c", ids=[11], with_vectors=True)[0]
    np.testing.assert_allclose(point.vector["image"], db.vectorizer.encode_images([images[1]])[0], atol=1e-5)
    assert point.payload == {"modality": "image", "a": 2}  # arrays have no source to record


# ------------------------------------------------------------------------------------------------ example
def test_quickstart_example_runs(bge_siglip_model_dir, tmp_path, capsys):
    # Run in this process (its main() with argv) to spare an interpreter start; reopening in a separate process is
    # the contract's ReopenTests (test_contract.py).
    spec = importlib.util.spec_from_file_location("qdrant_quickstart", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    write_images(tmp_path / "photos", 3)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg")
    example.main(["--model", str(bge_siglip_model_dir), "--images", str(tmp_path / "photos"),
                  "--db", str(tmp_path / "db"), "--text", "ein Hund", "a dog"])
    out = capsys.readouterr().out
    assert "added 3 images; the collection holds 3 points" in out
    assert "skipped image #0" in out and "broken.jpg" in out
    assert "text: 'ein Hund'" in out and "text: 'a dog'" in out
    image_part = out.split("image: ")[1].splitlines()
    assert image_part[1].split() == ["+1.000", image_part[0]]  # the query image finds itself first


# ------------------------------------------------------------------------------------------------ every method
def _methods_that_take_inference_objects(cls: type) -> set[str]:
    """The methods of a qdrant-client class whose code inspects arguments for inference objects."""
    source = inspect.getsource(inspect.getmodule(cls))
    tree = ast.parse(source)
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
    return {f.name for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            and "_inference_inspector.inspect" in ast.get_source_segment(source, f)}


@pytest.mark.parametrize(("ours", "theirs"), [(BGESigLIPQdrant, QdrantClient),
                                              (AsyncBGESigLIPQdrant, AsyncQdrantClient)])
def test_every_method_that_takes_inference_objects_is_ours(ours, theirs):
    """A qdrant-client release that adds such a method makes this fail (else it would reach FastEmbed)."""
    names = _methods_that_take_inference_objects(theirs)
    assert {"upsert", "upload_points", "upload_collection", "batch_update_points", "query_points"} <= names
    assert [name for name in sorted(names) if getattr(ours, name) is getattr(theirs, name)] == []


def test_upload_collection_and_batch_update_points(db):
    """Both raised "fastembed is not installed" for our objects before."""
    vec = db.vectorizer
    images = contract_images(3)
    db.create_collection("c")
    db.upload_collection("c", vectors=[img(images[0]), doc("ein Hund"), img(images[1])], ids=[0, 1, 2],
                         payload=[{"i": 0}, {"i": 1}, {"i": 2}], batch_size=2, wait=True)
    db.batch_update_points("c", update_operations=[
        models.UpsertOperation(upsert=models.PointsList(points=[models.PointStruct(id=3, vector=doc("a cat"))])),
        models.UpdateVectorsOperation(update_vectors=models.UpdateVectors(
            points=[models.PointVectors(id=0, vector=img(images[2]))])),
    ])
    stored = {p.id: p.vector for p in db.retrieve("c", ids=[0, 1, 2, 3], with_vectors=True)}
    np.testing.assert_allclose(stored[0], vec.encode_images([images[2]])[0], atol=1e-5)
    np.testing.assert_allclose(stored[1], vec.encode_texts(["ein Hund"])[0], atol=1e-5)
    np.testing.assert_allclose(stored[3], vec.encode_texts(["a cat"])[0], atol=1e-5)
    with pytest.raises(InvalidImageError) as info:  # one encode call for all operations: nothing applied
        db.batch_update_points("c", update_operations=[
            models.UpsertOperation(upsert=models.PointsList(points=[models.PointStruct(id=9, vector=doc("x"))])),
            models.UpsertOperation(upsert=models.PointsList(points=[models.PointStruct(id=8, vector=img(b"junk"))])),
        ])
    assert info.value.index == 1 and db.count("c").count == 4


def test_model_record_guards_writes_queries_and_ingest(db, bge_siglip_other_model_dir):
    db.create_collection("c", metadata={"owner": "me"})
    metadata = db.get_collection("c").config.metadata
    assert metadata["owner"] == "me" and metadata[METADATA_KEY]["fingerprint"] == db.vectorizer.fingerprint
    other = BGESigLIPQdrant(db.client, model=bge_siglip_other_model_dir, device="cpu")
    for attempt in (lambda: other.upsert("c", points=[models.PointStruct(id=1, vector=doc("x"))]),
                    lambda: other.add_texts("c", ["x"]),
                    lambda: other.query_points("c", query=doc("x"))):
        with pytest.raises(ModelMismatchError, match="Qdrant collection 'c'"):
            attempt()
    other.upsert("c", points=[models.PointStruct(id=2, vector=db.vectorizer.encode_texts(["y"])[0].tolist())])
    assert db.count("c").count == 1  # plain vectors are the caller's business; only our objects are guarded


def test_async_client_writes_for_real(bge_siglip_model_dir, tmp_path):
    """An AsyncQdrantClient wrapped by the sync class lost every write (coroutines never awaited)."""
    with pytest.raises(TypeError, match="AsyncBGESigLIPQdrant"):
        BGESigLIPQdrant(AsyncQdrantClient(":memory:"), model=bge_siglip_model_dir)

    async def scenario():
        db = AsyncBGESigLIPQdrant(AsyncQdrantClient(":memory:"), model=bge_siglip_model_dir, device="cpu")
        assert isinstance(db, AsyncQdrantClient)
        await db.create_collection("c")
        result = await db.add_images("c", contract_images(3))
        await db.upsert("c", points=[models.PointStruct(id=1, vector=doc("ein Hund"))])
        hits = await db.query_points("c", query=img(contract_images(3)[1]), limit=1)
        fresh = AsyncBGESigLIPQdrant(db.client, model=bge_siglip_model_dir, device="cpu")
        with pytest.raises(RuntimeError, match="check_model"):  # a plain method cannot await the guard
            fresh.upload_points("c", [models.PointStruct(id=5, vector=doc("x"))])
        await fresh.check_model("c")
        fresh.upload_points("c", [models.PointStruct(id=5, vector=doc("x"))])
        count = (await db.count("c")).count
        await db.close()
        return result, hits, count

    result, hits, count = asyncio.run(scenario())
    assert result.written == 3 and count == 5
    assert hits.points[0].id == result.ids[1]


def test_langchain_takes_it_as_a_qdrant_client(bge_siglip_model_dir):
    """LangChain type-checks its client (``isinstance(client, QdrantClient)``); ours passes and works there."""
    from langchain_core.embeddings import Embeddings
    from langchain_qdrant import Qdrant, QdrantVectorStore

    db = BGESigLIPQdrant(":memory:", model=bge_siglip_model_dir, device="cpu")
    adb = AsyncBGESigLIPQdrant(":memory:", model=bge_siglip_model_dir, device="cpu")

    class CoreTextEmbeddings(Embeddings):  # LangChain's interface over the core's text tower
        def embed_documents(self, texts):
            return db.vectorizer.encode_texts(texts).tolist()

        def embed_query(self, text):
            return db.vectorizer.encode_texts([text])[0].tolist()

    try:
        db.create_collection("lc", vectors_config=db.vector_params())
        # The legacy class type-checks both clients (TypeError / ValueError otherwise); its search calls
        # client.search, which qdrant-client 1.20 no longer has, so only its construction is tried here.
        Qdrant(db, "lc", embeddings=CoreTextEmbeddings(), async_client=adb)
        store = QdrantVectorStore(client=db, collection_name="lc", embedding=CoreTextEmbeddings(), vector_name="")
        store.add_texts(["ein Hund am Strand", "un chat noir"])
        assert store.similarity_search("un chat noir", k=1)[0].page_content == "un chat noir"
        db.add_images("lc", contract_images(1))  # our own ingest into the same collection
        assert db.count("lc").count == 3
    finally:
        db.close()
