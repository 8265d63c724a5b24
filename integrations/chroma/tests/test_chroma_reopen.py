"""Reopening in a separate Python process: ``get_collection(name)`` with no embedding function passed must rebuild
ours from the stored config and answer queries exactly as the writing process did.

Covers ``PersistentClient`` (same directory) and ``HttpClient`` (a real ``chroma run`` server; the server stores
the config as opaque JSON, the client process rebuilds the function).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest
from chromadb.api.shared_system_client import SharedSystemClient
from PIL import Image

from bge_siglip_chroma import BGESigLIPEmbeddingFunction, ImageURILoader
from bge_siglip_vectorizer.testing.contract import CONTRACT_TEXTS, contract_images

# Runs in a fresh interpreter (one process for both clients: interpreter start-up dominates the cost). It first
# queries WITHOUT importing the adapter (Chroma cannot know the name yet), then imports it and queries again.
READER = r"""
import json, sys
import chromadb
import numpy as np
from chromadb.config import Settings

def connect(spec):
    settings = Settings(anonymized_telemetry=False)  # a new object per client: chromadb mutates it
    if spec["client"] == "persistent":
        return chromadb.PersistentClient(path=spec["path"], settings=settings)
    return chromadb.HttpClient(host=spec["host"], port=spec["port"], settings=settings)

specs = json.load(open(sys.argv[1]))
clients = [connect(spec) for spec in specs]
before_import = []
for spec, client in zip(specs, clients):
    try:
        client.get_collection(spec["name"]).query(query_texts=spec["texts"][:1], n_results=1)
        before_import.append(None)
    except Exception as exc:
        before_import.append(f"{type(exc).__name__}: {exc}")

import bge_siglip_chroma  # registers "bge-siglip"; nothing else from the adapter is passed to Chroma below

results = []
for spec, client, before in zip(specs, clients, before_import):
    collection = client.get_collection(spec["name"], data_loader=bge_siglip_chroma.ImageURILoader())
    k, include = spec["k"], ["distances"]
    results.append({
        "before_import": before,
        "function": type(collection.configuration["embedding_function"]).__name__,
        "stored": collection.configuration_json["embedding_function"],
        "count": collection.count(),
        "text": collection.query(query_texts=spec["texts"], n_results=k, include=include),
        "image": collection.query(query_images=[np.load(p) for p in spec["arrays"]], n_results=k, include=include),
        "uri": collection.query(query_uris=spec["uris"], n_results=k, include=include),
    })
print(json.dumps(results))
"""


def _fill(collection, tmp_path: Path) -> dict[str, Any]:
    """Add 4 images (2 as arrays, 2 by URI) and 3 texts; return the queries to replay and this process's answers."""
    images = contract_images(4)
    arrays, uris = [], []
    for i, image in enumerate(images):
        np.save(tmp_path / f"img-{i}.npy", image)  # query images for the reader process
        arrays.append(str(tmp_path / f"img-{i}.npy"))
        Image.fromarray(image).save(tmp_path / f"img-{i}.png")
        uris.append(str(tmp_path / f"img-{i}.png"))
    collection.add(ids=["img-0", "img-1"], images=images[:2])
    collection.add(ids=["img-2", "img-3"], uris=uris[2:])
    collection.add(ids=["txt-0", "txt-1", "txt-2"], documents=CONTRACT_TEXTS[:3])
    spec = {"name": collection.name, "k": 7, "texts": CONTRACT_TEXTS[:3], "arrays": arrays[:2], "uris": uris[2:]}
    include = ["distances"]
    answers = {
        "text": collection.query(query_texts=spec["texts"], n_results=7, include=include),
        "image": collection.query(query_images=images[:2], n_results=7, include=include),
        "uri": collection.query(query_uris=uris[2:], n_results=7, include=include),
    }
    return {"spec": spec, "answers": answers}


def _read_in_new_process(specs: list[dict[str, Any]], tmp_path: Path) -> list[dict[str, Any]]:
    spec_path, script = tmp_path / "specs.json", tmp_path / "reader.py"
    spec_path.write_text(json.dumps(specs))
    script.write_text(READER)
    # cwd elsewhere: the stored model path must be absolute. Same interpreter/venv as the tests.
    result = subprocess.run(
        [sys.executable, str(script), str(spec_path)], cwd="/", capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _assert_same_answers(theirs: dict[str, Any], ours: dict[str, Any], expected_config: dict[str, Any]) -> None:
    assert theirs["before_import"] is not None and "bge-siglip" in theirs["before_import"]
    assert "register_embedding_function" in theirs["before_import"]
    assert theirs["function"] == "BGESigLIPEmbeddingFunction"
    assert theirs["stored"] == {"type": "known", "name": "bge-siglip", "config": expected_config}
    assert theirs["count"] == 7
    for key in ("text", "image", "uri"):
        assert theirs[key]["ids"] == ours[key]["ids"], key
        np.testing.assert_allclose(theirs[key]["distances"], ours[key]["distances"], atol=1e-5)
    # and the answers are right, not merely equal: every query's own item comes first
    assert [ids[0] for ids in theirs["text"]["ids"]] == ["txt-0", "txt-1", "txt-2"]
    assert [ids[0] for ids in theirs["image"]["ids"]] == ["img-0", "img-1"]
    assert [ids[0] for ids in theirs["uri"]["ids"]] == ["img-2", "img-3"]


def test_persistent_and_http_collections_reopen_in_a_new_process(
    bge_siglip_model_dir, tmp_path, chroma_server, chroma_settings
):
    ef = BGESigLIPEmbeddingFunction(bge_siglip_model_dir, device="cpu")
    local = chromadb.PersistentClient(path=str(tmp_path / "db"), settings=chroma_settings())
    remote = chromadb.HttpClient(host=chroma_server.host, port=chroma_server.port, settings=chroma_settings())
    remote_name = f"photos-{uuid.uuid4().hex[:8]}"
    try:
        filled_local = _fill(local.create_collection("photos", embedding_function=ef, data_loader=ImageURILoader()),
                             tmp_path)
        filled_remote = _fill(
            remote.create_collection(remote_name, embedding_function=ef, data_loader=ImageURILoader()), tmp_path
        )
        specs = [
            {**filled_local["spec"], "client": "persistent", "path": str(tmp_path / "db")},
            {**filled_remote["spec"], "client": "http", "host": chroma_server.host, "port": chroma_server.port},
        ]
        theirs_local, theirs_remote = _read_in_new_process(specs, tmp_path)
        _assert_same_answers(theirs_local, filled_local["answers"], ef.get_config())
        _assert_same_answers(theirs_remote, filled_remote["answers"], ef.get_config())
    finally:
        remote.delete_collection(remote_name)


def test_http_fresh_client_in_this_process_rebuilds_the_function(bge_siglip_model_dir, chroma_server, chroma_settings):
    ef = BGESigLIPEmbeddingFunction(bge_siglip_model_dir, device="cpu")
    client = chromadb.HttpClient(host=chroma_server.host, port=chroma_server.port, settings=chroma_settings())
    name = f"fresh-{uuid.uuid4().hex[:8]}"
    client.create_collection(name, embedding_function=ef).add(ids=["a", "b"], documents=CONTRACT_TEXTS[:2])
    try:
        SharedSystemClient.clear_system_cache()
        fresh = chromadb.HttpClient(host=chroma_server.host, port=chroma_server.port, settings=chroma_settings())
        collection = fresh.get_collection(name)
        rebuilt = collection.configuration["embedding_function"]
        assert isinstance(rebuilt, BGESigLIPEmbeddingFunction)
        assert rebuilt.vectorizer is ef.vectorizer  # rebuilt from config, still one model in the process
        assert collection.query(query_texts=[CONTRACT_TEXTS[1]], n_results=2)["ids"][0][0] == "b"
        with pytest.raises(ValueError, match="Embedding function conflict"):
            fresh.get_collection(name, embedding_function=_OtherFunction())
    finally:
        client.delete_collection(name)


class _OtherFunction(chromadb.EmbeddingFunction):  # type: ignore[type-arg]
    """A different registered-style function: Chroma must refuse it for a bge-siglip collection."""

    def __init__(self) -> None:
        pass

    def __call__(self, input):  # noqa: A002 - Chroma's protocol name
        return [np.zeros(3, dtype=np.float32) for _ in input]

    @staticmethod
    def name() -> str:
        return "not-bge-siglip"

    def get_config(self) -> dict:
        return {}

    @staticmethod
    def build_from_config(config: dict) -> "_OtherFunction":
        return _OtherFunction()
