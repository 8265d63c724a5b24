"""A fresh ``HttpClient`` rebuilds our function from the server's stored config, in this process.

Reopening in a separate Python process (both clients, answers, metadata, a refused model change that must not
persist) is the contract's ``ReopenTests``, run by ``test_chroma_contract.py``.
"""

from __future__ import annotations

import uuid

import chromadb
import numpy as np
import pytest
from chromadb.api.shared_system_client import SharedSystemClient

from bge_siglip_chroma import BGESigLIPEmbeddingFunction
from bge_siglip_vectorizer.testing.contract import CONTRACT_TEXTS


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
