"""The models the benchmark runs: real architectures built from their configs with random weights, cached on disk.

Speed does not depend on weight values, so a random So400m/16 NaFlex vision tower and a random XLM-R-large
(BGE-M3) text tower, with BGE-M3's sparse (Linear(1024, 1)) and ColBERT (Linear(1024, 1024)) heads, time exactly
like the published ones. The tokenizer is a SentencePiece-style BPE trained offline
on the benchmark's multilingual sentences, tuned so token counts resemble XLM-R's, without the hub.
Everything is written by the package's own ``save_components``, i.e. it is a normal model directory.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .common import log
from .data import corpus

# google/siglip2-so400m-patch16-naflex vision config.
SO400M_VISION: dict[str, Any] = {
    "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
    "patch_size": 16, "num_patches": 256, "num_channels": 3, "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}
# BAAI/bge-m3 (XLM-RoBERTa-large, 8192 positions) text config.
BGE_M3_TEXT: dict[str, Any] = {
    "vocab_size": 250002, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
    "intermediate_size": 4096, "max_position_embeddings": 8194, "type_vocab_size": 1, "layer_norm_eps": 1e-5,
    "hidden_act": "gelu",
}
_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids 0..3 (+ mask)
_MARKER = ".bench-complete"


@dataclass(frozen=True)
class ModelSpec:
    name: str  # cache folder name; bump the suffix when the recipe changes
    vision: dict[str, Any]
    text: dict[str, Any]
    description: str
    seed: int = 0


REAL = ModelSpec(
    name="so400m16-naflex_xlmr-large_random-v2",  # v2: the text tower has BGE-M3's heads
    vision=SO400M_VISION,
    text=BGE_M3_TEXT,
    description="SigLIP-2 So400m/16 NaFlex vision tower + XLM-R-large (BGE-M3) text tower with its sparse and "
                "ColBERT heads, random weights",
)
QUICK = ModelSpec(
    name="quick-v2",
    vision={**SO400M_VISION, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 2},
    text={**BGE_M3_TEXT, "vocab_size": 0, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 2, "max_position_embeddings": 514},
    description="--quick: the same architectures with 2 layers and width 64 (harness check, not a speed claim)",
)


def train_tokenizer(model_max_length: int):
    """A SentencePiece-style BPE tokenizer with XLM-R's special tokens and template, trained on :func:`corpus`.

    Tuned so token counts resemble XLM-R's on the benchmark texts (a few KB cannot train XLM-R's 250k pieces):
    pieces of at most 6 characters (whole short words, longer words in 2-3 pieces) and CJK text cut into runs of
    at most 2 characters before merging (SentencePiece gives CJK 1-3 character pieces; a space-split pre-tokenizer
    would otherwise turn a whole Chinese sentence into one token). The measured tokens per text are reported.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(),
        pre_tokenizers.Split(Regex(r"[\p{Han}\p{Hiragana}\p{Katakana}]{1,2}"), behavior="isolated"),
    ])
    tokenizer.decoder = decoders.Metaspace()
    # Asks for more pieces than a few KB can give: the trainer stops at what the text supports.
    trainer = trainers.BpeTrainer(vocab_size=32000, special_tokens=_SPECIAL_TOKENS, max_token_length=6,
                                  show_progress=False)
    tokenizer.train_from_iterator(corpus(), trainer)
    ids = [tokenizer.token_to_id(token) for token in _SPECIAL_TOKENS]
    if ids != list(range(len(_SPECIAL_TOKENS))):
        raise RuntimeError(f"special tokens got ids {ids}, expected 0..{len(ids) - 1}")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        mask_token="<mask>", cls_token="<s>", sep_token="</s>", model_max_length=model_max_length,
        model_input_names=["input_ids", "attention_mask"],  # XLM-R's tokenizer returns no token_type_ids
    )


def build_model(directory: Path, spec: ModelSpec) -> dict[str, Any]:
    """Build ``spec`` with random weights and save it as a model directory; returns what was built."""
    from bge_siglip_vectorizer.testing import make_random_model

    started = time.perf_counter()
    tokenizer = train_tokenizer(spec.text["max_position_embeddings"] - 2)  # RoBERTa positions start after padding
    scratch = directory.with_name(directory.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    make_random_model(scratch, vision_config=spec.vision, text_config=spec.text, tokenizer=tokenizer, seed=spec.seed)
    info = {
        "spec": asdict(spec),
        "vision_parameters": _parameter_count(scratch / "vision" / "model.safetensors"),
        "text_parameters": _parameter_count(scratch / "text" / "model.safetensors"),
        "tokenizer_vocab": len(tokenizer),
        "build_seconds": round(time.perf_counter() - started, 1),
    }
    (scratch / _MARKER).write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    scratch.rename(directory)
    return info


def _parameter_count(path: Path) -> int:
    """Parameters in a safetensors file, read from its header (no weights loaded)."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as weights:
        return sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())


def ensure_model(cache_dir: Path, spec: ModelSpec) -> tuple[Path, dict[str, Any]]:
    """The cached model directory for ``spec``, built on first use."""
    directory = cache_dir / spec.name
    marker = directory / _MARKER
    if marker.is_file():
        info = json.loads(marker.read_text())
        info["cached"] = True
        return directory, info
    log(f"building {spec.description} into {directory} (once; later runs reuse it)")
    info = build_model(directory, spec)
    info["cached"] = False
    log(f"built in {info['build_seconds']} s")
    return directory, info


def ensure_onnx(model_dir: Path, in_process: bool) -> dict[str, Any]:
    """Export fp32 and int8 ONNX graphs into ``model_dir/onnx`` once. The real-size export runs in a child process,
    so its peak memory (both towers traced, a 2 GB graph re-serialised) is given back before the timings."""
    marker = model_dir / "onnx" / _MARKER
    if marker.is_file():
        return {**json.loads(marker.read_text()), "cached": True}
    log(f"exporting ONNX fp32 + int8 graphs into {model_dir / 'onnx'} (once)")
    started = time.perf_counter()
    if in_process:
        from bge_siglip_vectorizer.export import export_onnx

        export_onnx(model_dir, model_dir, int8=True)
    else:
        code = ("import sys; from bge_siglip_vectorizer.export import export_onnx; "
                "export_onnx(sys.argv[1], sys.argv[1], int8=True)")
        subprocess.run([sys.executable, "-c", code, str(model_dir)], check=True)
    info = {"export_seconds": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps(info) + "\n")
    log(f"exported in {info['export_seconds']} s")
    return {**info, "cached": False}
