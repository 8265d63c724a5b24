"""The adapter contract: every promise a database integration makes, stated once, as capability mixins.

An adapter's test class picks the mixins that apply to its database (the shape of haystack's ``document_store``
test mixins and LangChain's ``VectorStoreIntegrationTests``) and overrides one fixture, ``harness``::

    from bge_siglip_vectorizer.testing import contract as c

    class TestMilvusContract(c.ContractTests, c.AddTests, c.RankingTests, c.BadBatchTests, c.MetadataTests,
                             c.ExplicitIdTests, c.UpsertTests, c.DeleteTests, c.ModelGuardTests, c.ReopenTests):
        opt_outs = {"ContentIdTests": "<why this adapter derives no ids>",
                    "AsyncTests": "<why>", "AsyncOffLoopTests": "<why>"}

        @pytest.fixture
        def harness(self, bge_siglip_model_dir, tmp_path):
            return MilvusHarness.create(bge_siglip_model_dir, tmp_path / "milvus.db")

Working examples: ``tests/test_contract_reference.py`` (a reference store in one JSON file, and a broken variant
per promise that must fail), ``integrations/chroma/tests/test_chroma_contract.py``,
``integrations/qdrant/tests/test_contract.py``.

Every mixin in :data:`CAPABILITIES` must be either inherited or named in ``opt_outs`` with the reason (checked by
``ContractTests.test_every_capability_is_run_or_explained``), so a skipped promise is always a documented one.
Each test's docstring is its troubleshooting note: what the promise is and where to look when it fails.

The harness API (what a new adapter, e.g. Milvus or LanceDB, implements): a :class:`StoreHarness` drives ONE
collection of the real database through the adapter. Ids are strings (map them to the database's id type, and keep
them in the payload if the database cannot store them). Required by every mixin:

* ``vectorizer`` — the core ``Vectorizer`` the store embeds with. After a reopen, the one the *store* rebuilt or
  was given (e.g. ``collection.configuration["embedding_function"].vectorizer``), never the test's own;
* ``add_images(ids, images, metadatas=None)`` / ``add_texts(ids, texts, metadatas=None)`` — add through the
  adapter's normal write path. Images are numpy arrays (HWC uint8, or malformed ones) or encoded file bytes; a
  database that takes only some kinds maps the others the way its users would (e.g. bytes written to files and
  added by URI). Bad items must raise the core's typed error;
* ``query_text(text, k)`` / ``query_image(image, k)`` — ids of the ``k`` nearest items, nearest first;
* ``count()`` — items stored, read from the database; ``close()`` — release clients (end of each test).

Needed only by the mixin named:

* :class:`MetadataTests`: ``get_metadata(ids)`` — the user's metadata/payload of each id, as stored;
* :class:`ContentIdTests`: ``add_images_by_content(images)`` / ``add_texts_by_content(texts)`` — add without ids
  (the adapter derives them from content); return the ids given;
* :class:`UpsertTests`: ``upsert_images(ids, images)`` / ``upsert_texts(ids, texts)`` — replace existing items;
* :class:`DeleteTests`: ``delete(ids)``;
* :class:`ModelGuardTests`: ``with_model(model_dir)`` — the same collection opened through the adapter with
  another model (may raise right there); ``change_model(model_dir)`` — the database's way of pointing an existing
  collection at another model (Chroma: ``modify(configuration=...)``); ``stored_config()`` — what the database
  persisted about the model, read through a NEW client (JSON-able); ``reopen()`` — a new client in this process;
* :class:`ReopenTests`: ``reopen_spec()`` — a JSON-able dict, and the classmethod ``reopen_from(spec)`` that opens
  the same storage in ANOTHER Python process (the harness class is imported there from its file), the way a user
  would in a later session: without passing the embedding function where the database stores one;
* :class:`AsyncTests` / :class:`AsyncOffLoopTests`: ``async_add_images`` / ``async_add_texts`` /
  ``async_query_text`` / ``async_query_image`` — coroutines driving the database's async client.

The fixtures ``bge_siglip_model_dir``, ``bge_siglip_other_model_dir`` (another fingerprint, same vector size) and
``bge_siglip_vectorizer`` come from the pytest plugin :mod:`bge_siglip_vectorizer.testing.fixtures`, registered
automatically when this package is installed.

Tiny random models have no semantics, so "the right item first" is checked with exact duplicates (an item is its
own nearest neighbour) and, across modalities, against the ranking computed directly from the core ``Vectorizer``
(which proves the adapter routed text to the text tower and images to the vision tower).
"""

from __future__ import annotations

import abc
import asyncio
import importlib.util
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pytest

from ..errors import InvalidImageError, InvalidInputError, InvalidTextError, ModelMismatchError
from ..vectorizer import Vectorizer
from .images import encode_image, sample_image

__all__ = [
    "CONTRACT_TEXTS", "LEXICAL_TEXTS", "LEXICAL_QUERY", "LEXICAL_MATCH", "CAPABILITIES", "StoreHarness", "ContractTests", "AddTests",
    "RankingTests", "BadBatchTests", "MetadataTests", "ExplicitIdTests", "ContentIdTests", "UpsertTests",
    "DeleteTests", "ModelGuardTests", "ReopenTests", "AsyncTests", "AsyncOffLoopTests", "contract_images",
    "contract_metadata",
]

CONTRACT_TEXTS = [
    "a photo of a dog on the beach",
    "ein Hund am Strand",
    "un chat noir sur un canapé",
    "海滩上的一只狗",
    "кошка спит на окне",
]
#: Texts for sparse (lexical) ranking with the tiny models: only ``LEXICAL_TEXTS[LEXICAL_MATCH]`` shares tokens with
#: ``LEXICAL_QUERY`` (a product code), and the tiny model's dense vector does not rank that text first, so a store
#: that finds it first did so through the sparse vector (tests assert both preconditions with the core).
LEXICAL_TEXTS = [
    "a photo of a dog on the beach",
    "ein Hund am Strand",
    "un chat noir sur un canapé",
    "order 7381 red circle",
    "кошка спит на окне",
    "the quick brown fox jumps over the lazy dog",
    "ein blaues Quadrat oben links",
    "un triangle vert en bas à droite",
]
LEXICAL_QUERY = "7381"
LEXICAL_MATCH = 3
#: Seconds the reopening process may take (interpreter, torch and the database client start there).
REOPEN_TIMEOUT_S = 300
_AFTER_REOPEN = "un perro corriendo en el parque"
_SCORE_TIES = 1e-5  # scores closer than this may rank either way (float32 distances in the database)


class StoreHarness(abc.ABC):
    """Drives one collection of the database under test through the adapter (see the module docstring)."""

    #: the core Vectorizer the store embeds with (the suite compares rankings against it)
    vectorizer: Vectorizer

    @abc.abstractmethod
    def add_images(self, ids: Sequence[str], images: Sequence[Any],
                   metadatas: Sequence[dict[str, Any]] | None = None) -> None:
        """Add raw images through the adapter (numpy arrays or encoded file bytes)."""

    @abc.abstractmethod
    def add_texts(self, ids: Sequence[str], texts: Sequence[str],
                  metadatas: Sequence[dict[str, Any]] | None = None) -> None:
        """Add texts through the adapter."""

    @abc.abstractmethod
    def query_text(self, text: str, k: int) -> list[str]:
        """Ids of the ``k`` nearest items to ``text``, nearest first."""

    @abc.abstractmethod
    def query_image(self, image: Any, k: int) -> list[str]:
        """Ids of the ``k`` nearest items to ``image``, nearest first."""

    @abc.abstractmethod
    def count(self) -> int:
        """Number of items stored."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients; called at the end of each test."""

    # Optional capabilities: each mixin that needs one says so; a harness implements those of the mixins it runs.
    def _missing(self, what: str, mixin: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} runs {mixin} but does not implement {what}")

    def get_metadata(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        raise self._missing("get_metadata", "MetadataTests")

    def add_images_by_content(self, images: Sequence[Any]) -> list[str]:
        raise self._missing("add_images_by_content", "ContentIdTests")

    def add_texts_by_content(self, texts: Sequence[str]) -> list[str]:
        raise self._missing("add_texts_by_content", "ContentIdTests")

    def upsert_images(self, ids: Sequence[str], images: Sequence[Any]) -> None:
        raise self._missing("upsert_images", "UpsertTests")

    def upsert_texts(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        raise self._missing("upsert_texts", "UpsertTests")

    def delete(self, ids: Sequence[str]) -> None:
        raise self._missing("delete", "DeleteTests")

    def with_model(self, model_dir: Path) -> "StoreHarness":
        raise self._missing("with_model", "ModelGuardTests")

    def change_model(self, model_dir: Path) -> None:
        raise self._missing("change_model", "ModelGuardTests")

    def stored_config(self) -> Any:
        raise self._missing("stored_config", "ModelGuardTests")

    def reopen(self) -> "StoreHarness":
        raise self._missing("reopen", "ModelGuardTests")

    def reopen_spec(self) -> dict[str, Any]:
        raise self._missing("reopen_spec", "ReopenTests")

    @classmethod
    def reopen_from(cls, spec: dict[str, Any]) -> "StoreHarness":
        raise NotImplementedError(f"{cls.__name__} runs ReopenTests but does not implement reopen_from")

    async def async_add_images(self, ids: Sequence[str], images: Sequence[Any]) -> None:
        raise self._missing("async_add_images", "AsyncTests")

    async def async_add_texts(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        raise self._missing("async_add_texts", "AsyncTests")

    async def async_query_text(self, text: str, k: int) -> list[str]:
        raise self._missing("async_query_text", "AsyncTests")

    async def async_query_image(self, image: Any, k: int) -> list[str]:
        raise self._missing("async_query_image", "AsyncTests")


# ------------------------------------------------------------------------------------------------ test data
def contract_images(n: int = 6) -> list[np.ndarray]:
    """``n`` distinct RGB uint8 arrays of different sizes and aspect ratios."""
    sizes = [(64, 64), (96, 48), (40, 120), (128, 80), (50, 50), (200, 40), (72, 72), (30, 90)]
    return [np.asarray(sample_image(*sizes[i % len(sizes)], "RGB", seed=100 + i)) for i in range(n)]


def contract_metadata(n: int) -> list[dict[str, Any]]:
    """``n`` metadata dicts with the value types every database takes: str (non-ASCII too), int, float, bool."""
    return [{"name": f"ünïcødé ✓ {i}", "n": i, "score": i + 0.5, "flag": i % 2 == 0} for i in range(n)]


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def _pil(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(array)


def _assert_ranking(got: Sequence[str], query: np.ndarray, candidates: np.ndarray, ids: Sequence[str],
                    what: str) -> None:
    """``got`` is the core's ranking of ``ids`` (rows of ``candidates``) for ``query``, up to float ties."""
    scores = dict(zip(ids, (candidates @ query).tolist()))
    expected = [ids[i] for i in np.argsort(-(candidates @ query), kind="stable")][: len(got)]
    assert len(got) == len(expected), f"{what}: {len(got)} hits, expected {len(expected)}"
    for position, (mine, core) in enumerate(zip(got, expected)):
        assert mine in scores, f"{what}: unknown id {mine!r} at rank {position}"
        assert mine == core or abs(scores[mine] - scores[core]) < _SCORE_TIES, (
            f"{what}: rank {position} is {mine!r}, the core ranks {core!r} there ({list(got)} vs {expected})"
        )


# ------------------------------------------------------------------------------------------------ the base
class ContractTests:
    """Base of every adapter's contract test class: the ``harness`` fixture to override, and the opt-out check."""

    #: mixin name -> why this adapter cannot run it (shown to reviewers; must be non-empty)
    opt_outs: dict[str, str] = {}

    @pytest.fixture
    def harness(self) -> StoreHarness:
        raise NotImplementedError("override the `harness` fixture in the adapter's test class")

    @pytest.fixture
    def store(self, harness: StoreHarness) -> Iterator[StoreHarness]:
        yield harness
        harness.close()

    def test_every_capability_is_run_or_explained(self) -> None:
        """Every capability mixin is either run by this class or named in ``opt_outs`` with a reason.

        If this fails: add the mixin to the test class's bases, or add ``"<Mixin>": "<why it cannot apply>"`` to
        ``opt_outs`` (and drop opt-outs for mixins the class does run)."""
        names = {mixin.__name__: mixin for mixin in CAPABILITIES}
        unknown = sorted(set(self.opt_outs) - set(names))
        assert not unknown, f"opt_outs names no capability: {unknown}"
        run_anyway = sorted(name for name in self.opt_outs if isinstance(self, names[name]))
        assert not run_anyway, f"opted out of mixins it runs: {run_anyway}"
        unexplained = [name for name, mixin in names.items()
                       if not isinstance(self, mixin) and not self.opt_outs.get(name, "").strip()]
        assert not unexplained, f"neither run nor explained: {unexplained}"


# ------------------------------------------------------------------------------------------------ adding
class AddTests:
    """Images, texts, and both in one collection, through the adapter's normal write path."""

    def test_add_images_then_count(self, store: StoreHarness) -> None:
        """Four images added -> the database counts four. If this fails: the write path drops or duplicates
        items, or ``count()`` reads something else than the collection."""
        store.add_images(_ids("img", 4), contract_images(4))
        assert store.count() == 4

    def test_add_texts_then_count(self, store: StoreHarness) -> None:
        """Texts in five scripts added -> five stored. If this fails: texts are not routed to the text tower, or
        a script the tokenizer handles is refused."""
        store.add_texts(_ids("txt", len(CONTRACT_TEXTS)), CONTRACT_TEXTS)
        assert store.count() == len(CONTRACT_TEXTS)

    def test_images_and_texts_share_one_store(self, store: StoreHarness) -> None:
        """Images and texts live in one collection and one space: a text query ranks both kinds exactly as the
        core does. If this fails: the adapter uses separate collections or vector names per modality, or embeds
        one modality with the wrong tower."""
        images = contract_images(3)
        store.add_images(_ids("img", 3), images)
        store.add_texts(_ids("txt", 3), CONTRACT_TEXTS[:3])
        assert store.count() == 6
        assert store.query_image(images[1], k=6)[0] == "img-1"
        assert store.query_text(CONTRACT_TEXTS[2], k=6)[0] == "txt-2"
        vectors = np.concatenate([store.vectorizer.encode_images(images), store.vectorizer.encode_texts(CONTRACT_TEXTS[:3])])
        ids = _ids("img", 3) + _ids("txt", 3)
        query = store.vectorizer.encode_texts([CONTRACT_TEXTS[0]])[0]
        _assert_ranking(store.query_text(CONTRACT_TEXTS[0], k=6), query, vectors, ids, "text over images+texts")


# ------------------------------------------------------------------------------------------------ ranking
class RankingTests:
    """Queries rank like the core: text->image, image->image, image->text, and an item finds itself first."""

    def test_image_query_finds_the_same_image_first(self, store: StoreHarness) -> None:
        """Each stored image is its own nearest neighbour. If this fails: the query path decodes or preprocesses
        differently from the write path (another patch budget, another resize), or the distance is not cosine."""
        images = contract_images(6)
        ids = _ids("img", 6)
        store.add_images(ids, images)
        for image_id, image in zip(ids, images):
            assert store.query_image(image, k=3)[0] == image_id

    def test_image_query_accepts_encoded_bytes(self, store: StoreHarness) -> None:
        """A query given as PNG file bytes finds the image stored from the decoded array. If this fails: encoded
        inputs take another decode path than arrays."""
        images = contract_images(4)
        ids = _ids("img", 4)
        store.add_images(ids, images)
        for image_id, image in zip(ids, images):
            assert store.query_image(encode_image(_pil(image), "PNG"), k=2)[0] == image_id

    def test_text_query_finds_the_same_text_first(self, store: StoreHarness) -> None:
        """Each stored text is its own nearest neighbour. If this fails: queries use another text path (a query
        instruction, other truncation) than documents."""
        ids = _ids("txt", len(CONTRACT_TEXTS))
        store.add_texts(ids, CONTRACT_TEXTS)
        for text_id, text in zip(ids, CONTRACT_TEXTS):
            assert store.query_text(text, k=3)[0] == text_id

    def test_text_to_image_ranking_matches_the_core(self, store: StoreHarness) -> None:
        """Text queries rank the images exactly as the core's vectors do (the whole ranking). If this fails: the
        text went to the vision tower (or the other way round), or the store's distance is not cosine/IP."""
        images = contract_images(6)
        ids = _ids("img", 6)
        store.add_images(ids, images)
        image_vectors = store.vectorizer.encode_images(images)
        for text in CONTRACT_TEXTS:
            query = store.vectorizer.encode_texts([text])[0]
            _assert_ranking(store.query_text(text, k=6), query, image_vectors, ids, f"text {text!r} -> images")

    def test_image_to_image_ranking_matches_the_core(self, store: StoreHarness) -> None:
        """Image queries rank the other images as the core does. If this fails: stored vectors are not the core's
        (another preprocessing, a lossy copy, dimensions reordered)."""
        images = contract_images(6)
        ids = _ids("img", 5)
        store.add_images(ids, images[:5])
        vectors = store.vectorizer.encode_images(images[:5])
        query = store.vectorizer.encode_images([images[5]])[0]
        _assert_ranking(store.query_image(images[5], k=5), query, vectors, ids, "image -> images")

    def test_image_to_text_ranking_matches_the_core(self, store: StoreHarness) -> None:
        """Image queries rank texts as the core does (cross-modal, the other direction)."""
        ids = _ids("txt", len(CONTRACT_TEXTS))
        store.add_texts(ids, CONTRACT_TEXTS)
        text_vectors = store.vectorizer.encode_texts(CONTRACT_TEXTS)
        for image in contract_images(3):
            query = store.vectorizer.encode_images([image])[0]
            _assert_ranking(store.query_image(image, k=len(ids)), query, text_vectors, ids, "image -> texts")


# ------------------------------------------------------------------------------------------------ bad input
class BadBatchTests:
    """A bad item anywhere in a batch raises the core's typed error naming it, and nothing of the batch is written."""

    def test_corrupt_image_in_a_batch_writes_nothing(self, store: StoreHarness) -> None:
        """If this fails with a count above 1: the adapter writes item by item (or chunk by chunk) while
        encoding; encode the whole call first. If the index is wrong: map the core's index back to the caller's
        list (``error.at(index)``)."""
        store.add_images(["seed"], contract_images(1))
        good = contract_images(3)
        with pytest.raises(InvalidImageError) as info:
            store.add_images(["a", "b", "c"], [good[1], b"\x89PNG\r\n\x1a\n this is not a png", good[2]])
        assert info.value.index == 1
        assert "#1" in str(info.value)
        assert store.count() == 1

    def test_truncated_image_writes_nothing(self, store: StoreHarness) -> None:
        """Half a PNG is refused, not embedded as a partial image (PIL's LOAD_TRUNCATED_IMAGES must stay off)."""
        png = encode_image(_pil(contract_images(1)[0]), "PNG")
        with pytest.raises(InvalidImageError) as info:
            store.add_images(["a", "b"], [png, png[: len(png) // 2]])
        assert info.value.index == 1
        assert store.count() == 0

    def test_empty_text_writes_nothing(self, store: StoreHarness) -> None:
        """A blank text is refused with its index (embedding it would store a meaningless vector)."""
        with pytest.raises(InvalidTextError) as info:
            store.add_texts(["a", "b", "c"], ["fine", "also fine", "   "])
        assert info.value.index == 2
        assert store.count() == 0

    def test_malformed_image_array_is_a_typed_error(self, store: StoreHarness) -> None:
        """A float64 7-channel array is the core's InvalidInputError, not a numpy/PIL exception."""
        with pytest.raises(InvalidInputError) as info:
            store.add_images(["a", "b"], [contract_images(1)[0], np.zeros((8, 8, 7), dtype=np.float64)])
        assert info.value.index == 1
        assert store.count() == 0


# ------------------------------------------------------------------------------------------------ metadata
class MetadataTests:
    """The user's metadata/payload is stored with each item and comes back unchanged."""

    def test_metadata_round_trips(self, store: StoreHarness) -> None:
        """Every key the user gave comes back with its value and type (the adapter may add keys of its own, e.g.
        provenance). If this fails: the adapter replaces the user's payload instead of merging it, or converts
        types (bool -> int, float -> str)."""
        metadatas = contract_metadata(4)
        store.add_images(_ids("img", 2), contract_images(2), metadatas=metadatas[:2])
        store.add_texts(_ids("txt", 2), CONTRACT_TEXTS[:2], metadatas=metadatas[2:])
        stored = store.get_metadata(_ids("img", 2) + _ids("txt", 2))
        for given, got in zip(metadatas, stored):
            assert got is not None
            assert {key: got.get(key) for key in given} == given
            assert all(type(got[key]) is type(value) for key, value in given.items()), (given, got)


# ------------------------------------------------------------------------------------------------ idempotency
class ExplicitIdTests:
    """Adding the same items under the same ids again leaves the collection as it was (count stays N)."""

    def test_re_adding_the_same_ids_keeps_the_count(self, store: StoreHarness) -> None:
        """Re-ingest with the caller's ids must not duplicate. If this fails: the adapter makes its own ids
        (random UUIDs) instead of using the caller's, or the database appends."""
        images = contract_images(3)
        store.add_images(_ids("img", 3), images)
        store.add_texts(_ids("txt", 2), CONTRACT_TEXTS[:2])
        store.add_images(_ids("img", 3), images)
        store.add_texts(_ids("txt", 2), CONTRACT_TEXTS[:2])
        assert store.count() == 5
        assert store.query_image(images[2], k=5)[0] == "img-2"
        assert store.query_text(CONTRACT_TEXTS[1], k=5).count("txt-1") == 1


class ContentIdTests:
    """Items added without ids get ids derived from their content: re-ingest overwrites instead of duplicating."""

    def test_re_adding_the_same_content_keeps_the_count(self, store: StoreHarness) -> None:
        """Same content -> same ids, every time, in any order; other content -> other ids. If this fails: ids are
        random, or derived from something else than the content (position, time, object identity)."""
        images = contract_images(3)
        first = store.add_images_by_content(images)
        texts = store.add_texts_by_content(CONTRACT_TEXTS[:2])
        again = store.add_images_by_content([image.copy() for image in images[::-1]])
        assert store.add_texts_by_content(CONTRACT_TEXTS[:2]) == texts
        assert again == first[::-1]
        assert len(set(first + texts)) == 5
        assert store.count() == 5
        assert store.query_image(images[1], k=1) == [first[1]]


class UpsertTests:
    """Replacing an item re-embeds it: the store then ranks as if it had been added with the new content."""

    def test_upsert_re_embeds(self, store: StoreHarness) -> None:
        """After ``img-0`` and ``txt-0`` are replaced, queries rank them by the NEW content's vectors. The new
        content is the item farthest from the old one and ``img-1`` / ``txt-1`` the nearest, so a query by the old
        content must now find ``*-1`` first. If this fails: the adapter keeps the stale vector (e.g. updates only
        the stored URI or document), or adds a second item instead of replacing."""
        vectorizer = store.vectorizer
        images = contract_images(8)
        old_image, near_image, far_image = _near_and_far(vectorizer.encode_images, images[0], images[1:])
        old_text, near_text, far_text = _near_and_far(vectorizer.encode_texts, CONTRACT_TEXTS[0], CONTRACT_TEXTS[1:])
        store.add_images(["img-0", "img-1"], [old_image, near_image])
        store.add_texts(["txt-0", "txt-1"], [old_text, near_text])
        store.upsert_images(["img-0"], [far_image])
        store.upsert_texts(["txt-0"], [far_text])
        assert store.count() == 4
        assert store.query_image(far_image, k=1) == ["img-0"]
        assert store.query_text(far_text, k=1) == ["txt-0"]
        ids = ["img-0", "img-1", "txt-0", "txt-1"]
        vectors = np.concatenate([vectorizer.encode_images([far_image, near_image]),
                                  vectorizer.encode_texts([far_text, near_text])])
        _assert_ranking(store.query_image(old_image, k=4), vectorizer.encode_images([old_image])[0], vectors, ids,
                        "old image -> after upsert")
        _assert_ranking(store.query_text(old_text, k=4), vectorizer.encode_texts([old_text])[0], vectors, ids,
                        "old text -> after upsert")


def _near_and_far(encode: Any, old: Any, pool: Sequence[Any]) -> tuple[Any, Any, Any]:
    """``(old, nearest, farthest)``: the items of ``pool`` the core ranks first and last for a query by ``old``."""
    scores = encode(list(pool)) @ encode([old])[0]
    return old, pool[int(np.argmax(scores))], pool[int(np.argmin(scores))]


class DeleteTests:
    """Deleted items are gone from counts and results."""

    def test_delete_removes_items(self, store: StoreHarness) -> None:
        """If this fails: the adapter maps ids differently on delete than on add (e.g. hashes them only on add)."""
        images = contract_images(3)
        store.add_images(_ids("img", 3), images)
        store.add_texts(_ids("txt", 2), CONTRACT_TEXTS[:2])
        store.delete(["img-1", "txt-0"])
        assert store.count() == 3
        assert "img-1" not in store.query_image(images[1], k=3)
        assert "txt-0" not in store.query_text(CONTRACT_TEXTS[0], k=3)


# ------------------------------------------------------------------------------------------------ model guard
class ModelGuardTests:
    """A collection holds one model's vectors: writing, querying or reconfiguring it with another model is refused
    (``ModelMismatchError``), and a refused change leaves what the database stored exactly as it was."""

    def test_another_model_cannot_write(self, store: StoreHarness, bge_siglip_other_model_dir: Path) -> None:
        """Vectors of two models in one index rank as noise, and the sizes match, so the database cannot tell.
        If this fails: the adapter does not record the model's fingerprint with the collection, or does not
        compare it before writing."""
        store.add_texts(["seed"], CONTRACT_TEXTS[:1])
        with pytest.raises(ModelMismatchError):
            other = store.with_model(bge_siglip_other_model_dir)  # refusing here, at open, is fine too
            other.add_texts(["other"], CONTRACT_TEXTS[1:2])
        assert store.count() == 1

    def test_another_model_cannot_query(self, store: StoreHarness, bge_siglip_other_model_dir: Path) -> None:
        """A query vector from another model returns confident nonsense. If this fails: the fingerprint is checked
        on writes only."""
        store.add_images(["seed"], contract_images(1))
        with pytest.raises(ModelMismatchError):
            other = store.with_model(bge_siglip_other_model_dir)
            other.query_text(CONTRACT_TEXTS[0], k=1)

    def test_refused_model_change_leaves_the_store_as_it_was(self, store: StoreHarness,
                                                            bge_siglip_other_model_dir: Path) -> None:
        """Refusing must happen BEFORE the database persists anything. If this fails with a changed
        ``stored_config()``: the check runs after the write (Chroma 1.x ``Collection.modify`` persists the new
        configuration first and validates it afterwards); a new client would then rebuild the other model."""
        store.add_images(["seed"], contract_images(1))
        before = store.stored_config()
        with pytest.raises(ModelMismatchError):
            store.change_model(bge_siglip_other_model_dir)
        assert store.stored_config() == before
        fresh = store.reopen()
        try:
            assert fresh.vectorizer.fingerprint == store.vectorizer.fingerprint
            fresh.add_texts(["after"], CONTRACT_TEXTS[:1])
            assert fresh.count() == 2
        finally:
            fresh.close()


# ------------------------------------------------------------------------------------------------ persistence
class ReopenTests:
    """A later process opens the storage the way a user would and gets the same answers, with the same model.

    One test, one new Python process per harness class (interpreter start-up dominates). When the class also runs
    :class:`ModelGuardTests`, a refused model change is attempted first, so the new process proves it did not
    persist; with :class:`MetadataTests`, the metadata is read back there too.
    """

    def test_reopen_in_a_new_process_answers_the_same(self, store: StoreHarness, tmp_path: Path,
                                                       bge_siglip_other_model_dir: Path) -> None:
        """If the count or answers differ: the data was not persisted, or the reopened store rebuilt another
        model (compare ``fingerprint``). If the new process fails to start: ``reopen_from`` must build everything
        from the JSON spec alone (no objects of this process), and the stored model reference must not depend
        on the working directory (it runs in ``/``)."""
        images = contract_images(4)
        metadata = isinstance(self, MetadataTests)
        metadatas = contract_metadata(6) if metadata else None
        store.add_images(_ids("img", 4), images, metadatas=metadatas[:4] if metadatas else None)
        store.add_texts(_ids("txt", 2), CONTRACT_TEXTS[:2], metadatas=metadatas[4:] if metadatas else None)
        if isinstance(self, ModelGuardTests):
            with pytest.raises(ModelMismatchError):
                store.change_model(bge_siglip_other_model_dir)
        ours = {
            "fingerprint": store.vectorizer.fingerprint,
            "count": store.count(),
            "text": [store.query_text(text, k=6) for text in CONTRACT_TEXTS[:3]],
            "image": [store.query_image(image, k=6) for image in images[:3]],
        }
        arrays = []
        for i, image in enumerate(images[:3]):
            np.save(tmp_path / f"reopen-query-{i}.npy", image)
            arrays.append(str(tmp_path / f"reopen-query-{i}.npy"))
        spec = store.reopen_spec()
        store.close()  # some databases lock their storage to one client (Qdrant local mode)
        script = {"texts": CONTRACT_TEXTS[:3], "arrays": arrays, "k": 6,
                  "metadata_ids": _ids("img", 4) + _ids("txt", 2) if metadata else None}
        theirs = _reopen_in_new_process(type(store), spec, script, tmp_path)
        assert theirs["fingerprint"] == ours["fingerprint"], "the reopened store embeds with another model"
        assert theirs["count"] == ours["count"] == 6
        assert theirs["text"] == ours["text"]
        assert theirs["image"] == ours["image"]
        assert [ids[0] for ids in theirs["text"][:2]] == _ids("txt", 2)
        assert [ids[0] for ids in theirs["image"]] == _ids("img", 3)
        if metadatas:
            for given, got in zip(metadatas, theirs["metadata"]):
                assert {key: (got or {}).get(key) for key in given} == given
        # The reopened store writes too, with the model it rebuilt.
        assert theirs["count_after_add"] == 7
        assert theirs["after_add_top"] == ["after-reopen"]


def _reopen_in_new_process(harness_cls: type, spec: dict[str, Any], script: dict[str, Any],
                           work: Path) -> dict[str, Any]:
    request = {"file": inspect.getfile(harness_cls), "qualname": harness_cls.__qualname__, "spec": spec,
               "script": script}
    path = work / "reopen-request.json"
    path.write_text(json.dumps(request))
    done = subprocess.run(
        [sys.executable, "-c", "from bge_siglip_vectorizer.testing.contract import _reopen_child; _reopen_child()",
         str(path)],
        cwd="/", capture_output=True, text=True, timeout=REOPEN_TIMEOUT_S,
    )
    assert done.returncode == 0, f"the reopening process failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _reopen_child() -> None:
    """Entry point of the reopening process: import the harness class from its file, reopen, answer in JSON."""
    request = json.loads(Path(sys.argv[1]).read_text())
    module_spec = importlib.util.spec_from_file_location("_bge_siglip_contract_harness", request["file"])
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    harness_cls: Any = module
    for part in request["qualname"].split("."):
        harness_cls = getattr(harness_cls, part)
    script = request["script"]
    harness = harness_cls.reopen_from(request["spec"])
    try:
        k = script["k"]
        answers: dict[str, Any] = {
            "fingerprint": harness.vectorizer.fingerprint,
            "count": harness.count(),
            "text": [harness.query_text(text, k) for text in script["texts"]],
            "image": [harness.query_image(np.load(p), k) for p in script["arrays"]],
        }
        if script["metadata_ids"]:
            answers["metadata"] = harness.get_metadata(script["metadata_ids"])
        harness.add_texts(["after-reopen"], [_AFTER_REOPEN])
        answers["count_after_add"] = harness.count()
        answers["after_add_top"] = harness.query_text(_AFTER_REOPEN, 1)
    finally:
        harness.close()
    print(json.dumps(answers))


# ------------------------------------------------------------------------------------------------ async
class AsyncTests:
    """The database's async client works through the adapter: every write is awaited and lands, answers match the
    sync path. (Plain test functions running ``asyncio.run``: no pytest plugin needed.)"""

    def test_async_add_and_query(self, store: StoreHarness) -> None:
        """If the count is 0: the adapter called the async client's methods without awaiting them (a coroutine
        was created and dropped; Python only warns). If rankings differ: the async path embeds differently."""
        images = contract_images(3)

        async def scenario() -> tuple[list[str], list[str]]:
            await store.async_add_images(_ids("img", 3), images)
            await store.async_add_texts(_ids("txt", 2), CONTRACT_TEXTS[:2])
            return await store.async_query_text(CONTRACT_TEXTS[1], 5), await store.async_query_image(images[2], 5)

        by_text, by_image = asyncio.run(scenario())
        assert store.count() == 5
        assert by_text[0] == "txt-1" and by_image[0] == "img-2"
        assert by_text == store.query_text(CONTRACT_TEXTS[1], 5)
        assert by_image == store.query_image(images[2], 5)


class AsyncOffLoopTests:
    """Encoding in the async API runs off the event loop (in a worker thread): a forward pass must not stall every
    other coroutine of the application."""

    def test_async_encoding_runs_off_the_event_loop(self, store: StoreHarness,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """Each call of the core's ``encode_*`` records whether an event loop runs in its thread (the vectors stay
        the real ones). If this fails: the async method encodes inline; use ``await asyncio.to_thread(...)``."""
        threads_with_loop: list[bool] = []
        vectorizer = store.vectorizer
        for name in ("encode_images", "encode_texts", "encode_mixed", "encode_texts_all"):
            original = getattr(vectorizer, name)
            monkeypatch.setattr(vectorizer, name, _recording(original, threads_with_loop))

        async def scenario() -> None:
            await store.async_add_images(["img-0"], contract_images(1))
            await store.async_add_texts(["txt-0"], CONTRACT_TEXTS[:1])
            await store.async_query_text(CONTRACT_TEXTS[0], 2)
            await store.async_query_image(contract_images(1)[0], 2)

        asyncio.run(scenario())
        assert threads_with_loop, "the async path never called the core's encode_*"
        assert not any(threads_with_loop), f"encoded on the event loop in {threads_with_loop.count(True)} call(s)"


def _recording(encode: Any, log: list[bool]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
            log.append(True)  # called from a coroutine: the loop waits for this forward pass
        except RuntimeError:
            log.append(False)  # a worker thread
        return encode(*args, **kwargs)

    return wrapper


#: Every capability mixin; an adapter's class runs each one or explains in ``opt_outs`` why not.
CAPABILITIES: tuple[type, ...] = (
    AddTests, RankingTests, BadBatchTests, MetadataTests, ExplicitIdTests, ContentIdTests, UpsertTests,
    DeleteTests, ModelGuardTests, ReopenTests, AsyncTests, AsyncOffLoopTests,
)
