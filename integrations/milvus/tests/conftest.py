"""Fixtures for the Milvus adapter tests: one real milvus-lite database per session, a fresh collection per test.

milvus-lite runs its gRPC server in this process (on 127.0.0.1); one ``.db`` file can be open in one process only,
so the contract harness uses a file of its own per test and releases it before another process opens it.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator

import pytest
from pymilvus import MilvusClient

from bge_siglip_milvus import BGESigLIPEmbeddingFunction, BGESigLIPMilvus

_names = itertools.count()


@pytest.fixture(scope="session")
def milvus_db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("milvus") / "session.db"


@pytest.fixture(scope="session")
def milvus_client(milvus_db_path: Path) -> Iterator[MilvusClient]:
    client = MilvusClient(str(milvus_db_path))
    yield client
    client.close()


@pytest.fixture(scope="session")
def embedding_function(bge_siglip_model_dir: Path) -> BGESigLIPEmbeddingFunction:
    return BGESigLIPEmbeddingFunction(model=bge_siglip_model_dir, device="cpu", batch_size=4)


@pytest.fixture
def db(milvus_client: MilvusClient, embedding_function: BGESigLIPEmbeddingFunction) -> BGESigLIPMilvus:
    return BGESigLIPMilvus(milvus_client, embedding_function)


@pytest.fixture
def collection(db: BGESigLIPMilvus) -> Iterator[str]:
    name = f"test_{next(_names)}"
    db.create_collection(name)
    yield name
    db.client.drop_collection(name)
