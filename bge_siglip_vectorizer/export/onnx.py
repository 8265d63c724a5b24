"""ONNX export of both towers, and int8 quantisation of the exported graphs.

``export_onnx(model_dir, out_dir)`` writes a normal BGE-SigLIP directory plus the graphs that
:mod:`bge_siglip_vectorizer.backends.onnx` runs (layout described there). Batch size, patch count N and text
length L are dynamic.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. It exists in every torch release the
package allows, needs no extra dependency and takes seconds. The dynamo exporter (torch's default since 2.9) needs
``onnxscript`` and fails on transformers' NaFlex shape checks (``aten._is_all_true`` has no ONNX translation)
unless ``TRANSFORMERS_DISABLE_TORCH_CHECK=1`` is set process-wide. The TorchScript exporter's one weakness here,
``nn.MultiheadAttention`` in SigLIP's pooling head tracing with the export batch size baked in, is handled by
swapping in an equivalent shape-agnostic module for the duration of the export.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from ..backends.onnx import (
    INFO_FILE,
    ONNX_DIR,
    OUTPUT_NAME,
    TEXT_INPUTS,
    TEXT_OUTPUT_NAMES,
    VISION_INPUTS,
    _projector_digest,
    onnx_paths,
)
from ..errors import ExportError, reraise_as, require
from ..loading import Components, load_components, save_components, text_head_digests
from ..model import TextEncoder

__all__ = ["export_onnx", "export_vision", "export_text", "quantize_int8", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17  # first opset with a native LayerNormalization; supported by onnxruntime >= 1.14
INT8_OP_TYPES = ("MatMul",)
# Protobuf cannot serialise a single message above 2 GiB; larger graphs (BGE-M3's text tower) keep weights beside.
_EXTERNAL_DATA_THRESHOLD = 1_800_000_000


# ---------------------------------------------------------------------------------------------------- export
def export_onnx(
    model_dir: str | os.PathLike, out_dir: str | os.PathLike, int8: bool = False, opset: int | None = None
) -> Path:
    """Export both towers of ``model_dir`` to ``out_dir/onnx/`` (and copy the model directory into ``out_dir``).

    ``out_dir`` stays a complete BGE-SigLIP directory, so it loads with either backend. Returns ``out_dir``.
    """
    components = load_components(model_dir)
    out = Path(out_dir)
    # Re-saving onto the directory the weights were just (memory-mapped) read from could corrupt them.
    if not (out.is_dir() and out.resolve() == Path(components.source or "").resolve()):
        save_components(components, out)
    vision_path, text_path = onnx_paths(out, quantized=False)
    vision_path.parent.mkdir(parents=True, exist_ok=True)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    export_vision(components, vision_path, opset)
    export_text(components, text_path, opset)
    for source, target in zip((vision_path, text_path), onnx_paths(out, quantized=True)):
        if int8:
            quantize_int8(source, target)
        else:
            _remove_graph(target)  # an int8 graph from an earlier export would no longer match the weights
    _write_info(out, components, opset, int8)
    return out


def export_vision(components: Components, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Vision tower + projector + L2 normalisation, dynamic in batch and patch count."""
    encoder = components.image_encoder.float().eval()
    patch_dim = components.preprocessing.patch_dim
    # Two images of different grids, the second padded: the traced graph must carry the mask path.
    grids = [(3, 4), (2, 3)]
    length = max(h * w for h, w in grids)
    mask = torch.zeros(len(grids), length, dtype=torch.int64)
    for row, (h, w) in enumerate(grids):
        mask[row, : h * w] = 1
    pixel_values = torch.randn(len(grids), length, patch_dim, generator=torch.Generator().manual_seed(0))
    shapes = torch.tensor(grids, dtype=torch.int64)
    axes = {
        "pixel_values": {0: "batch", 1: "num_patches"},
        "pixel_attention_mask": {0: "batch", 1: "num_patches"},
        "spatial_shapes": {0: "batch"},
        OUTPUT_NAME: {0: "batch"},
    }
    with _traceable_pooling_head(encoder.vision):
        _export(encoder, (pixel_values, mask, shapes), VISION_INPUTS, [OUTPUT_NAME], axes, path, opset)
    return path


class _TextGraph(nn.Module):
    """The text encoder with every output it has: the dense vector, then each head's per-token output."""

    def __init__(self, encoder: TextEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = tuple(encoder.heads())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.encoder.encode_all(
            input_ids, attention_mask, sparse="sparse" in self.heads, multivector="multivector" in self.heads
        )
        return tuple(output for output in outputs if output is not None)


def export_text(components: Components, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Text tower + pooling + L2 normalisation, dynamic in batch and text length; with BGE-M3's heads also their
    per-token outputs (one forward of the encoder feeds all three)."""
    encoder = components.text_encoder.float().eval()
    graph = _TextGraph(encoder)
    # Real token ids of two texts of different lengths, padded: ids stay in the vocabulary, the mask path is traced.
    batch = components.tokenizer(["a photo of a dog on the beach", "a dog"], padding=True, return_tensors="pt")
    input_ids = batch["input_ids"].to(torch.int64)
    attention_mask = batch["attention_mask"].to(torch.int64)
    outputs = [TEXT_OUTPUT_NAMES[output] for output in ("dense", *graph.heads)]
    axes = {
        "input_ids": {0: "batch", 1: "length"},
        "attention_mask": {0: "batch", 1: "length"},
        OUTPUT_NAME: {0: "batch"},
        TEXT_OUTPUT_NAMES["sparse"]: {0: "batch", 1: "length"},
        TEXT_OUTPUT_NAMES["multivector"]: {0: "batch", 1: "tokens"},  # length - 1: CLS has no vector
    }
    axes = {name: axis for name, axis in axes.items() if name in (*TEXT_INPUTS, *outputs)}
    _export(graph, (input_ids, attention_mask), TEXT_INPUTS, outputs, axes, path, opset)
    return path


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantisation of the MatMul weights (activations are quantised per call, at run time).

    Choices, measured against torch on the tiny model (see tests/test_onnx.py):

    * unsigned int8 weights (u8 x u8 kernels): x86 CPUs without VNNI (AVX2 only) run u8 x s8 products through
      ``vpmaddubsw``, whose int16 sums saturate; with signed weights the tiny model's image vectors fell to
      cos 0.81 against torch on such a CPU, with unsigned ones they stay >= 0.999;
    * per-channel scales, for layers whose output channels differ a lot in range;
    * MatMul only: that is where the time goes. Embedding tables (``Gather``) stay float32: quantising them only
      saves disk and memory, and costs accuracy (a per-tensor scale over a whole vocabulary);
      ``Gemm`` (the projector) is not quantised by onnxruntime's dynamic mode anyway.
    """
    quantization = require("onnxruntime.quantization", "int8 export", "onnx")
    QuantType, quantize_dynamic = quantization.QuantType, quantization.quantize_dynamic  # noqa: N806
    _remove_graph(target)
    with _quiet_quantizer():
        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=list(INT8_OP_TYPES),
            weight_type=QuantType.QUInt8,
            per_channel=True,
            use_external_data_format=_has_external_data(source),
        )
    return target


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Drop onnxruntime's root-logger advice to run its pre-processing (it only matters for static quantisation)."""

    class _Advice(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing before quantization" not in record.getMessage()

    root, advice = logging.getLogger(), _Advice()
    root.addFilter(advice)
    try:
        yield
    finally:
        root.removeFilter(advice)


def _export(
    module: Any,
    args: tuple,
    input_names: Sequence[str],
    output_names: Sequence[str],
    axes: dict,
    path: Path,
    opset: int,
) -> None:
    """torch -> ONNX into a scratch folder, then saved as one file (plus one ``.data`` file when > 2 GB)."""
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch, torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter warns that it is legacy and about traced shape arithmetic; both are expected.
        warnings.simplefilter("ignore")
        draft = Path(scratch) / path.name
        with reraise_as(ExportError, f"ONNX export of {path.name} failed"):
            torch.onnx.export(
                module,
                args,
                str(draft),
                **_legacy_exporter(),
                opset_version=opset,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        _save_graph(draft, path)


def _legacy_exporter() -> dict[str, bool]:
    # torch >= 2.5 has both exporters (dynamo the default from 2.9); older releases have only the TorchScript one.
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def _save_graph(draft: Path, path: Path) -> None:
    onnx = require("onnx", "ONNX export", "onnx")

    model = onnx.load(str(draft))  # also reads any external-data files the exporter split a large graph into
    _remove_graph(path)
    size = sum(len(t.raw_data) for t in model.graph.initializer)
    if size < _EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(
            model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data"
        )


def _has_external_data(path: Path) -> bool:
    return path.with_name(path.name + ".data").exists()


def _remove_graph(path: Path) -> None:
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------- tracing
class _TraceableAttention(nn.Module):
    """``nn.MultiheadAttention`` (batch_first) rewritten with shape-agnostic ops, sharing the original weights.

    Traced as-is, ``nn.MultiheadAttention`` bakes the export batch size into reshapes; this computes the same
    function with only head count and head size as constants.
    """

    def __init__(self, attention: Any) -> None:
        super().__init__()
        if not (attention.batch_first and attention._qkv_same_embed_dim and attention.in_proj_bias is not None):
            raise ExportError("unsupported pooling-head attention layout for ONNX export")
        self.attention = attention
        self.heads = attention.num_heads
        self.head_dim = attention.embed_dim // attention.num_heads

    def _split(self, x: Any, index: int) -> Any:
        size = self.attention.embed_dim
        weight = self.attention.in_proj_weight[index * size : (index + 1) * size]
        bias = self.attention.in_proj_bias[index * size : (index + 1) * size]
        # (B, L, E) -> (B, heads, L, head_dim)
        return nn.functional.linear(x, weight, bias).unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def forward(self, query: Any, key: Any, value: Any, attn_mask: Any = None, **_: Any) -> tuple[Any, None]:
        q, k, v = self._split(query, 0), self._split(key, 1), self._split(value, 2)
        scores = q @ k.transpose(-1, -2) * (self.head_dim**-0.5)
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:  # nn.MultiheadAttention's boolean masks mean "not allowed"
                attn_mask = torch.zeros_like(attn_mask, dtype=scores.dtype).masked_fill(attn_mask, float("-inf"))
            # nn.MultiheadAttention's (B * heads, Lq, Lk) additive mask -> (B, heads, Lq, Lk).
            scores = scores + attn_mask.unflatten(0, (-1, self.heads))
        context = (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)
        return self.attention.out_proj(context), None


@contextlib.contextmanager
def _traceable_pooling_head(vision: Any) -> Iterator[None]:
    """Swap SigLIP's pooling-head attention for :class:`_TraceableAttention` while exporting, then restore it."""
    head = getattr(vision, "head", None) if getattr(vision, "use_head", False) else None
    if head is None:
        yield
        return
    original = head.attention
    head.attention = _TraceableAttention(original)
    try:
        yield
    finally:
        head.attention = original


def _write_info(out: Path, components: Components, opset: int, int8: bool) -> None:
    import transformers

    onnx = require("onnx", "ONNX export", "onnx")

    info = {
        "opset": opset,
        "int8": int8,
        "dim": int(components.config.dim),
        "projector_sha256": _projector_digest(out),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "vision_inputs": list(VISION_INPUTS),
        "text_inputs": list(TEXT_INPUTS),
        "output": OUTPUT_NAME,
        "text_outputs": [TEXT_OUTPUT_NAMES[output] for output in ("dense", *components.text_encoder.heads())],
        "text_heads_sha256": text_head_digests(components.text_encoder),
    }
    (out / ONNX_DIR / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


