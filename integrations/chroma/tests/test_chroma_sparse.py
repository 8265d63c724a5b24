"""``BGESigLIPSparseEmbeddingFunction`` against the real chromadb registry, schema (de)serialisation and local
clients; and what local Chroma (``PersistentClient``, ``chroma run``, chromadb 1.5) does with sparse vectors.

Chroma keeps sparse functions in a collection's schema. Local Chroma refuses such schemas (and sparse metadata, and
the Search API), so the persisted form is checked where Chroma makes and reads it: ``Schema.serialize_to_json`` /
``Schema.deserialize_from_json`` (what every client does with the schema a server stores), in this process and in
a new one. The tests under "local Chroma" pin today's refusals: when a chromadb release supports any of it
locally, they fail, and the README's "needs Chroma Cloud" list must be updated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
import warnings

import chromadb
import numpy as np
import pytest
from chromadb.api.shared_system_client import SharedSystemClient
from chromadb.api.types import SPARSE_VECTOR_INDEX_NAME, Schema, validate_sparse_embedding_function
from chromadb.base_types import SparseVector
from chromadb.execution.expression import Search
from chromadb.execution.expression.operator import Key, Knn
from chromadb.api.types import SparseVectorIndexConfig
from chromadb.utils.embedding_functions import known_embedding_functions, sparse_known_embedding_functions

from bge_siglip_chroma import BGESigLIPEmbeddingFunction, BGESigLIPSparseEmbeddingFunction
from bge_siglip_vectorizer import InvalidInputError, InvalidTextError, MissingHeadError, ModelMismatchError
from bge_siglip_vectorizer.testing.contract import LEXICAL_MATCH, LEXICAL_QUERY, LEXICAL_TEXTS

TEXTS = LEXICAL_TEXTS  # only TEXTS[LEXICAL_MATCH] shares a token with the product code LEXICAL_QUERY
CODE, CODE_DOC = LEXICAL_QUERY, f"t{LEXICAL_MATCH}"
KEY = "bge_sparse"


@pytest.fixture
def sparse(bge_siglip_model_dir) -> BGESigLIPSparseEmbeddingFunction:
    return BGESigLIPSparseEmbeddingFunction(bge_siglip_model_dir, device="cpu")


def schema_with(function) -> Schema:
    """The schema a user gives ``create_collection(schema=...)``: our function fills ``KEY`` from the documents."""
    schema = Schema()
    schema.create_index(config=SparseVectorIndexConfig(embedding_function=function, source_key=Key.DOCUMENT), key=KEY)
    return schema


def stored_function(schema_json: dict) -> dict:
    return schema_json["keys"][KEY]["sparse_vector"][SPARSE_VECTOR_INDEX_NAME]["config"]["embedding_function"]


def rebuilt_function(schema: Schema):
    return schema.keys[KEY].sparse_vector.sparse_vector_index.config.embedding_function


def as_pairs(vectors: list[SparseVector]) -> list[tuple[list[int], list[float]]]:
    return [(v.indices, v.values) for v in vectors]


# ------------------------------------------------------------------------------------------------ the function
def test_registered_under_its_own_name_and_chromas_protocol(sparse):
    assert BGESigLIPSparseEmbeddingFunction.name() == "bge-siglip-sparse"
    assert sparse_known_embedding_functions["bge-siglip-sparse"] is BGESigLIPSparseEmbeddingFunction
    assert "bge-siglip-sparse" not in known_embedding_functions  # a sparse function is not a dense one
    validate_sparse_embedding_function(sparse)  # Chroma's own __call__ signature check


def test_vectors_are_the_cores_sparse_embeddings(sparse, bge_siglip_model_dir):
    vec = sparse.vectorizer
    expected = vec.encode_texts_sparse(TEXTS)
    got = sparse(TEXTS)
    assert all(isinstance(v, SparseVector) and v.labels is None for v in got)
    assert [v.indices for v in got] == [e.indices.tolist() for e in expected]
    for v, e in zip(got, expected):
        np.testing.assert_array_equal(np.asarray(v.values, dtype=np.float32), e.values)
    (query,) = sparse.embed_query(TEXTS[1:2])  # alone in its batch: equal up to float noise
    assert query.indices == got[1].indices and query.values == pytest.approx(got[1].values, abs=1e-5)
    labelled = BGESigLIPSparseEmbeddingFunction(bge_siglip_model_dir, device="cpu", include_tokens=True)
    assert [v.labels for v in labelled(TEXTS)] == [vec.sparse_tokens(e) for e in expected]
    # With the same model and options the dense and the sparse function share one model in memory.
    assert BGESigLIPEmbeddingFunction(bge_siglip_model_dir, device="cpu").vectorizer is vec


def test_bad_documents_are_the_cores_typed_errors(sparse):
    with pytest.raises(InvalidTextError) as info:
        sparse(["fine", "   "])
    assert info.value.index == 1
    with pytest.raises(InvalidInputError, match="single str"):
        sparse("a whole document")


def test_a_model_without_the_sparse_head_says_so(bge_siglip_dense_only_model_dir):
    with pytest.raises(MissingHeadError, match="sparse text output"):
        BGESigLIPSparseEmbeddingFunction(bge_siglip_dense_only_model_dir, device="cpu")


# ------------------------------------------------------------------------------------------------ persisted config
def test_the_schema_stores_the_config_and_rebuilds_the_function(sparse):
    stored = json.loads(json.dumps(schema_with(sparse).serialize_to_json()))  # what a server persists
    function = stored_function(stored)
    assert (function["name"], function["type"]) == ("bge-siglip-sparse", "known")
    assert function["config"]["fingerprint"] == sparse.vectorizer.fingerprints["sparse"] != sparse.vectorizer.fingerprint
    assert function["config"]["include_tokens"] is False
    rebuilt = rebuilt_function(Schema.deserialize_from_json(stored))
    assert isinstance(rebuilt, BGESigLIPSparseEmbeddingFunction) and rebuilt.get_config() == sparse.get_config()
    assert rebuilt.vectorizer is sparse.vectorizer
    assert as_pairs(rebuilt(TEXTS)) == as_pairs(sparse(TEXTS))


def test_a_new_process_rebuilds_the_same_function_from_the_stored_schema(sparse, tmp_path):
    """The way a later session reads a collection's schema: only ``import bge_siglip_chroma`` and Chroma's own
    deserialisation, in a process that shares nothing with this one (run in ``/``)."""
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema_with(sparse).serialize_to_json()))
    script = (
        "import json, sys, bge_siglip_chroma\n"
        "from chromadb.api.types import Schema\n"
        f"schema = Schema.deserialize_from_json(json.loads(open(sys.argv[1]).read()))\n"
        f"f = schema.keys[{KEY!r}].sparse_vector.sparse_vector_index.config.embedding_function\n"
        f"print(json.dumps({{'type': type(f).__name__, 'config': f.get_config(),\n"
        f"                  'vectors': [[v.indices, v.values] for v in f({TEXTS!r})]}}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], cwd="/", capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    assert theirs["type"] == "BGESigLIPSparseEmbeddingFunction"
    assert theirs["config"] == sparse.get_config()
    assert [tuple(pair) for pair in theirs["vectors"]] == as_pairs(sparse(TEXTS))


@pytest.mark.parametrize("bad", [
    {"fingerprint": "x"},                             # no model
    {"model": "m", "fingerprint": "x", "include_tokens": "yes"},
    {"model": "m", "fingerprint": "x", "top_k": 5},    # a key a newer release might add
])
def test_validate_config_rejects(bad):
    with pytest.raises(ValueError):
        BGESigLIPSparseEmbeddingFunction.validate_config(bad)


def test_a_stored_schema_whose_model_now_has_other_heads_is_refused(sparse, bge_siglip_other_heads_model_dir):
    """E.g. the model directory was replaced by one with retrained heads: its sparse vectors would not match the
    stored ones. Chroma itself only warns and drops the function (documents would then be added without sparse
    vectors); the guard raises the rebuild's error instead."""
    stored = schema_with(sparse).serialize_to_json()
    config = stored_function(stored)["config"]
    config["model"] = str(bge_siglip_other_heads_model_dir)  # the same dense model, other heads
    with pytest.raises(ModelMismatchError):
        Schema.deserialize_from_json(stored)
    # What chromadb does without the guard (its own method, unwrapped):
    unguarded = Schema.__dict__["_deserialize_sparse_vector_value_type"].__func__.__wrapped__
    with pytest.warns(UserWarning, match="Could not reconstruct sparse embedding function"):
        value_type = unguarded(Schema, stored["keys"][KEY]["sparse_vector"])
    assert value_type.sparse_vector_index.config.embedding_function is None
    # A config update may move the model, not change it.
    other = BGESigLIPSparseEmbeddingFunction(bge_siglip_other_heads_model_dir, device="cpu")
    assert other.vectorizer.fingerprint == sparse.vectorizer.fingerprint  # only the heads differ
    sparse.validate_config_update(sparse.get_config(), {**sparse.get_config(), "model": "/moved"})
    with pytest.raises(ModelMismatchError):
        sparse.validate_config_update(sparse.get_config(), other.get_config())


def test_the_guard_leaves_other_sparse_functions_to_chroma(sparse):
    stored = schema_with(sparse).serialize_to_json()
    stored_function(stored)["name"] = "chroma_bm25"
    stored_function(stored)["config"] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        function = rebuilt_function(Schema.deserialize_from_json(stored))
    assert type(function).__name__ == "ChromaBm25EmbeddingFunction"


def test_the_client_side_of_chroma_clouds_path_uses_the_function(sparse, bge_siglip_model_dir, ephemeral_server):
    """What a client does with a collection whose stored schema has our sparse index, before it sends anything:
    ``add`` prepares the request (the documents' sparse vectors under ``KEY`` in the metadata) and ``search`` embeds
    the string ``Knn`` of that key; both call the function rebuilt from the schema. The collection model is the one
    a Cloud server would answer (local servers refuse such schemas), so only the request preparation runs here, with
    the README's Search expression."""
    import uuid as uuid_module

    from chromadb import Rrf
    from chromadb.api.models.Collection import Collection
    from chromadb.types import Collection as CollectionModel

    ef = BGESigLIPEmbeddingFunction(bge_siglip_model_dir, device="cpu")
    stored = json.loads(json.dumps(schema_with(BGESigLIPSparseEmbeddingFunction.from_dense(ef)).serialize_to_json()))
    model = CollectionModel(id=uuid_module.uuid4(), name="shop", configuration_json={}, serialized_schema=stored,
                            metadata=None, dimension=None, tenant="default_tenant", database="default_database")
    shop = Collection(client=ephemeral_server, model=model, embedding_function=ef)
    request = shop._validate_and_prepare_add_request(ids=["a", "b"], embeddings=None, metadatas=None,
                                                     documents=TEXTS[1:3], images=None, uris=None)
    assert [as_pairs([m[KEY]]) for m in request["metadatas"]] == [as_pairs([v]) for v in sparse(TEXTS[1:3])]
    search = Search().rank(Rrf([Knn(query=CODE, return_rank=True), Knn(query=CODE, key=KEY, return_rank=True)]))
    knns = {knn["key"]: knn["query"] for knn in _knns(shop._embed_search_string_queries(search.limit(10)).to_dict())}
    (query,) = sparse.embed_query([CODE])
    # What goes on the wire: our sparse query vector for the sparse key, our dense one for the embedding.
    assert knns[KEY] == {"#type": "sparse_vector", "indices": query.indices, "values": query.values}
    np.testing.assert_allclose(knns["#embedding"], ef.embed_query([CODE])[0], atol=1e-6)


@pytest.fixture
def ephemeral_server(chroma_settings):
    # Chroma keeps one ephemeral system per process and refuses other settings later: release it afterwards.
    yield chromadb.EphemeralClient(settings=chroma_settings())._server
    SharedSystemClient.clear_system_cache()


def _knns(expression):
    if isinstance(expression, dict):
        if "$knn" in expression:
            yield expression["$knn"]
        for value in expression.values():
            yield from _knns(value)
    elif isinstance(expression, list):
        for value in expression:
            yield from _knns(value)


# ------------------------------------------------------------------------------------------------ local Chroma
@pytest.fixture(params=["persistent", "chroma run"])
def local_client(request, tmp_path, chroma_settings):
    if request.param == "persistent":
        return chromadb.PersistentClient(path=str(tmp_path / "db"), settings=chroma_settings())
    server = request.getfixturevalue("chroma_server")
    return chromadb.HttpClient(host=server.host, port=server.port, settings=chroma_settings())


def test_local_chroma_refuses_a_sparse_index_in_the_schema(local_client, sparse):
    name = f"sparse-{uuid.uuid4().hex[:8]}"
    with pytest.raises(Exception, match="Sparse vector indexing is not enabled in local"):
        local_client.create_collection(name, schema=schema_with(sparse))
    assert name not in [c.name for c in local_client.list_collections()]


def test_local_chroma_refuses_sparse_metadata_and_the_search_api(local_client, sparse, bge_siglip_model_dir):
    collection = local_client.create_collection(
        f"dense-{uuid.uuid4().hex[:8]}", embedding_function=BGESigLIPEmbeddingFunction(bge_siglip_model_dir,
                                                                                       device="cpu"))
    try:
        with pytest.raises(Exception, match="Cannot convert Python object to MetadataValue|Sparse vector is not "
                                            "supported for local chroma"):
            collection.add(ids=["a"], documents=TEXTS[:1], metadatas=[{KEY: sparse(TEXTS[:1])[0]}])
        assert collection.count() == 0
        collection.add(ids=["a"], documents=TEXTS[:1])
        with pytest.raises(Exception, match="Search is not implemented for Local Chroma|Search operation is not "
                                            "implemented for local executor"):
            collection.search(Search().rank(Knn(query=TEXTS[0])).limit(1))
    finally:
        local_client.delete_collection(collection.name)


def test_locally_the_sparse_vectors_re_rank_dense_candidates_on_the_client(sparse, bge_siglip_model_dir, tmp_path,
                                                                          chroma_settings):
    """The README's local recipe: dense candidates from Chroma, then BGE-M3's lexical score (``SparseEmbedding.dot``)
    from the same model; a query sharing a rare token (a product code) with one document finds it first."""
    client = chromadb.PersistentClient(path=str(tmp_path / "db"), settings=chroma_settings())
    ef = BGESigLIPEmbeddingFunction(bge_siglip_model_dir, device="cpu")
    shop = client.create_collection("shop", embedding_function=ef)
    shop.add(ids=[f"t{i}" for i in range(len(TEXTS))], documents=TEXTS)

    # --- the recipe
    query = CODE
    hits = shop.query(query_texts=[query], n_results=6, include=["documents"])
    vec = BGESigLIPSparseEmbeddingFunction.from_dense(ef).vectorizer  # the same model, loaded once
    lexical = vec.encode_texts_sparse([query] + hits["documents"][0])
    scores = [lexical[0].dot(document) for document in lexical[1:]]
    reranked = [hits["ids"][0][i] for i in np.argsort(scores, kind="stable")[::-1]]
    # ---

    assert hits["ids"][0][0] != CODE_DOC and CODE_DOC in hits["ids"][0]  # dense alone does not put it first
    assert reranked[0] == CODE_DOC
    assert sorted(scores, reverse=True)[1] == 0.0  # no other candidate shares a token with the code
