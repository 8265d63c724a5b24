"""The adapter contract suite: what every database integration must do, tested the same way for each.

An adapter's tests subclass :class:`AdapterContractTests` and override one fixture, ``harness``, returning a
:class:`StoreHarness` — a thin driver that adds and queries through the adapter against the real database::

    class TestChromaContract(AdapterContractTests):
        @pytest.fixture
        def harness(self, bge_siglip_model_dir, tmp_path):
            return ChromaHarness(bge_siglip_model_dir, tmp_path)

The fixtures ``bge_siglip_model_dir`` (a tiny model, built once per session) and ``bge_siglip_vectorizer`` come from
the pytest plugin :mod:`bge_siglip_vectorizer.testing.fixtures`, registered automatically when this package is
installed.

Tiny random models have no semantics, so "the right item first" is checked with exact duplicates (an item is its
own nearest neighbour) and, across modalities, against the ranking computed directly from the core ``Vectorizer``
(which proves the adapter routed text to the text tower and images to the vision tower).
"""

from __future__ import annotations

import abc
from typing import Any, Sequence

import numpy as np
import pytest

from ..errors import InvalidImageError, InvalidInputError, InvalidTextError
from ..vectorizer import Vectorizer
from .images import encode_image, sample_image

CONTRACT_TEXTS = [
    "a photo of a dog on the beach",
    "ein Hund am Strand",
    "un chat noir sur un canapé",
    "海滩上的一只狗",
    "кошка спит на окне",
]


class StoreHarness(abc.ABC):
    """Drives one collection of the database under test through the adapter. Ids are strings."""

    #: the core Vectorizer the adapter uses (the suite compares rankings against it)
    vectorizer: Vectorizer

    @abc.abstractmethod
    def add_images(self, ids: Sequence[str], images: Sequence[Any]) -> None:
        """Add raw images through the adapter: numpy arrays (HWC uint8, or malformed ones) or encoded file bytes.

        A database that takes only some kinds maps the others the way its users would (e.g. writes the bytes to
        files and adds them by URI); the adapter must still raise the core's typed error for bad items.
        """

    @abc.abstractmethod
    def add_texts(self, ids: Sequence[str], texts: Sequence[str]) -> None:
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

    @abc.abstractmethod
    def reopen(self) -> "StoreHarness":
        """A new client on the same storage (not passing the embedding function again where the database allows)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients; called at the end of each test."""


def contract_images(n: int = 6) -> list[np.ndarray]:
    """``n`` distinct RGB uint8 arrays of different sizes and aspect ratios."""
    sizes = [(64, 64), (96, 48), (40, 120), (128, 80), (50, 50), (200, 40), (72, 72), (30, 90)]
    return [np.asarray(sample_image(*sizes[i % len(sizes)], "RGB", seed=100 + i)) for i in range(n)]


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


def _core_ranking(query: np.ndarray, candidates: np.ndarray, ids: list[str]) -> list[str]:
    scores = candidates @ query
    return [ids[i] for i in np.argsort(-scores, kind="stable")]


class AdapterContractTests:
    """Subclass and override ``harness``. Every test uses only the harness API."""

    @pytest.fixture
    def harness(self) -> StoreHarness:
        raise NotImplementedError("override the `harness` fixture in the adapter's test class")

    @pytest.fixture
    def store(self, harness: StoreHarness):
        yield harness
        harness.close()

    # -------------------------------------------------------------------------------------------- adding
    def test_add_images_then_count(self, store: StoreHarness) -> None:
        images = contract_images(4)
        store.add_images(_ids("img", 4), images)
        assert store.count() == 4

    def test_add_texts_then_count(self, store: StoreHarness) -> None:
        store.add_texts(_ids("txt", len(CONTRACT_TEXTS)), CONTRACT_TEXTS)
        assert store.count() == len(CONTRACT_TEXTS)

    # -------------------------------------------------------------------------------------------- querying
    def test_image_query_finds_the_same_image_first(self, store: StoreHarness) -> None:
        images = contract_images(6)
        ids = _ids("img", 6)
        store.add_images(ids, images)
        for image_id, image in zip(ids, images):
            assert store.query_image(image, k=3)[0] == image_id

    def test_image_query_accepts_encoded_bytes(self, store: StoreHarness) -> None:
        images = contract_images(4)
        ids = _ids("img", 4)
        store.add_images(ids, images)
        for image_id, image in zip(ids, images):
            assert store.query_image(encode_image(_pil(image), "PNG"), k=2)[0] == image_id

    def test_text_query_finds_the_same_text_first(self, store: StoreHarness) -> None:
        ids = _ids("txt", len(CONTRACT_TEXTS))
        store.add_texts(ids, CONTRACT_TEXTS)
        for text_id, text in zip(ids, CONTRACT_TEXTS):
            assert store.query_text(text, k=3)[0] == text_id

    def test_text_to_image_ranking_matches_the_core(self, store: StoreHarness) -> None:
        images = contract_images(6)
        ids = _ids("img", 6)
        store.add_images(ids, images)
        image_vectors = store.vectorizer.encode_images(images)
        for text in CONTRACT_TEXTS:
            expected = _core_ranking(store.vectorizer.encode_texts([text])[0], image_vectors, ids)
            assert store.query_text(text, k=1) == expected[:1], text

    def test_image_to_text_ranking_matches_the_core(self, store: StoreHarness) -> None:
        ids = _ids("txt", len(CONTRACT_TEXTS))
        store.add_texts(ids, CONTRACT_TEXTS)
        text_vectors = store.vectorizer.encode_texts(CONTRACT_TEXTS)
        for image in contract_images(3):
            expected = _core_ranking(store.vectorizer.encode_images([image])[0], text_vectors, ids)
            assert store.query_image(image, k=1) == expected[:1]

    def test_images_and_texts_share_one_store(self, store: StoreHarness) -> None:
        images = contract_images(3)
        store.add_images(_ids("img", 3), images)
        store.add_texts(_ids("txt", 3), CONTRACT_TEXTS[:3])
        assert store.count() == 6
        assert store.query_image(images[1], k=6)[0] == "img-1"
        assert store.query_text(CONTRACT_TEXTS[2], k=6)[0] == "txt-2"
        assert len(store.query_text(CONTRACT_TEXTS[0], k=6)) == 6

    # -------------------------------------------------------------------------------------------- persistence
    def test_reopen_answers_the_same(self, store: StoreHarness) -> None:
        images = contract_images(4)
        store.add_images(_ids("img", 4), images)
        store.add_texts(_ids("txt", 2), CONTRACT_TEXTS[:2])
        before_text = store.query_text(CONTRACT_TEXTS[1], k=6)
        before_image = store.query_image(images[2], k=6)
        reopened = store.reopen()
        try:
            assert reopened.count() == 6
            assert reopened.query_text(CONTRACT_TEXTS[1], k=6) == before_text
            assert reopened.query_image(images[2], k=6) == before_image
        finally:
            if reopened is not store:
                reopened.close()

    # -------------------------------------------------------------------------------------------- bad input
    def test_corrupt_image_in_a_batch_writes_nothing(self, store: StoreHarness) -> None:
        store.add_images(["seed"], contract_images(1))
        good = contract_images(3)
        with pytest.raises(InvalidImageError) as info:
            store.add_images(["a", "b", "c"], [good[1], b"\x89PNG\r\n\x1a\n this is not a png", good[2]])
        assert info.value.index == 1
        assert "#1" in str(info.value)
        assert store.count() == 1

    def test_truncated_image_writes_nothing(self, store: StoreHarness) -> None:
        png = encode_image(_pil(contract_images(1)[0]), "PNG")
        with pytest.raises(InvalidImageError) as info:
            store.add_images(["a", "b"], [png, png[: len(png) // 2]])
        assert info.value.index == 1
        assert store.count() == 0

    def test_empty_text_writes_nothing(self, store: StoreHarness) -> None:
        with pytest.raises(InvalidTextError) as info:
            store.add_texts(["a", "b", "c"], ["fine", "also fine", "   "])
        assert info.value.index == 2
        assert store.count() == 0

    def test_malformed_image_array_is_a_typed_error(self, store: StoreHarness) -> None:
        with pytest.raises(InvalidInputError) as info:
            store.add_images(["a", "b"], [contract_images(1)[0], np.zeros((8, 8, 7), dtype=np.float64)])
        assert info.value.index == 1
        assert store.count() == 0


def _pil(array: np.ndarray):
    from PIL import Image

    return Image.fromarray(array)
