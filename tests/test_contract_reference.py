"""The contract suite against a reference store, and against broken variants of it.

:class:`ReferenceHarness` is a correct store in a few lines: rows (core vectors + metadata) and the model's
fingerprint in one JSON file, rewritten atomically; brute-force cosine search; the model rebuilt from the stored
path on reopen, like Chroma does. Every capability mixin passes on it (``TestReferenceStore``).

Each ``_Broken*`` variant breaks ONE promise the way real adapters have broken it (a reopen that only worked
in-process, a model change persisted before it was refused, async writes never awaited, ...). Running the mixin's
test on it must FAIL with an assertion: that is the proof that the test can fail, so a passing adapter means
something.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from bge_siglip_vectorizer import ModelMismatchError, shared_vectorizer
from bge_siglip_vectorizer.testing import contract as c


class ReferenceHarness(c.StoreHarness):
    """A store in a JSON file: ``{"model": {"path", "fingerprint"}, "rows": {id: {"vector", "metadata"}}}``."""

    def __init__(self, path: Path, model_dir: str | Path) -> None:
        self.path = path
        self.vectorizer = shared_vectorizer(model_dir, device="cpu")
        stored = self._load()["model"]["fingerprint"]
        if stored != self.vectorizer.fingerprint:
            raise ModelMismatchError(f"store {path.name!r}", stored, self.vectorizer.fingerprint)

    @classmethod
    def create(cls, path: Path, model_dir: str | Path) -> "ReferenceHarness":
        fingerprint = shared_vectorizer(model_dir, device="cpu").fingerprint
        cls._save_to(path, {"model": {"path": str(model_dir), "fingerprint": fingerprint}, "rows": {}})
        return cls(path, model_dir)

    @classmethod
    def open(cls, path: Path) -> "ReferenceHarness":
        """Reopen with the model the store recorded (no model passed), as Chroma rebuilds its function."""
        return cls(path, json.loads(path.read_text())["model"]["path"])

    # ------------------------------------------------------------------------------------ storage
    def _load(self) -> dict[str, Any]:
        return json.loads(self.path.read_text())

    @staticmethod
    def _save_to(path: Path, data: dict[str, Any]) -> None:
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        os.replace(temporary, path)

    def _save(self, data: dict[str, Any]) -> None:
        self._save_to(self.path, data)

    def _write(self, ids: Sequence[str], vectors: np.ndarray, metadatas: Sequence[dict] | None) -> None:
        # Reached only after the whole batch was encoded: a bad item writes nothing.
        data = self._load()
        for i, (item_id, vector) in enumerate(zip(ids, vectors, strict=True)):
            data["rows"][item_id] = {"vector": vector.tolist(), "metadata": metadatas[i] if metadatas else None}
        self._save(data)

    def _nearest(self, query: np.ndarray, k: int) -> list[str]:
        rows = self._load()["rows"]
        ids = list(rows)
        if not ids:
            return []
        scores = np.asarray([rows[i]["vector"] for i in ids], np.float32) @ query
        return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]

    # ------------------------------------------------------------------------------------ the harness API
    def add_images(self, ids, images, metadatas=None):
        self._write(ids, self.vectorizer.encode_images(images), metadatas)

    def add_texts(self, ids, texts, metadatas=None):
        self._write(ids, self.vectorizer.encode_texts(texts), metadatas)

    def query_text(self, text, k):
        return self._nearest(self.vectorizer.encode_texts([text])[0], k)

    def query_image(self, image, k):
        return self._nearest(self.vectorizer.encode_images([image])[0], k)

    def count(self):
        return len(self._load()["rows"])

    def get_metadata(self, ids):
        rows = self._load()["rows"]
        return [rows[i]["metadata"] for i in ids]

    @staticmethod
    def content_id(item: Any) -> str:
        data = item.encode() if isinstance(item, str) else repr(item.shape).encode() + np.ascontiguousarray(item).tobytes()
        return hashlib.sha256(data).hexdigest()[:16]

    def add_images_by_content(self, images):
        ids = [self.content_id(image) for image in images]
        self.add_images(ids, images)
        return ids

    def add_texts_by_content(self, texts):
        ids = [self.content_id(text) for text in texts]
        self.add_texts(ids, texts)
        return ids

    def upsert_images(self, ids, images):
        self.add_images(ids, images)

    def upsert_texts(self, ids, texts):
        self.add_texts(ids, texts)

    def delete(self, ids):
        data = self._load()
        for item_id in ids:
            data["rows"].pop(item_id, None)
        self._save(data)

    def with_model(self, model_dir):
        return type(self)(self.path, model_dir)

    def change_model(self, model_dir):
        data = self._load()
        given = shared_vectorizer(model_dir, device="cpu").fingerprint
        if given != data["model"]["fingerprint"]:
            raise ModelMismatchError(f"store {self.path.name!r}", data["model"]["fingerprint"], given)
        data["model"]["path"] = str(model_dir)  # the same model, moved
        self._save(data)

    def stored_config(self):
        return self._load()["model"]

    def reopen(self):
        return type(self).open(self.path)

    def reopen_spec(self):
        return {"path": str(self.path)}

    @classmethod
    def reopen_from(cls, spec):
        return cls.open(Path(spec["path"]))

    async def async_add_images(self, ids, images):
        await asyncio.to_thread(self.add_images, ids, images)

    async def async_add_texts(self, ids, texts):
        await asyncio.to_thread(self.add_texts, ids, texts)

    async def async_query_text(self, text, k):
        return await asyncio.to_thread(self.query_text, text, k)

    async def async_query_image(self, image, k):
        return await asyncio.to_thread(self.query_image, image, k)


class TestReferenceStore(c.ContractTests, *c.CAPABILITIES):
    @pytest.fixture
    def harness(self, bge_siglip_model_dir, tmp_path):
        return ReferenceHarness.create(tmp_path / "store.json", bge_siglip_model_dir)


# ------------------------------------------------------------------------------------------------ broken variants
class _BrokenForgetsWhenClosed(ReferenceHarness):
    """Keeps its rows in this process only: every in-process reopen 'works' (the cannot-fail harnesses of old)."""

    _memory: dict[str, dict] = {}

    def _load(self):
        return json.loads(json.dumps(self._memory.get(str(self.path)) or super()._load()))

    def _save(self, data):
        self._memory[str(self.path)] = json.loads(json.dumps(data))


class _BrokenPersistsRefusedChange(ReferenceHarness):
    """Stores the new model first and refuses afterwards (Chroma 1.x ``modify``, defect 1 of issue 13)."""

    def change_model(self, model_dir):
        data = self._load()
        before = data["model"]["fingerprint"]
        data["model"] = {"path": str(model_dir), "fingerprint": shared_vectorizer(model_dir, device="cpu").fingerprint}
        self._save(data)
        if data["model"]["fingerprint"] != before:
            raise ModelMismatchError(f"store {self.path.name!r}", before, data["model"]["fingerprint"])


class _BrokenNoGuard(ReferenceHarness):
    """Records the model but never compares it (Qdrant before issue 13, defect 3)."""

    def __init__(self, path, model_dir):
        self.path = path
        self.vectorizer = shared_vectorizer(model_dir, device="cpu")


class _BrokenGuardsWritesOnly(ReferenceHarness):
    """Checks the model when writing, not when querying."""

    def __init__(self, path, model_dir):
        self.path = path
        self.vectorizer = shared_vectorizer(model_dir, device="cpu")

    def _write(self, ids, vectors, metadatas):
        stored = self._load()["model"]["fingerprint"]
        if stored != self.vectorizer.fingerprint:
            raise ModelMismatchError(f"store {self.path.name!r}", stored, self.vectorizer.fingerprint)
        super()._write(ids, vectors, metadatas)


class _BrokenWritesAsItEncodes(ReferenceHarness):
    """Writes each item as soon as it is encoded: a bad item leaves the ones before it behind."""

    def add_images(self, ids, images, metadatas=None):
        for i, image in enumerate(images):
            try:
                vector = self.vectorizer.encode_images([image])
            except Exception as exc:  # noqa: BLE001 - re-addressed like a real adapter would
                raise exc.at(i) if hasattr(exc, "at") else exc
            self._write([ids[i]], vector, None)

    def add_texts(self, ids, texts, metadatas=None):
        for i, text in enumerate(texts):
            try:
                vector = self.vectorizer.encode_texts([text])
            except Exception as exc:  # noqa: BLE001
                raise exc.at(i) if hasattr(exc, "at") else exc
            self._write([ids[i]], vector, None)


class _BrokenDropsTheLastItem(ReferenceHarness):
    def _write(self, ids, vectors, metadatas):
        super()._write(ids[:-1], vectors[:-1], metadatas[:-1] if metadatas else None)


class _BrokenRanksByInsertionOrder(ReferenceHarness):
    def _nearest(self, query, k):
        return list(self._load()["rows"])[:k]


class _BrokenStringifiesMetadata(ReferenceHarness):
    def _write(self, ids, vectors, metadatas):
        strings = [{key: str(value) for key, value in m.items()} for m in metadatas] if metadatas else None
        super()._write(ids, vectors, strings)


class _BrokenAppendsOnReAdd(ReferenceHarness):
    """Makes its own ids when one exists already (random ids for every add)."""

    def _write(self, ids, vectors, metadatas):
        rows = self._load()["rows"]
        super()._write([f"{i}#{uuid.uuid4().hex[:6]}" if i in rows else i for i in ids], vectors, metadatas)


class _BrokenRandomContentIds(ReferenceHarness):
    @staticmethod
    def content_id(item):
        return uuid.uuid4().hex


class _BrokenStaleUpsert(ReferenceHarness):
    """Upsert keeps the stored vectors (Chroma's ``update(ids, uris=new)`` before issue 13)."""

    def upsert_images(self, ids, images):
        pass

    def upsert_texts(self, ids, texts):
        pass


class _BrokenDeleteNotSaved(ReferenceHarness):
    def delete(self, ids):
        pass


class _BrokenAsyncNeverAwaited(ReferenceHarness):
    """Creates the write coroutines and drops them (``AsyncQdrantClient`` before issue 13, defect 2)."""

    async def async_add_images(self, ids, images):
        self._dropped = asyncio.to_thread(self.add_images, ids, images)

    async def async_add_texts(self, ids, texts):
        self._dropped_texts = asyncio.to_thread(self.add_texts, ids, texts)

    def close(self):
        for name in ("_dropped", "_dropped_texts"):
            coroutine = self.__dict__.pop(name, None)
            if coroutine is not None:
                coroutine.close()  # what Python does when it is garbage-collected, without the warning


class _BrokenAsyncOnTheLoop(ReferenceHarness):
    """Encodes inside the coroutine: the event loop stalls for every forward pass."""

    async def async_add_images(self, ids, images):
        self.add_images(ids, images)

    async def async_add_texts(self, ids, texts):
        self.add_texts(ids, texts)

    async def async_query_text(self, text, k):
        return self.query_text(text, k)

    async def async_query_image(self, image, k):
        return self.query_image(image, k)


def _names(mixin: type) -> list[str]:
    return [f"{mixin.__name__}.{name}" for name in vars(mixin) if name.startswith("test_")]


BROKEN: list[tuple[type, list[str]]] = [
    (_BrokenForgetsWhenClosed, _names(c.ReopenTests)),
    (_BrokenPersistsRefusedChange, _names(c.ReopenTests)
     + ["ModelGuardTests.test_refused_model_change_leaves_the_store_as_it_was"]),
    (_BrokenNoGuard, ["ModelGuardTests.test_another_model_cannot_write", "ModelGuardTests.test_another_model_cannot_query"]),
    (_BrokenGuardsWritesOnly, ["ModelGuardTests.test_another_model_cannot_query"]),
    (_BrokenWritesAsItEncodes, _names(c.BadBatchTests)),
    (_BrokenDropsTheLastItem, _names(c.AddTests)),
    (_BrokenRanksByInsertionOrder, _names(c.RankingTests)),
    (_BrokenStringifiesMetadata, _names(c.MetadataTests)),
    (_BrokenAppendsOnReAdd, _names(c.ExplicitIdTests)),
    (_BrokenRandomContentIds, _names(c.ContentIdTests)),
    (_BrokenStaleUpsert, _names(c.UpsertTests)),
    (_BrokenDeleteNotSaved, _names(c.DeleteTests)),
    (_BrokenAsyncNeverAwaited, _names(c.AsyncTests)),
    (_BrokenAsyncOnTheLoop, _names(c.AsyncOffLoopTests)),
]


def test_every_mixin_has_a_broken_variant_that_fails_it():
    covered = {name.split(".")[0] for _, names in BROKEN for name in names}
    assert covered == {mixin.__name__ for mixin in c.CAPABILITIES}


def _run_contract_test(name: str, harness: c.StoreHarness, **fixtures: Any) -> None:
    """Call one mixin test the way pytest would, with ``harness`` as the store."""
    mixin_name, test_name = name.split(".")
    method = getattr(TestReferenceStore(), test_name)
    with pytest.MonkeyPatch.context() as monkeypatch:
        available = {"store": harness, "monkeypatch": monkeypatch, **fixtures}
        kwargs = {parameter: available[parameter] for parameter in inspect.signature(method).parameters}
        try:
            method(**kwargs)
        finally:
            harness.close()


@pytest.mark.parametrize(
    ("variant", "name"),
    [(variant, name) for variant, names in BROKEN for name in names],
    ids=lambda value: value.__name__.removeprefix("_Broken") if isinstance(value, type) else value.split(".")[1],
)
def test_a_broken_store_fails_the_contract(variant, name, bge_siglip_model_dir, bge_siglip_other_model_dir,
                                           tmp_path):
    harness = variant.create(tmp_path / "store.json", bge_siglip_model_dir)
    with warnings.catch_warnings(), pytest.raises((AssertionError, pytest.fail.Exception)):
        warnings.simplefilter("ignore", RuntimeWarning)  # "coroutine was never awaited": the defect itself
        _run_contract_test(name, harness, tmp_path=tmp_path, bge_siglip_other_model_dir=bge_siglip_other_model_dir)


def test_a_class_that_neither_runs_nor_explains_a_capability_fails():
    class Partial(c.ContractTests, c.AddTests):
        opt_outs = {"RankingTests": "   "}

    with pytest.raises(AssertionError, match="neither run nor explained"):
        Partial().test_every_capability_is_run_or_explained()

    class OptsOutOfWhatItRuns(c.ContractTests, *c.CAPABILITIES):
        opt_outs = {"AddTests": "reason"}

    with pytest.raises(AssertionError, match="opted out of mixins it runs"):
        OptsOutOfWhatItRuns().test_every_capability_is_run_or_explained()
