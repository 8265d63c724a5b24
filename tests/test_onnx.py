"""ONNX export + ONNX Runtime backend: real export of the tiny model (BGE-M3's heads included), real onnxruntime,
compared against torch."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from bge_siglip_vectorizer.errors import MissingHeadError, ModelLoadError  # noqa: E402
from bge_siglip_vectorizer.loading import load_components  # noqa: E402
from bge_siglip_vectorizer.backends.onnx import OnnxBackend, onnx_backend_for, onnx_paths  # noqa: E402
from bge_siglip_vectorizer.export import export_onnx  # noqa: E402
from bge_siglip_vectorizer.preprocess import collate, patchify  # noqa: E402
from bge_siglip_vectorizer.testing.images import sample_image, sample_images  # noqa: E402
from bge_siglip_vectorizer.vectorizer import Vectorizer  # noqa: E402

FP32_MIN_COS = 0.9999
INT8_MIN_COS = 0.99

# Lengths from 3 tokens to ~60, several scripts, so text batches of 3 pad.
TEXTS = [
    "a dog",
    "x",
    "a photo of a dog on the beach",
    "ein Hund am Strand",
    "海滩上的一只狗",
    "кошка спит на окне",
    "un chat noir sur un canapé",
    "the quick brown fox jumps over the lazy dog 0123456789 " * 3,
]


@pytest.fixture(scope="module")
def exported(bge_siglip_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported once, fp32 and int8."""
    return export_onnx(bge_siglip_model_dir, tmp_path_factory.mktemp("onnx") / "model", int8=True)


@pytest.fixture(scope="module")
def components(exported: Path):
    return load_components(exported)


@pytest.fixture(scope="module")
def torch_vectors(components) -> tuple[np.ndarray, np.ndarray]:
    vectorizer = Vectorizer(components, device="cpu", dtype="float32")
    return vectorizer.encode_images(sample_images(), batch_size=4), vectorizer.encode_texts(TEXTS, batch_size=3)


@pytest.fixture(scope="module")
def torch_text_outputs(components):
    return Vectorizer(components, device="cpu", dtype="float32").encode_texts_all(TEXTS, batch_size=3)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _sparse_cosine(a, b, size: int) -> float:
    """Cosine of two sparse embeddings in vocabulary space (1 for two empty ones)."""
    x, y = np.zeros(size), np.zeros(size)
    x[a.indices], y[b.indices] = a.values, b.values
    norms = np.linalg.norm(x) * np.linalg.norm(y)
    return float(x @ y / norms) if norms else float(not (x.any() or y.any()))


def test_export_writes_a_complete_model_directory(exported: Path) -> None:
    for quantized in (False, True):
        for path in onnx_paths(exported, quantized):
            assert path.is_file(), path
    assert (exported / "bge_siglip_config.json").is_file()
    assert (exported / "onnx" / "export_info.json").is_file()
    int8_size = sum(path.stat().st_size for path in onnx_paths(exported, True))
    fp32_size = sum(path.stat().st_size for path in onnx_paths(exported, False))
    assert int8_size < fp32_size


def test_graph_inputs_outputs_and_dynamic_axes(exported: Path) -> None:
    import onnxruntime as ort

    vision, text = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in onnx_paths(exported))
    assert [i.name for i in vision.get_inputs()] == ["pixel_values", "pixel_attention_mask", "spatial_shapes"]
    assert [i.name for i in text.get_inputs()] == ["input_ids", "attention_mask"]
    assert [o.name for o in vision.get_outputs()] == ["embeddings"]
    # The text tower has BGE-M3's heads: their per-token outputs come from the same graph (one forward).
    assert [o.name for o in text.get_outputs()] == ["embeddings", "sparse_weights", "colbert_vectors"]
    # Batch, patch count and text length are symbolic, not the sizes of the export's dummy inputs.
    assert all(isinstance(d, str) for d in vision.get_inputs()[0].shape[:2])
    assert all(isinstance(d, str) for d in text.get_inputs()[0].shape)
    sparse, colbert = text.get_outputs()[1:]
    assert all(isinstance(d, str) for d in sparse.shape) and all(isinstance(d, str) for d in colbert.shape[:2])


@pytest.mark.parametrize("quantized, bound", [(False, FP32_MIN_COS), (True, INT8_MIN_COS)], ids=["fp32", "int8"])
def test_vectorizer_parity_with_torch(components, exported: Path, torch_vectors, quantized: bool, bound: float) -> None:
    backend = OnnxBackend(exported, quantized=quantized)
    vectorizer = Vectorizer(components, backend=backend)
    images = vectorizer.encode_images(sample_images(), batch_size=4)  # 15 images of varied grids: batches pad
    texts = vectorizer.encode_texts(TEXTS, batch_size=3)
    torch_images, torch_texts = torch_vectors
    assert images.dtype == texts.dtype == np.float32
    assert images.shape == torch_images.shape and texts.shape == torch_texts.shape
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    assert _cosines(images, torch_images).min() >= bound
    assert _cosines(texts, torch_texts).min() >= bound
    assert vectorizer.describe()["backend"] == ("onnx-int8" if quantized else "onnx")


@pytest.mark.parametrize("quantized, bound", [(False, FP32_MIN_COS), (True, INT8_MIN_COS)], ids=["fp32", "int8"])
def test_sparse_and_multivector_parity_with_torch(components, exported: Path, torch_text_outputs, quantized: bool,
                                                  bound: float) -> None:
    vectorizer = Vectorizer(components, backend=OnnxBackend(exported, quantized=quantized))
    assert vectorizer.text_outputs == ("dense", "sparse", "multivector")
    onnx, reference = vectorizer.encode_texts_all(TEXTS, batch_size=3), torch_text_outputs
    assert _cosines(onnx.dense, reference.dense).min() >= bound
    for mine, theirs in zip(onnx.multivector, reference.multivector, strict=True):
        assert mine.shape == theirs.shape and _cosines(mine, theirs).min() >= bound
    size = vectorizer.sparse_dim
    assert min(_sparse_cosine(a, b, size) for a, b in zip(onnx.sparse, reference.sparse, strict=True)) >= bound
    assert sum(len(e) for e in reference.sparse) > 10  # the comparison covers real weights, not empty texts
    if not quantized:  # fp32: the same token sets and the same weights
        for mine, theirs in zip(onnx.sparse, reference.sparse):
            np.testing.assert_array_equal(mine.indices, theirs.indices)
            assert np.abs(mine.values - theirs.values).max(initial=0) <= 1e-5


def test_unseen_batch_size_and_patch_count(components, exported: Path) -> None:
    """7 images padded to 100 patches: neither size was used at export (2 images, 12 patches)."""
    import torch

    grids = [(9, 7), (7, 9), (1, 1), (5, 3), (2, 11), (10, 10), (3, 3)]
    length = max(h * w for h, w in grids)
    rng = np.random.default_rng(0)
    pixel_values = np.zeros((len(grids), length, components.preprocessing.patch_dim), dtype=np.float32)
    mask = np.zeros((len(grids), length), dtype=np.int32)
    for row, (h, w) in enumerate(grids):
        pixel_values[row, : h * w] = rng.uniform(-1, 1, size=(h * w, pixel_values.shape[-1]))
        mask[row, : h * w] = 1
    shapes = np.array(grids, dtype=np.int64)
    onnx_vectors = OnnxBackend(exported).run_images(pixel_values, mask, shapes)
    with torch.inference_mode():
        expected = components.image_encoder.float()(
            torch.from_numpy(pixel_values), torch.from_numpy(mask), torch.from_numpy(shapes)
        ).numpy()
    assert onnx_vectors.shape == (len(grids), components.config.dim)
    assert _cosines(onnx_vectors, expected).min() >= FP32_MIN_COS

    ids = np.array([[0] + [5 + i % 20 for i in range(95)] + [2]] * 5, dtype=np.int64)  # 5 texts of 97 tokens
    attention = np.ones_like(ids)
    with torch.inference_mode():
        expected_texts = components.text_encoder.float()(torch.from_numpy(ids), torch.from_numpy(attention)).numpy()
    assert _cosines(OnnxBackend(exported).run_texts(ids, attention), expected_texts).min() >= FP32_MIN_COS


def test_padding_inside_a_batch_changes_nothing(components, exported: Path) -> None:
    """Each item of a padded batch gets the vector it gets alone: the graph honours both masks."""
    backend = OnnxBackend(exported)
    config = components.preprocessing
    sizes = [(320, 240), (1000, 30), (1, 1), (17, 900)]  # 252, 255, 49 and 212 patches
    patched = [patchify(sample_image(w, h, seed=i), config) for i, (w, h) in enumerate(sizes)]
    pixel_values, mask, shapes = collate(patched, config)
    assert (mask == 0).sum() > 200  # the batch really pads
    batched = backend.run_images(pixel_values, mask, shapes)
    alone = np.concatenate([backend.run_images(*collate([item], config)) for item in patched])
    np.testing.assert_allclose(batched, alone, atol=1e-5)

    ids = components.tokenizer(TEXTS[:4], padding=True, return_tensors="np")
    batched_texts = backend.run_texts(ids["input_ids"], ids["attention_mask"])
    outputs = ("dense", "sparse", "multivector")
    batched_all = backend.run_text_outputs(ids["input_ids"], ids["attention_mask"], outputs)
    for row, text in enumerate(TEXTS[:4]):
        single = components.tokenizer([text], return_tensors="np")
        alone_text = backend.run_texts(single["input_ids"], single["attention_mask"])
        np.testing.assert_allclose(batched_texts[row], alone_text[0], atol=1e-5)
        alone_all = backend.run_text_outputs(single["input_ids"], single["attention_mask"], outputs)
        n = single["input_ids"].shape[1]
        np.testing.assert_allclose(batched_all["sparse"][row, :n], alone_all["sparse"][0], atol=1e-5)
        np.testing.assert_allclose(batched_all["multivector"][row, : n - 1], alone_all["multivector"][0], atol=1e-5)
        assert not batched_all["multivector"][row, n - 1 :].any()  # padded positions are zero rows


def test_in_place_export_with_external_weights(
    bge_siglip_model_dir: Path, torch_vectors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exporting into the model directory itself, weights beside the graph (the layout of > 2 GB towers)."""
    from bge_siglip_vectorizer.export import onnx as onnx_export

    monkeypatch.setattr(onnx_export, "_EXTERNAL_DATA_THRESHOLD", 0)  # the tiny model takes the large-model path
    model = tmp_path / "model"
    shutil.copytree(bge_siglip_model_dir, model)
    assert export_onnx(model, model, int8=True) == model
    for quantized in (False, True):
        for path in onnx_paths(model, quantized):
            assert path.with_name(path.name + ".data").is_file()
    vectorizer = Vectorizer(load_components(model), backend=OnnxBackend(model, quantized=True))
    assert _cosines(vectorizer.encode_texts(TEXTS, batch_size=3), torch_vectors[1]).min() >= INT8_MIN_COS


def test_backend_helper_and_properties(components, exported: Path) -> None:
    fp32 = onnx_backend_for(components, "onnx")
    int8 = onnx_backend_for(components, "onnx", dtype="int8")
    assert (fp32.name, fp32.dtype, fp32.device) == ("onnx", "float32", "cpu")
    assert (int8.name, int8.dtype) == ("onnx-int8", "int8")
    assert fp32.dim == components.config.dim
    with pytest.raises(ValueError):
        onnx_backend_for(components, "onnx", dtype="float16")


def test_missing_graphs_raise_model_load_error(bge_siglip_model_dir: Path, exported: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="export-onnx"):
        OnnxBackend(bge_siglip_model_dir)  # a model directory that was never exported
    only_fp32 = tmp_path / "only-fp32"
    shutil.copytree(exported, only_fp32)
    for path in onnx_paths(only_fp32, quantized=True):
        path.unlink()
    OnnxBackend(only_fp32)  # fp32 still loads
    with pytest.raises(ModelLoadError, match="--int8"):
        OnnxBackend(only_fp32, quantized=True)


def test_corrupt_graph_and_stale_export_raise_model_load_error(exported: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(exported, corrupt)
    onnx_paths(corrupt)[1].write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match="cannot load ONNX graph"):
        OnnxBackend(corrupt)

    stale = tmp_path / "stale"
    shutil.copytree(exported, stale)
    (stale / "projector.safetensors").write_bytes((stale / "projector.safetensors").read_bytes() + b" ")
    with pytest.raises(ModelLoadError, match="re-export"):
        OnnxBackend(stale)


def test_onnx_vectorizer_never_reads_the_torch_towers(exported: Path, tmp_path: Path) -> None:
    # Without the towers' weight files a torch load fails, and the ONNX backend does not miss them.
    graphs_only = tmp_path / "graphs-only"
    shutil.copytree(exported, graphs_only)
    for tower in ("vision", "text"):
        (graphs_only / tower / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError):
        Vectorizer.from_pretrained(graphs_only)
    vectorizer = Vectorizer.from_pretrained(graphs_only, backend="onnx")
    assert all(p.is_meta for p in vectorizer.components.image_encoder.vision.parameters())
    assert all(p.is_meta for p in vectorizer.components.text_encoder.model.parameters())
    assert vectorizer.encode_texts(["still works"]).shape == (1, vectorizer.dim)
    assert len(vectorizer.fingerprint) == 64 and vectorizer.describe()["backend"] == "onnx"
    with pytest.raises(ValueError, match="backend='torch'"):
        vectorizer.save_pretrained(tmp_path / "copy")


def test_graphs_without_heads_give_dense_only_and_say_why(bge_siglip_model_dir: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    model = tmp_path / "model"
    shutil.copytree(bge_siglip_model_dir, model)
    heads = {name: (model / "text" / name).read_bytes() for name in ("sparse_linear.pt", "colbert_linear.pt")}
    for name in heads:
        (model / "text" / name).unlink()
    export_onnx(model, model)  # a dense-only tower: the text graph has the dense output alone
    text = ort.InferenceSession(str(onnx_paths(model)[1]), providers=["CPUExecutionProvider"])
    assert [o.name for o in text.get_outputs()] == ["embeddings"]
    dense_only = Vectorizer.from_pretrained(model, backend="onnx")
    assert dense_only.text_outputs == ("dense",)
    with pytest.raises(MissingHeadError, match="no sparse_linear.pt"):
        dense_only.encode_texts_sparse(["a dog"])
    # Heads added to the tower after that export: the model has them, its graphs do not.
    for name, data in heads.items():
        (model / "text" / name).write_bytes(data)
    stale = Vectorizer.from_pretrained(model, backend="onnx")
    assert stale.text_outputs == ("dense",) and stale.multivector_dim == 32
    with pytest.raises(MissingHeadError, match="re-export"):
        stale.encode_texts_multivector(["a dog"])
    assert stale.encode_texts(["a dog"]).shape == (1, 32)
    assert Vectorizer.from_pretrained(model).encode_texts_multivector(["a dog"])[0].shape == (3, 32)  # torch has them


def test_heads_replaced_after_the_export_are_refused(exported: Path, tmp_path: Path) -> None:
    import torch

    changed = tmp_path / "changed"
    shutil.copytree(exported, changed)
    torch.save(torch.nn.Linear(32, 32).state_dict(), changed / "text" / "colbert_linear.pt")
    with pytest.raises(ModelLoadError, match="other multivector head weights.*re-export"):
        Vectorizer.from_pretrained(changed, backend="onnx")


def test_a_head_removed_after_the_export_is_not_offered(exported: Path, tmp_path: Path) -> None:
    fewer = tmp_path / "fewer"
    shutil.copytree(exported, fewer)
    (fewer / "text" / "sparse_linear.pt").unlink()  # the graph still computes it, but the model no longer has it
    vectorizer = Vectorizer.from_pretrained(fewer, backend="onnx")
    assert vectorizer.backend.text_outputs == ("dense", "sparse", "multivector")
    assert vectorizer.text_outputs == ("dense", "multivector") and "sparse" not in vectorizer.fingerprints
    with pytest.raises(MissingHeadError, match="no sparse_linear.pt"):
        vectorizer.encode_texts_sparse(["a dog"])
    assert vectorizer.encode_texts_multivector(["a dog"])[0].shape == (3, 32)
