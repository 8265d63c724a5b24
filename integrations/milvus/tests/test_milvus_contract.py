"""The core's adapter contract, run against milvus-lite through ``BGESigLIPMilvus``.

The harness adds with ``add_images`` / ``add_texts`` (the suite's ids as primary keys, its metadata as dynamic
fields) and queries with ``search``, on a milvus-lite file of its own. Milvus stores no embedding function, so a
reopening process passes the model again; the fingerprint recorded in the collection's properties guards it.
``change_model`` is what a Milvus user would do to point an existing collection at another model: create it again
through the adapter with that model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pytest
from pymilvus import MilvusClient

from bge_siglip_milvus import BGESigLIPEmbeddingFunction, BGESigLIPMilvus
from bge_siglip_vectorizer.testing import contract as c

COLLECTION = "contract"
_ADAPTER_FIELDS = ("id", "vector", "modality", "source", "text")


def _release(path: Path) -> None:
    # milvus-lite serves a file from one process; pymilvus keeps the server until exit unless it is released.
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(str(path))


class MilvusHarness(c.StoreHarness):
    def __init__(self, path: Path, model_dir: Path, create: bool = True, client: MilvusClient | None = None):
        self.path, self.model_dir = Path(path), Path(model_dir)
        self.client = client or MilvusClient(str(self.path))
        self.db = BGESigLIPMilvus(self.client, BGESigLIPEmbeddingFunction(model=self.model_dir, device="cpu"))
        self.vectorizer = self.db.vectorizer
        if create:
            self.db.create_collection(COLLECTION)

    def add_images(self, ids: Sequence[str], images: Sequence[Any], metadatas: Sequence[dict] | None = None):
        self.db.add_images(COLLECTION, list(images), ids=list(ids), payloads=metadatas)

    def add_texts(self, ids: Sequence[str], texts: Sequence[str], metadatas: Sequence[dict] | None = None):
        self.db.add_texts(COLLECTION, list(texts), ids=list(ids), payloads=metadatas)

    def query_text(self, text: str, k: int) -> list[str]:
        return [hit["id"] for hit in self.db.search(COLLECTION, texts=[text], limit=k)[0]]

    def query_image(self, image: Any, k: int) -> list[str]:
        return [hit["id"] for hit in self.db.search(COLLECTION, images=[image], limit=k)[0]]

    def count(self) -> int:
        self.client.load_collection(COLLECTION)
        return self.client.query(COLLECTION, filter="", output_fields=["count(*)"])[0]["count(*)"]

    def get_metadata(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        rows = {row["id"]: row for row in self.client.query(COLLECTION, ids=list(ids), output_fields=["*"])}
        return [None if i not in rows else {k: v for k, v in rows[i].items() if k not in _ADAPTER_FIELDS}
                for i in ids]

    def add_images_by_content(self, images: Sequence[Any]) -> list[str]:
        return self.db.add_images(COLLECTION, list(images)).ids

    def add_texts_by_content(self, texts: Sequence[str]) -> list[str]:
        return self.db.add_texts(COLLECTION, list(texts)).ids

    # add_* upsert (Milvus has no insert-only path in the adapter)
    def upsert_images(self, ids: Sequence[str], images: Sequence[Any]) -> None:
        self.add_images(ids, images)

    def upsert_texts(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        self.add_texts(ids, texts)

    def delete(self, ids: Sequence[str]) -> None:
        self.client.delete(COLLECTION, ids=list(ids))

    def with_model(self, model_dir: Path) -> "MilvusHarness":
        return MilvusHarness(self.path, model_dir, create=False, client=self.client)

    def change_model(self, model_dir: Path) -> None:
        BGESigLIPMilvus(self.client, model=model_dir, device="cpu").create_collection(COLLECTION, exist_ok=True)

    def stored_config(self) -> Any:
        description = MilvusClient(str(self.path)).describe_collection(COLLECTION)  # a new client object
        return {"properties": description["properties"],
                "fields": [{k: str(v) for k, v in field.items()} for field in description["fields"]]}

    def reopen(self) -> "MilvusHarness":
        return MilvusHarness(self.path, self.model_dir, create=False)

    def reopen_spec(self) -> dict[str, Any]:
        return {"path": str(self.path), "model": str(self.model_dir)}

    @classmethod
    def reopen_from(cls, spec: dict[str, Any]) -> "MilvusHarness":
        return cls(Path(spec["path"]), Path(spec["model"]), create=False)

    def close(self) -> None:
        self.client.close()
        _release(self.path)


_NO_ASYNC = "the adapter wraps MilvusClient only; AsyncMilvusClient is not wrapped yet (README)"


class TestMilvusContract(c.ContractTests, c.AddTests, c.RankingTests, c.BadBatchTests, c.MetadataTests,
                         c.ExplicitIdTests, c.ContentIdTests, c.UpsertTests, c.DeleteTests, c.ModelGuardTests,
                         c.ReopenTests):
    opt_outs = {"AsyncTests": _NO_ASYNC, "AsyncOffLoopTests": _NO_ASYNC}

    @pytest.fixture
    def harness(self, bge_siglip_model_dir, tmp_path):
        return MilvusHarness(tmp_path / "contract.db", bge_siglip_model_dir)
