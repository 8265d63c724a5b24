"""The OpenAI-compatible API (/v1/embeddings, /v1/models): the real ``openai`` client and Chroma's own
``OpenAIEmbeddingFunction`` against the server on 127.0.0.1; vectors equal the core's."""

from __future__ import annotations

import base64
import http.server
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest

from bge_siglip_vectorizer import InvalidInputError, Vectorizer
from bge_siglip_vectorizer.testing.images import encode_image, sample_image

TEXTS = ["a photo of a dog on the beach", "ein Hund am Strand", "海滩上的一只狗"]


@pytest.fixture
def openai_client(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60) as client:
        yield client


def _error(response: httpx.Response, status: int, param: str | None, *needles: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}, body
    error = body["error"]
    assert error["param"] == param and error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    for needle in needles:
        assert needle in error["message"], error["message"]
    return error


def test_texts_with_the_openai_client_equal_the_core(openai_client, bge_siglip_vectorizer) -> None:
    expected = bge_siglip_vectorizer.encode_texts(TEXTS)
    for encoding_format in ("float", "base64", None):  # None: the client's default (it asks for base64)
        extra = {} if encoding_format is None else {"encoding_format": encoding_format}
        response = openai_client.embeddings.create(model="bge-siglip", input=TEXTS, **extra)
        assert [d.index for d in response.data] == [0, 1, 2] and response.model == "bge-siglip"
        # Asked for explicitly, base64 comes back as it was sent; by default the client decodes it itself.
        vectors = [np.frombuffer(base64.b64decode(d.embedding), "<f4") if isinstance(d.embedding, str)
                   else d.embedding for d in response.data]
        assert isinstance(response.data[0].embedding, str) == (encoding_format == "base64")
        np.testing.assert_allclose(vectors, expected, atol=1e-6)
        tokens = sum(bge_siglip_vectorizer.count_tokens(TEXTS))
        assert (response.usage.prompt_tokens, response.usage.total_tokens) == (tokens, tokens)
    single = openai_client.embeddings.create(model="bge-siglip", input="ein Hund am Strand")
    np.testing.assert_allclose(single.data[0].embedding, expected[1], atol=1e-6)


def test_the_response_shape(client, bge_siglip_vectorizer) -> None:
    body = client.post("/v1/embeddings", json={"model": "bge-siglip", "input": ["x"], "encoding_format": "base64",
                                               "user": "ignored", "dimensions": bge_siglip_vectorizer.dim}).json()
    assert body["object"] == "list" and body["model"] == "bge-siglip" and set(body["usage"]) == {"prompt_tokens",
                                                                                                 "total_tokens"}
    (item,) = body["data"]
    assert item["object"] == "embedding" and item["index"] == 0
    vector = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")  # little-endian float32, as OpenAI
    np.testing.assert_allclose(vector, bge_siglip_vectorizer.encode_texts(["x"])[0], atol=1e-6)


def test_images_as_data_uris_and_base64(openai_client, bge_siglip_vectorizer) -> None:
    files = [encode_image(sample_image(60, 40, seed=s), "PNG") for s in (1, 2)]
    inputs = ["data:image/png;base64," + base64.b64encode(files[0]).decode(), base64.b64encode(files[1]).decode()]
    response = openai_client.embeddings.create(model="bge-siglip", input=inputs, extra_body={"modality": "image"})
    np.testing.assert_allclose([d.embedding for d in response.data], bge_siglip_vectorizer.encode_images(files),
                               atol=1e-5)
    patches = sum(p.num_patches for p in bge_siglip_vectorizer.prepare_images(files))
    assert response.usage.prompt_tokens == patches  # for images: the patches the vision tower was given


class _OneImage(http.server.BaseHTTPRequestHandler):
    body = encode_image(sample_image(50, 50, seed=9), "PNG")

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


def test_image_urls_only_where_the_operator_allows_them(client, start_server, bge_siglip_model_dir) -> None:
    image_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OneImage)
    threading.Thread(target=image_server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{image_server.server_address[1]}/photo.png"
    body = {"model": "bge-siglip", "input": [url], "modality": "image"}
    try:
        _error(client.post("/v1/embeddings", json=body), 400, "input", "input[0]", "--allow-urls")
        for path in ("/etc/hostname", "file:///etc/hostname"):  # never a file path, allowed or not
            _error(client.post("/v1/embeddings", json={**body, "input": [path]}), 400, "input", "input[0]")
        allowing = start_server(allow_urls=True)
        response = httpx.post(allowing.url + "/v1/embeddings", json=body, timeout=60)
        # The server fetches exactly as the core does with URLs allowed (its guards included): same vector or
        # the same refusal.
        core = Vectorizer.from_pretrained(bge_siglip_model_dir, device="cpu", allow_urls=True)
        try:
            expected = core.encode_images([url])
        except InvalidInputError as exc:
            _error(response, 400, "input", exc.reason)
        else:
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(response.json()["data"][0]["embedding"], expected[0], atol=1e-5)
        finally:
            core.close()
        _error(httpx.post(allowing.url + "/v1/embeddings", json={**body, "input": ["/etc/hostname"]}), 400, "input")
    finally:
        image_server.shutdown()


def test_models_list(openai_client) -> None:
    assert [m.id for m in openai_client.models.list().data] == ["bge-siglip"]


@pytest.mark.parametrize(
    ("fields", "status", "param", "needle"),
    [
        ({"model": "text-embedding-ada-002"}, 404, "model", "does not exist"),
        ({"model": None}, 400, "model", "required"),
        ({"dimensions": 256}, 400, "dimensions", "cannot be shortened"),
        ({"input": [[1, 2, 3]]}, 400, "input", "token arrays"),
        ({"input": [1, 2, 3]}, 400, "input", "token arrays"),
        ({"input": []}, 400, "input", "non-empty"),
        ({"input": ["fine", ""]}, 400, "input", "input[1]"),
        ({"input": ["fine", 3.5]}, 400, "input", "input[1]"),
        ({"input": ["a\ud800"]}, 400, "input", "input[0]"),
        ({"encoding_format": "int8"}, 400, "encoding_format", "float"),
        ({"modality": "audio"}, 400, "modality", "image"),
        ({"modality": "image", "input": ["bm90IGFuIGltYWdl"]}, 400, "input", "input[0]"),
    ],
)
def test_errors_in_openai_shape(client, fields, status, param, needle) -> None:
    import json

    body = json.dumps({"model": "bge-siglip", "input": ["fine"], **fields}).encode()
    error = _error(client.post("/v1/embeddings", content=body), status, param, needle)
    if status == 404:
        assert error["code"] == "model_not_found"


def test_the_openai_client_raises_its_own_errors(openai_client) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        openai_client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        openai_client.embeddings.create(model="bge-siglip", input="x", dimensions=8)


def test_malformed_bodies_and_unknown_routes_are_openai_errors(client) -> None:
    _error(client.post("/v1/embeddings", content=b"{not json"), 400, None, "JSON")
    _error(client.post("/v1/embeddings", content=b"[1]"), 400, None, "object")
    assert client.get("/v1/nope").json()["error"]["type"] == "invalid_request_error"


def test_the_same_queue_and_limits_as_vectorize(start_server, wait_for, bge_siglip_vectorizer) -> None:
    running = start_server(max_items_per_request=3)
    _error(httpx.post(running.url + "/v1/embeddings", json={"model": "bge-siglip", "input": ["a"] * 4}), 413,
           None, "at most 3")
    with ThreadPoolExecutor(2) as pool, running.batcher.hold():
        ours = pool.submit(httpx.post, running.url + "/v1/embeddings",
                           json={"model": "bge-siglip", "input": ["from openai"]}, timeout=60)
        weaviate = pool.submit(httpx.post, running.url + "/vectorize", json={"texts": ["from weaviate"]}, timeout=60)
        wait_for(lambda: running.batcher.queued_requests == 2, what="both requests queued")
    expected = bge_siglip_vectorizer.encode_texts(["from openai", "from weaviate"])
    np.testing.assert_allclose(ours.result().json()["data"][0]["embedding"], expected[0], atol=1e-6)
    np.testing.assert_allclose(weaviate.result().json()["textVectors"][0], expected[1], atol=1e-6)
    meta = httpx.get(running.url + "/meta").json()["server"]
    assert (meta["worker_batches"], meta["encode_stats"]["text_batches"]) == (1, 1)  # one forward for both


def test_openai_requests_wait_for_the_next_forward_beyond_the_batch_size(start_server, wait_for,
                                                                        bge_siglip_vectorizer) -> None:
    running = start_server(max_batch_size=2)
    texts = [f"request {i}" for i in range(5)]
    with ThreadPoolExecutor(len(texts)) as pool, running.batcher.hold():
        futures = []
        for queued, text in enumerate(texts, 1):  # one at a time, so they queue in this order
            futures.append(pool.submit(httpx.post, running.url + "/v1/embeddings",
                                       json={"model": "bge-siglip", "input": text}, timeout=60))
            wait_for(lambda: running.batcher.queued_requests == queued, what=f"request {queued} queued")
    vectors = [future.result().json()["data"][0]["embedding"] for future in futures]
    np.testing.assert_allclose(vectors, bge_siglip_vectorizer.encode_texts(texts), atol=1e-5)
    meta = httpx.get(running.url + "/meta").json()["server"]
    assert (meta["worker_batches"], meta["largest_batch_requests"]) == (3, 2)  # 2 + 2 + 1, never 5 at once
    assert meta["encode_stats"]["text_batches"] == 3


def test_api_key_as_bearer(start_server) -> None:
    running = start_server(api_key="s3cret")
    with openai.OpenAI(base_url=running.url + "/v1", api_key="wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            wrong.embeddings.create(model="bge-siglip", input="x")
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
    with openai.OpenAI(base_url=running.url + "/v1", api_key="s3cret", max_retries=0) as right:
        assert len(right.embeddings.create(model="bge-siglip", input="x").data) == 1
    response = httpx.post(running.url + "/v1/embeddings", json={"model": "bge-siglip", "input": "x"})
    assert _error(response, 401, None, "API key")["code"] == "invalid_api_key"


def test_chromas_openai_embedding_function(server, bge_siglip_vectorizer, monkeypatch) -> None:
    chromadb = pytest.importorskip("chromadb")
    from chromadb.utils.embedding_functions import OpenAIEmbeddingFunction

    monkeypatch.setenv("CHROMA_OPENAI_API_KEY", "unused")  # Chroma's own way: the key by variable name
    function = OpenAIEmbeddingFunction(model_name="bge-siglip", api_base=server.url + "/v1")
    np.testing.assert_allclose(np.stack(function(TEXTS)), bge_siglip_vectorizer.encode_texts(TEXTS), atol=1e-6)
    collection = chromadb.EphemeralClient().get_or_create_collection("openai_compat", embedding_function=function)
    collection.add(ids=["dog", "cat"], documents=["a dog on the beach", "a cat on a sofa"])
    vectors = collection.get(ids=["dog"], include=["embeddings"])["embeddings"]
    np.testing.assert_allclose(vectors[0], bge_siglip_vectorizer.encode_texts(["a dog on the beach"])[0], atol=1e-6)
    hits = collection.query(query_texts=["a dog on the beach"], n_results=1)
    assert hits["ids"] == [["dog"]]
