"""BGE-M3's sparse and multi-vector heads: parity with the real FlagEmbedding 1.4.2 ``BGEM3FlagModel.encode``
(reference outputs made in a throwaway venv, see scripts/flag_reference/README.md), batching, de-duplication,
typed errors, towers without heads, saving, fingerprints."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bge_siglip_vectorizer import (
    InvalidInputError,
    InvalidTextError,
    MissingHeadError,
    ModelLoadError,
    SparseEmbedding,
    TextEncodings,
    Vectorizer,
)
from bge_siglip_vectorizer.testing import make_tiny_model

DATA = Path(__file__).parent / "data"
TOWER = DATA / "bge-m3-tiny"
REFERENCE = json.loads((DATA / "bge_m3_reference.json").read_text(encoding="utf-8"))
ITEMS = REFERENCE["items"]
TEXTS = [item["text"] for item in ITEMS]  # the last one is "": FlagEmbedding embeds it like any other string
MAX_LENGTH = REFERENCE["encode_args"]["max_length"]  # 32: the "long_truncated" item is cut
FLAG_BATCH = REFERENCE["encode_args"]["batch_size"]
TOLERANCE = 1e-5


def _model_with_text_tower(directory: Path, tower: Path) -> Path:
    """A tiny BGE-SigLIP directory whose text tower is ``tower`` (referenced, not copied), text length 32 as in the
    reference run."""
    make_tiny_model(directory)
    shutil.rmtree(directory / "text")
    config = json.loads((directory / "bge_siglip_config.json").read_text())
    config.update(text_tower=str(tower.resolve()), text_max_length=MAX_LENGTH)
    (directory / "bge_siglip_config.json").write_text(json.dumps(config))
    return directory


def _tower_copy(directory: Path, without: tuple[str, ...] = ()) -> Path:
    shutil.copytree(TOWER, directory)
    for name in without:
        (directory / name).unlink()
    return directory


@pytest.fixture(scope="module")
def flag_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _model_with_text_tower(tmp_path_factory.mktemp("bge-m3-heads") / "model", TOWER)


@pytest.fixture(scope="module")
def vec(flag_model_dir: Path) -> Vectorizer:
    return Vectorizer.from_pretrained(flag_model_dir, device="cpu")


def _reference_sparse(item: dict) -> dict[int, float]:
    return {int(token): weight for token, weight in item["lexical_weights"].items()}


def _sparse_diff(got: list[SparseEmbedding], expected: list[dict[int, float]]) -> float:
    """Max abs weight difference; the token sets must be equal."""
    worst = 0.0
    for i, (embedding, reference) in enumerate(zip(got, expected, strict=True)):
        mine = embedding.to_dict()
        assert set(mine) == set(reference), f"text #{i}: token sets differ"
        worst = max([worst, *(abs(mine[token] - reference[token]) for token in reference)])
    return worst


def _multivector_diff(got: list[np.ndarray], expected: list[np.ndarray]) -> float:
    for i, (mine, reference) in enumerate(zip(got, expected, strict=True)):
        assert mine.shape == reference.shape, f"text #{i}: {mine.shape} vs {reference.shape}"
    return max(float(np.abs(mine - reference).max()) for mine, reference in zip(got, expected))


REFERENCE_DENSE = np.array([item["dense"] for item in ITEMS], dtype=np.float32)
REFERENCE_SPARSE = [_reference_sparse(item) for item in ITEMS]
REFERENCE_COLBERT = [np.array(item["colbert_vecs"], dtype=np.float32).reshape(-1, 32) for item in ITEMS]


# ------------------------------------------------------------------------------------------------ the test data
def test_the_committed_tower_is_the_one_the_reference_was_made_with() -> None:
    files = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in TOWER.iterdir()}
    assert files == REFERENCE["tower_sha256"]
    assert REFERENCE["versions"]["FlagEmbedding"] == "1.4.2"
    assert REFERENCE["encode_args"] == {"batch_size": 4, "max_length": 32, "return_dense": True,
                                        "return_sparse": True, "return_colbert_vecs": True}


def test_our_loader_tokenises_like_the_reference(vec: Vectorizer) -> None:
    # tokenizer_config.json says "XLMRobertaTokenizer" (as the bge-m3 hub repo does), which transformers 4 and 5 load.
    assert vec.text_max_length == MAX_LENGTH
    ids = vec.tokenizer(TEXTS, truncation=True, max_length=vec.text_max_length)["input_ids"]
    assert ids == [item["input_ids"] for item in ITEMS]
    assert len(ids[TEXTS.index(ITEMS[12]["text"])]) == MAX_LENGTH and ITEMS[12]["name"] == "long_truncated"


# ------------------------------------------------------------------------------------------------ parity
def test_dense_parity_with_flagembedding(vec: Vectorizer) -> None:
    dense = vec.encode_texts(TEXTS, batch_size=FLAG_BATCH, allow_empty=True)
    assert np.abs(dense - REFERENCE_DENSE).max() <= TOLERANCE


def test_sparse_parity_with_flagembedding(vec: Vectorizer) -> None:
    sparse = vec.encode_texts_sparse(TEXTS, batch_size=FLAG_BATCH, allow_empty=True)
    assert _sparse_diff(sparse, REFERENCE_SPARSE) <= TOLERANCE
    for embedding in sparse:
        assert embedding.indices.dtype == np.int64 and embedding.values.dtype == np.float32
        assert np.all(np.diff(embedding.indices) > 0) and np.all(embedding.values > 0)
    # What the reference exercises: repeated words keep their max weight once, <unk> (id 3) and the special tokens
    # are dropped, zero weights are dropped (whole texts come out empty), "" is empty.
    by_name = {item["name"]: embedding for item, embedding in zip(ITEMS, sparse)}
    repeated = ITEMS[10]["input_ids"]
    assert ITEMS[10]["name"] == "repeated_words" and len(by_name["repeated_words"]) < len(repeated) - 2
    assert 3 in ITEMS[13]["input_ids"] and 3 not in by_name["product_code"].indices
    assert len(by_name["russian"]) == 0 and len(by_name["empty"]) == 0
    assert all(not set(embedding.indices.tolist()) & {0, 1, 2, 3} for embedding in sparse)


def test_multivector_parity_with_flagembedding(vec: Vectorizer) -> None:
    colbert = vec.encode_texts_multivector(TEXTS, batch_size=FLAG_BATCH, allow_empty=True)
    assert _multivector_diff(colbert, REFERENCE_COLBERT) <= TOLERANCE
    for item, vectors in zip(ITEMS, colbert):
        # Every token but CLS, the final </s> included: "" -> [<s>, </s>] -> one vector.
        assert vectors.dtype == np.float32 and vectors.shape == (len(item["input_ids"]) - 1, vec.multivector_dim)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_encode_texts_all_is_one_forward_and_equals_the_single_outputs(flag_model_dir: Path) -> None:
    vectorizer = Vectorizer.from_pretrained(flag_model_dir, device="cpu")
    everything = vectorizer.encode_texts_all(TEXTS, batch_size=FLAG_BATCH, allow_empty=True)
    assert isinstance(everything, TextEncodings) and len(everything) == len(TEXTS)
    assert vectorizer.stats.text_batches == 4  # 15 texts in batches of 4: one forward per batch for all three
    np.testing.assert_array_equal(everything.dense, vectorizer.encode_texts(TEXTS, batch_size=FLAG_BATCH, allow_empty=True))
    assert everything.sparse == vectorizer.encode_texts_sparse(TEXTS, batch_size=FLAG_BATCH, allow_empty=True)
    for a, b in zip(everything.multivector, vectorizer.encode_texts_multivector(TEXTS, batch_size=FLAG_BATCH, allow_empty=True)):
        np.testing.assert_array_equal(a, b)
    assert np.abs(everything.dense - REFERENCE_DENSE).max() <= TOLERANCE
    only_sparse = vectorizer.encode_texts_all(TEXTS, allow_empty=True, multivector=False)
    assert only_sparse.multivector is None and len(only_sparse.sparse) == len(TEXTS)


def test_outputs_do_not_depend_on_the_batch(vec: Vectorizer) -> None:
    alone = [vec.encode_texts_all([text], allow_empty=True) for text in TEXTS]
    for batch_size in (3, 16):
        together = vec.encode_texts_all(TEXTS, batch_size=batch_size, allow_empty=True)
        assert np.abs(together.dense - np.concatenate([a.dense for a in alone])).max() <= TOLERANCE
        assert _sparse_diff(together.sparse, [a.sparse[0].to_dict() for a in alone]) <= TOLERANCE
        assert _multivector_diff(together.multivector, [a.multivector[0] for a in alone]) <= TOLERANCE


def test_identical_texts_are_computed_once_and_get_their_own_copies(flag_model_dir: Path) -> None:
    vectorizer = Vectorizer.from_pretrained(flag_model_dir, device="cpu")
    texts = ["a photo of a dog on the beach", "ein Hund am Strand", "a photo of a dog on the beach"]
    out = vectorizer.encode_texts_all(texts)
    assert vectorizer.stats.texts == 2
    assert out.sparse[0] == out.sparse[2] and out.sparse[0] is not out.sparse[2]
    np.testing.assert_array_equal(out.multivector[0], out.multivector[2])
    out.multivector[2][:] = 0  # modifying one text's output leaves its duplicate's alone
    out.sparse[2].values[:] = 0
    assert np.abs(out.multivector[0]).sum() > 0 and np.all(out.sparse[0].values > 0)


def test_bad_texts_are_typed_errors_naming_the_item(vec: Vectorizer) -> None:
    for encode in (vec.encode_texts_sparse, vec.encode_texts_multivector, vec.encode_texts_all):
        with pytest.raises(InvalidTextError) as info:
            encode(["a dog", "ein Hund", 7])
        assert info.value.index == 2 and str(info.value).startswith("text #2")
        with pytest.raises(InvalidTextError, match="empty text") as info:
            encode(["a dog", " "])
        assert info.value.index == 1
        with pytest.raises(InvalidInputError, match="wrap it in a list"):
            encode("a dog")
        with pytest.raises(ValueError, match="batch_size"):
            encode(["a dog"], batch_size=0)
    assert vec.encode_texts_sparse([]) == [] and vec.encode_texts_multivector([]) == []
    assert vec.encode_texts_all([]).dense.shape == (0, vec.dim)


def test_progress_bar(vec: Vectorizer, capsys: pytest.CaptureFixture) -> None:
    vec.encode_texts_all(TEXTS, batch_size=4, allow_empty=True, show_progress=True)
    assert "encoding texts" in capsys.readouterr().err


def test_a_rare_shared_token_ranks_its_text_first_through_the_sparse_vector_alone(vec: Vectorizer) -> None:
    documents = vec.encode_texts_sparse(TEXTS, allow_empty=True)
    query = vec.encode_texts_sparse(["X-9000"])[0]
    scores = [query.dot(document) for document in documents]
    best = int(np.argmax(scores))
    assert ITEMS[best]["name"] == "product_code" and scores[best] > 0
    assert sorted(scores)[-2] == 0.0  # no other text shares a token with the query
    # ids 63, 64, 82: the tiny vocabulary has no "X-" (it is <unk>, dropped), so the word marker stands alone.
    assert vec.sparse_tokens(query) == ["\u2581", "0", "9"]
    assert query.dot(query) == pytest.approx(float((query.values.astype(np.float64) ** 2).sum()))


# ------------------------------------------------------------------------------------------------ towers without heads
def test_a_tower_without_heads_is_dense_only_and_says_what_is_missing(vec: Vectorizer, tmp_path: Path) -> None:
    tower = _tower_copy(tmp_path / "tower", without=("sparse_linear.pt", "colbert_linear.pt"))
    dense_only = Vectorizer.from_pretrained(_model_with_text_tower(tmp_path / "model", tower), device="cpu")
    np.testing.assert_array_equal(dense_only.encode_texts(TEXTS[:4]), vec.encode_texts(TEXTS[:4]))
    assert dense_only.text_outputs == ("dense",) and dense_only.sparse_dim is None
    description = dense_only.describe()
    assert description["text_outputs"] == ["dense"] and description["multivector_dim"] is None
    with pytest.raises(MissingHeadError, match="no sparse_linear.pt"):
        dense_only.encode_texts_sparse(["a dog"])
    with pytest.raises(MissingHeadError, match="no colbert_linear.pt"):
        dense_only.encode_texts_multivector(["a dog"])
    with pytest.raises(MissingHeadError):
        dense_only.encode_texts_all(["a dog"])
    assert dense_only.encode_texts_all(["a dog"], sparse=False, multivector=False).dense.shape == (1, 32)
    # The dense space is the same with or without heads: stores built with one model accept the other.
    assert dense_only.fingerprint == vec.fingerprint
    assert dense_only.fingerprints == {"dense": vec.fingerprint}


def test_each_head_loads_on_its_own(vec: Vectorizer, tmp_path: Path) -> None:
    # FlagEmbedding loads the heads only when both files exist (else both stay random); we never use random heads.
    tower = _tower_copy(tmp_path / "tower", without=("colbert_linear.pt",))
    sparse_only = Vectorizer.from_pretrained(_model_with_text_tower(tmp_path / "model", tower), device="cpu")
    assert sparse_only.text_outputs == ("dense", "sparse")
    assert sparse_only.encode_texts_sparse(TEXTS[:3]) == vec.encode_texts_sparse(TEXTS[:3])
    with pytest.raises(MissingHeadError, match="colbert_linear.pt"):
        sparse_only.encode_texts_multivector(["a dog"])
    assert sparse_only.fingerprints["sparse"] == vec.fingerprints["sparse"] and "multivector" not in sparse_only.fingerprints


def _save_head(path: Path, out_features: int, in_features: int = 32) -> None:
    torch.save(torch.nn.Linear(in_features, out_features).state_dict(), path)


@pytest.mark.parametrize(
    "name, write, message",
    [
        ("sparse_linear.pt", lambda path: path.write_bytes(b"not a torch file"), "cannot read the sparse head"),
        ("colbert_linear.pt", lambda path: torch.save({"w": torch.zeros(2)}, path), "not a Linear layer's state dict"),
        ("colbert_linear.pt", lambda path: torch.save({"weight": [1.0], "bias": 0.0}, path), "not a Linear layer's"),
        ("sparse_linear.pt", lambda path: _save_head(path, 2), r"not a \(1, hidden\) Linear"),
        ("colbert_linear.pt", lambda path: _save_head(path, 32, in_features=16), "hidden size is 32"),
    ],
    ids=["corrupt", "wrong-keys", "not-tensors", "sparse-not-one-output", "wrong-input-size"],
)
def test_bad_head_files_are_model_load_errors(tmp_path: Path, name: str, write, message: str) -> None:
    tower = _tower_copy(tmp_path / "tower")
    write(tower / name)
    with pytest.raises(ModelLoadError, match=message):
        Vectorizer.from_pretrained(_model_with_text_tower(tmp_path / "model", tower), device="cpu")


def test_heads_of_a_hub_tower_are_fetched_beside_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    import huggingface_hub.constants

    from bge_siglip_vectorizer.loading import load_text_heads

    # Offline and not cached (or a repo without the files): no heads, dense only, no error.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert load_text_heads("bge-siglip-tests/no-such-tower") == {}
    # A repo that has them: each file is fetched by name, as transformers fetches the tower's own files.
    asked = []

    def download(repo_id: str, filename: str, **_: object) -> str:
        asked.append((repo_id, filename))
        return str(TOWER / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    heads = load_text_heads("BAAI/bge-m3")
    assert asked == [("BAAI/bge-m3", "sparse_linear.pt"), ("BAAI/bge-m3", "colbert_linear.pt")]
    assert heads["sparse"]["weight"].shape == (1, 32) and heads["multivector"]["weight"].shape == (32, 32)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_head_file_cannot_run_code(tmp_path: Path) -> None:
    tower = _tower_copy(tmp_path / "tower")
    marker = tmp_path / "code-ran"
    torch.save({"weight": _RunsCode(marker), "bias": torch.zeros(1)}, tower / "sparse_linear.pt")
    with pytest.raises(ModelLoadError, match="cannot read the sparse head"):
        Vectorizer.from_pretrained(_model_with_text_tower(tmp_path / "model", tower), device="cpu")
    assert not marker.exists()  # weights_only=True refused the pickle before running anything


# ------------------------------------------------------------------------------------------------ saving, fingerprints
def test_save_pretrained_writes_the_heads_and_a_reload_gives_the_same_outputs(vec: Vectorizer, tmp_path: Path) -> None:
    saved = vec.save_pretrained(tmp_path / "copy")
    for name in ("sparse_linear.pt", "colbert_linear.pt"):
        written = torch.load(saved / "text" / name, weights_only=True)
        original = torch.load(TOWER / name, weights_only=True)
        assert set(written) == {"weight", "bias"} and all(torch.equal(written[k], original[k]) for k in original)
    again = Vectorizer.from_pretrained(saved, device="cpu")
    assert again.encode_texts_sparse(TEXTS, allow_empty=True) == vec.encode_texts_sparse(TEXTS, allow_empty=True)
    assert again.fingerprints == vec.fingerprints


def test_saving_a_dense_only_model_over_a_directory_with_heads_removes_them(vec: Vectorizer, tmp_path: Path) -> None:
    target = vec.save_pretrained(tmp_path / "target")
    tower = _tower_copy(tmp_path / "tower", without=("sparse_linear.pt", "colbert_linear.pt"))
    dense_only = Vectorizer.from_pretrained(_model_with_text_tower(tmp_path / "model", tower), device="cpu")
    dense_only.save_pretrained(target)
    assert not (target / "text" / "sparse_linear.pt").exists() and not (target / "text" / "colbert_linear.pt").exists()
    assert Vectorizer.from_pretrained(target, device="cpu").text_outputs == ("dense",)


def test_each_granularity_has_its_own_fingerprint(vec: Vectorizer, tmp_path: Path) -> None:
    assert set(vec.fingerprints) == {"dense", "sparse", "multivector"}
    assert vec.fingerprints["dense"] == vec.fingerprint and len(set(vec.fingerprints.values())) == 3
    tower = _tower_copy(tmp_path / "tower")
    _save_head(tower / "colbert_linear.pt", 32)  # another multi-vector head: only that space changes
    other = Vectorizer.from_pretrained(_model_with_text_tower(tmp_path / "model", tower), device="cpu")
    assert other.fingerprints["multivector"] != vec.fingerprints["multivector"]
    assert other.fingerprints["sparse"] == vec.fingerprints["sparse"] and other.fingerprint == vec.fingerprint


def test_make_tiny_model_writes_both_heads(bge_siglip_model_dir: Path, bge_siglip_vectorizer: Vectorizer) -> None:
    sparse = torch.load(bge_siglip_model_dir / "text" / "sparse_linear.pt", weights_only=True)
    colbert = torch.load(bge_siglip_model_dir / "text" / "colbert_linear.pt", weights_only=True)
    assert sparse["weight"].shape == (1, 32) and colbert["weight"].shape == (32, 32)
    assert bge_siglip_vectorizer.text_outputs == ("dense", "sparse", "multivector")
    assert bge_siglip_vectorizer.sparse_dim == len(bge_siglip_vectorizer.tokenizer)
    # The sparse head is calibrated so that most tiny-model texts have some positive weights.
    texts = ["a red circle on a white background", "ein Hund am Strand", "un perro corriendo en el parque",
             "the quick brown fox jumps over the lazy dog 0123456789", "γάτα στο παράθυρο"]
    assert all(len(embedding) > 0 for embedding in bge_siglip_vectorizer.encode_texts_sparse(texts))
