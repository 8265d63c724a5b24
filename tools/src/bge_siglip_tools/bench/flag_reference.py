"""FlagEmbedding's BGE-M3 dense encoding: the real ``BGEM3FlagModel`` when it imports, else a faithful copy.

FlagEmbedding 1.4.2 (the current release) cannot be imported next to transformers 5: ``FlagEmbedding/__init__``
imports every inference class, among them the MiniCPM layer-wise reranker whose model file imports
``transformers.modeling_attn_mask_utils`` (removed in transformers 5), and the M3 embedder itself imports the
fine-tuning modules, which need ``datasets`` (pyarrow, pandas, ...) at import time. :func:`load` tries the real
class first and records why it failed; :class:`FlagDenseReimplementation` is then the comparison, line for line
the dense path of ``M3Embedder.encode_single_device`` (FlagEmbedding 1.4.2):

* pre-tokenise in chunks of ``batch_size`` with ``truncation=True, max_length=max_length``, no padding;
* sort by token count, longest first (``np.argsort(-len)``);
* one trial forward of the first (longest) batch, kept from FlagEmbedding's "adjust batch size" loop, which runs
  it before encoding to find a batch size that fits in memory; its output is thrown away;
* per batch: ``tokenizer.pad(..., padding=True, return_tensors="pt")``, the model's ``last_hidden_state[:, 0]``
  (CLS), ``F.normalize``, to numpy; concatenate and undo the sort.

Model and tokenizer are loaded with ``AutoModel`` / ``AutoTokenizer`` from the same directory and run under
``torch.no_grad``: in float32 on CPU, and in float16 on a GPU (``use_fp16=True``, FlagEmbedding's default there).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np


class FlagDenseReimplementation:
    """The dense path of ``BGEM3FlagModel.encode(..., return_dense=True)``, re-implemented (see module docstring)."""

    label = "FlagEmbedding dense path (re-implemented)"

    def __init__(self, model_dir: str, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from bge_siglip_vectorizer.loading import quiet_transformers

        self.device = torch.device(device)
        dtype = torch.float32 if self.device.type == "cpu" else torch.float16
        with quiet_transformers():
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
            self.model = AutoModel.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.trial_seconds: list[float] = []  # time of each call's trial forward, reported separately

    def encode(self, sentences: list[str], batch_size: int = 256, max_length: int = 8192) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        with torch.no_grad():
            all_inputs: list[dict[str, Any]] = []
            for start in range(0, len(sentences), batch_size):
                chunk = sentences[start : start + batch_size]
                inputs = self.tokenizer(chunk, truncation=True, max_length=max_length)
                all_inputs.extend({k: inputs[k][i] for k in inputs.keys()} for i in range(len(chunk)))
            order = np.argsort([-len(x["input_ids"]) for x in all_inputs])
            ordered = [all_inputs[i] for i in order]

            def forward(batch: list[dict[str, Any]]):
                padded = self.tokenizer.pad(
                    {k: [example[k] for example in batch] for k in batch[0].keys()}, padding=True, return_tensors="pt"
                )
                padded = {k: v.to(self.device) for k, v in padded.items()}
                hidden = self.model(**padded, return_dict=True).last_hidden_state
                return F.normalize(hidden[:, 0], dim=-1)

            started = time.perf_counter()
            forward(ordered[:batch_size])  # FlagEmbedding's batch-size trial run
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # time the trial itself, not just its kernel launches
            self.trial_seconds.append(time.perf_counter() - started)
            vectors = [forward(ordered[s : s + batch_size]).float().cpu().numpy()
                       for s in range(0, len(ordered), batch_size)]
        return np.concatenate(vectors)[np.argsort(order)]


class RealFlagModel:
    """``FlagEmbedding.BGEM3FlagModel`` itself (used when it imports)."""

    label = "FlagEmbedding BGEM3FlagModel.encode"

    def __init__(self, model_dir: str, device: str = "cpu") -> None:
        from FlagEmbedding import BGEM3FlagModel

        from .context import is_gpu

        self.model = BGEM3FlagModel(model_dir, use_fp16=is_gpu(device), devices=device)
        self.trial_seconds: list[float] = []  # not separable from the real implementation

    def encode(self, sentences: list[str], batch_size: int = 256, max_length: int = 8192) -> np.ndarray:
        out = self.model.encode(sentences, batch_size=batch_size, max_length=max_length, return_dense=True,
                                return_sparse=False, return_colbert_vecs=False)
        return np.asarray(out["dense_vecs"], dtype=np.float32)


def load(model_dir: str, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """The real FlagEmbedding model if it can be imported, else the re-implementation; plus what happened."""
    try:
        import FlagEmbedding  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure: report it and fall back
        try:
            from importlib.metadata import version

            installed = version("FlagEmbedding")
        except Exception:  # noqa: BLE001
            installed = None
        return FlagDenseReimplementation(model_dir, device), {
            "implementation": "re-implementation",
            "flagembedding_installed": installed,
            "import_error": f"{type(exc).__name__}: {exc}",
            "blockers": blockers(),
        }
    return RealFlagModel(model_dir, device), {"implementation": "FlagEmbedding", "import_error": None}


def blockers() -> list[str]:
    """What in this environment stops ``import FlagEmbedding`` (1.4.2), checked one by one."""
    import importlib

    import transformers

    found = []
    for module, why in (
        ("transformers.modeling_attn_mask_utils", f"removed in transformers {transformers.__version__}; imported by "
         "FlagEmbedding's MiniCPM reranker, which FlagEmbedding/__init__ imports"),
        ("datasets", "imported by FlagEmbedding's fine-tuning modules, which its M3 embedder imports"),
        ("peft", "imported by FlagEmbedding's decoder-only embedders and rerankers (package __init__)"),
    ):
        try:
            importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001
            found.append(f"{module}: {type(exc).__name__} ({why})")
    return found
