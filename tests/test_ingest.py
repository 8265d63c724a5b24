"""The shared bulk-ingest helper: ids, provenance, chunking, the on_error policy and the database's own checks.

``write`` here is a list recorder: every adapter's callback only translates an IngestBatch into its database rows, so
what reaches the recorder is what reaches every database.
"""

from __future__ import annotations

import numpy as np
import pytest

from bge_siglip_vectorizer import (
    IngestBatch,
    InvalidImageError,
    InvalidInputError,
    InvalidTextError,
    content_id,
    ingest,
    ingest_items,
    provenance,
)
from bge_siglip_vectorizer.testing.images import sample_image_files

BAD = b"\x89PNG\r\n\x1a\n not a png"


class Recorder:
    def __init__(self) -> None:
        self.batches: list[IngestBatch] = []

    def __call__(self, batch: IngestBatch) -> None:
        self.batches.append(batch)

    @property
    def rows(self) -> int:
        return sum(len(batch) for batch in self.batches)


def test_content_ids_keep_their_values():
    # Pinned (the value bge-siglip-qdrant has always given): ids must not change, or re-ingesting an existing store
    # would duplicate every row. What the ids depend on is tests/test_vectorizer.py's.
    assert content_id("ein Hund am Strand", "text") == "d7f55dae-d962-5e59-9153-719919b6e640"


def test_provenance_records_modality_and_source(tmp_path):
    path = sample_image_files(tmp_path, 1)[0]
    assert provenance("ein Hund", "text") == {"modality": "text", "text": "ein Hund"}
    assert provenance(path, "image") == {"modality": "image", "source": str(path)}
    assert provenance("https://example.com/x.png", "image")["source"] == "https://example.com/x.png"
    assert provenance("data:image/png;base64,AAAA", "image") == {"modality": "image"}  # payloads are not sources
    assert provenance(b"png bytes", "image") == {"modality": "image"}


def test_ingest_items_expands_folders_and_refuses_single_items(tmp_path):
    paths = sample_image_files(tmp_path / "photos" / "sub", 2)
    assert ingest_items(tmp_path / "photos", "image") == paths
    with pytest.raises(InvalidInputError, match="wrap a single image"):
        ingest_items(str(paths[0]), "image")
    with pytest.raises(InvalidInputError, match="single str"):
        ingest_items("ein Hund", "text")
    assert ingest_items(iter(["a", "b"]), "text") == ["a", "b"]


def test_chunks_carry_core_vectors_ids_and_payloads(bge_siglip_vectorizer, tmp_path):
    paths = sample_image_files(tmp_path, 5)
    recorder = Recorder()
    payloads = [{"n": i, "modality": "photo"} if i == 1 else None for i in range(5)]
    result = ingest(bge_siglip_vectorizer, paths, "image", recorder, payloads=payloads, chunk_size=2)
    assert [len(batch) for batch in recorder.batches] == [2, 2, 1]
    assert result.ids == [content_id(p) for p in paths] and result.written == 5 and result.skipped == []
    vectors = np.concatenate([batch.vectors for batch in recorder.batches])
    np.testing.assert_allclose(vectors, bge_siglip_vectorizer.encode_images(paths), atol=1e-6)
    rows = [payload for batch in recorder.batches for payload in batch.payloads]
    assert rows[0] == {"modality": "image", "source": str(paths[0])}
    assert rows[1] == {"modality": "photo", "source": str(paths[1]), "n": 1}  # the caller's keys win
    assert [b.positions for b in recorder.batches] == [[0, 1], [2, 3], [4]]

    explicit = ingest(bge_siglip_vectorizer, ["a", "b"], "text", Recorder(), ids=[7, "x"])
    assert explicit.ids == [7, "x"]


def test_a_bad_item_in_the_last_chunk_writes_nothing(bge_siglip_vectorizer, tmp_path):
    paths: list = sample_image_files(tmp_path, 4)
    recorder = Recorder()
    with pytest.raises(InvalidImageError) as info:
        ingest(bge_siglip_vectorizer, paths + [BAD], "image", recorder, chunk_size=2)
    assert info.value.index == 4  # the caller's position, not the position inside its chunk
    assert recorder.batches == []


def test_skip_leaves_bad_items_out_and_streams_chunks(bge_siglip_vectorizer, tmp_path):
    good = sample_image_files(tmp_path, 4)
    items = [good[0], BAD, good[1], good[2], BAD, BAD, good[3]]
    recorder = Recorder()
    written_before_end: list[int] = []

    def write(batch: IngestBatch) -> None:
        recorder(batch)
        written_before_end.append(recorder.rows)

    result = ingest(bge_siglip_vectorizer, items, "image", write, chunk_size=3, on_error="skip")
    assert [e.index for e in result.skipped] == [1, 4, 5]
    assert all(isinstance(e, InvalidImageError) for e in result.skipped)
    assert result.ids == [content_id(good[0]), None, content_id(good[1]), content_id(good[2]), None, None,
                          content_id(good[3])]
    assert written_before_end == [2, 3, 4]  # one write per chunk, as it was encoded
    vectors = np.concatenate([batch.vectors for batch in recorder.batches])
    np.testing.assert_allclose(vectors, bge_siglip_vectorizer.encode_images(good), atol=1e-6)


def test_the_databases_own_check_runs_before_any_encoding(bge_siglip_vectorizer):
    encoded_before = bge_siglip_vectorizer.stats.texts

    def at_most_5_chars(text: str, position: int) -> None:
        if len(text) > 5:
            raise InvalidTextError("longer than the store's 5-character field", index=position)

    with pytest.raises(InvalidTextError) as info:
        ingest(bge_siglip_vectorizer, ["ok", "much too long"], "text", Recorder(), check=at_most_5_chars)
    assert info.value.index == 1 and bge_siglip_vectorizer.stats.texts == encoded_before

    recorder = Recorder()
    result = ingest(bge_siglip_vectorizer, ["ok", "much too long", "   ", "fine"], "text", recorder,
                    check=at_most_5_chars, on_error="skip")
    assert [(type(e), e.index) for e in result.skipped] == [(InvalidTextError, 1), (InvalidTextError, 2)]
    assert [item for batch in recorder.batches for item in batch.items] == ["ok", "fine"]


def test_arguments_are_checked(bge_siglip_vectorizer):
    for kwargs, message in (({"on_error": "ignore"}, "on_error"), ({"chunk_size": 0}, "chunk_size"),
                            ({"ids": [1]}, "ids has 1 entries"), ({"payloads": []}, "payloads has 0"),
                            ({"payloads": [None, {"vector": 1}], "reserved": {"id", "vector"}}, r"payloads\[1\] sets")):
        with pytest.raises(ValueError, match=message):
            ingest(bge_siglip_vectorizer, ["a", "b"], "text", Recorder(), **kwargs)


def test_sparse_weights_come_from_the_same_forward_as_the_vectors(bge_siglip_vectorizer):
    texts = ["ein Hund am Strand", "  ", "un chat noir", "кошка на окне"]
    stats = bge_siglip_vectorizer.stats

    def forwards(**kwargs) -> tuple[int, Recorder]:
        recorder, before = Recorder(), stats.text_batches
        ingest(bge_siglip_vectorizer, texts, "text", recorder, on_error="skip", chunk_size=2, **kwargs)
        return stats.text_batches - before, recorder

    dense_forwards, dense = forwards()
    sparse_forwards, recorder = forwards(sparse=True)
    assert sparse_forwards == dense_forwards  # both outputs from one forward, not a second pass
    assert all(batch.sparse is None for batch in dense.batches)
    assert [len(batch.sparse) for batch in recorder.batches] == [1, 2]
    expected = bge_siglip_vectorizer.encode_texts_all([texts[i] for i in (0, 2, 3)], multivector=False)
    np.testing.assert_allclose(np.concatenate([b.vectors for b in recorder.batches]), expected.dense, atol=1e-6)
    for got, want in zip([s for b in recorder.batches for s in b.sparse], expected.sparse):
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_allclose(got.values, want.values, atol=1e-6)
    with pytest.raises(ValueError, match="texts only"):
        ingest(bge_siglip_vectorizer, [np.zeros((8, 8, 3), np.uint8)], "image", Recorder(), sparse=True)


def test_texts_are_validated_first_then_streamed_so_memory_is_one_chunk(bge_siglip_vectorizer, monkeypatch):
    """Texts (whose multi-vectors are tokens x dim floats each) are not all held before writing: every text is
    validated first, so a bad one anywhere still writes nothing, and then each chunk is written as it is encoded."""
    recorder = Recorder()
    with pytest.raises(InvalidTextError) as info:
        ingest(bge_siglip_vectorizer, ["a", "b", "c", "d", "  "], "text", recorder, chunk_size=2)
    assert info.value.index == 4 and recorder.batches == []
    written_before_end: list[int] = []

    def write(batch: IngestBatch) -> None:
        recorder(batch)
        written_before_end.append(recorder.rows)

    encoded: list[int] = []
    original = bge_siglip_vectorizer.encode_texts_all

    def counting(texts, *args, **kwargs):
        encoded.append(recorder.rows)  # rows written when this chunk's encoding starts
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(bge_siglip_vectorizer, "encode_texts_all", counting)
    ingest(bge_siglip_vectorizer, ["a", "b", "c", "d", "e"], "text", write, chunk_size=2)
    assert written_before_end == [2, 4, 5] and encoded == [0, 2, 4]  # chunk k is written before k + 1 is encoded


def test_multivectors_come_from_the_same_forward_as_the_vectors(bge_siglip_vectorizer):
    texts = ["ein Hund am Strand", "un chat noir", "кошка на окне"]
    stats = bge_siglip_vectorizer.stats
    recorder, before = Recorder(), stats.text_batches
    ingest(bge_siglip_vectorizer, texts, "text", recorder, chunk_size=2, sparse=True, multivector=True)
    assert stats.text_batches - before == 2  # one forward per chunk for all three outputs
    expected = bge_siglip_vectorizer.encode_texts_all(texts)
    got = [m for batch in recorder.batches for m in batch.multivector]
    assert [m.shape for m in got] == [m.shape for m in expected.multivector]
    for mine, want in zip(got, expected.multivector):
        np.testing.assert_allclose(mine, want, atol=1e-5)
    assert all(batch.multivector is None for batch in ingest_batches(bge_siglip_vectorizer, texts))
    with pytest.raises(ValueError, match="texts only"):
        ingest(bge_siglip_vectorizer, [np.zeros((8, 8, 3), np.uint8)], "image", Recorder(), multivector=True)


def ingest_batches(vectorizer, texts) -> list[IngestBatch]:
    recorder = Recorder()
    ingest(vectorizer, texts, "text", recorder)
    return recorder.batches
