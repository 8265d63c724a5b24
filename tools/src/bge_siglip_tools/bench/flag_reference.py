"""FlagEmbedding's BGE-M3 encoding: the real ``BGEM3FlagModel`` when it imports, else a faithful copy.

FlagEmbedding 1.4.2 (the current release) cannot be imported next to transformers 5: ``FlagEmbedding/__init__``
imports every inference class, among them the MiniCPM layer-wise reranker whose model file imports
``transformers.modeling_attn_mask_utils`` (removed in transformers 5), and the M3 embedder itself imports the
fine-tuning modules, which need ``datasets`` (pyarrow, pandas, ...) at import time. :func:`load` tries the real
class first and records why it failed; :class:`FlagM3Reimplementation` is then the comparison, line for line
``M3Embedder.encode_single_device`` (FlagEmbedding 1.4.2; the semantics, with file:line citations, are in
``scripts/flag_reference/NOTES.md``):

* pre-tokenise in chunks of ``batch_size`` with ``truncation=True, max_length=max_length``, no padding;
* sort by token count, longest first (``np.argsort(-len)``);
* one trial forward of the first (longest) batch with the asked-for outputs, kept from FlagEmbedding's "adjust
  batch size" loop, which runs it before encoding to find a batch size that fits in memory; its output is thrown
  away;
* per batch: ``tokenizer.pad(..., padding=True, return_tensors="pt")``, the model's ``last_hidden_state``, and
  from it: dense = ``F.normalize(h[:, 0])``; sparse = ``relu(sparse_linear(h))`` per token, then per text a
  ``defaultdict`` ``{str(token_id): max weight}`` over the tokens that are not CLS/EOS/PAD/UNK and weigh > 0;
  ColBERT = ``F.normalize(colbert_linear(h[:, 1:]) * mask[:, 1:])``, then per text its first ``mask.sum() - 1``
  rows; concatenate and undo the sort.

Model, tokenizer and heads (``sparse_linear.pt``, ``colbert_linear.pt``, loaded with ``weights_only=True`` as
FlagEmbedding does) come from the same directory, and run under ``torch.no_grad``: in float32 on CPU, and in float16
on a GPU (``use_fp16=True``, FlagEmbedding's default there). ``tools/tests/test_flag_reference.py`` checks this copy
against the real library's outputs (``tests/data/bge_m3_reference.json``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


class FlagM3Reimplementation:
    """``BGEM3FlagModel.encode(...)`` for dense, sparse and ColBERT outputs, re-implemented (see module docstring).

    Returns what FlagEmbedding returns: ``{"dense_vecs": (n, dim) array, "lexical_weights": [defaultdict {str id:
    np.float32}], "colbert_vecs": [(tokens - 1, d) arrays]}``, ``None`` for an output not asked for.
    """

    label = "FlagEmbedding M3 path (re-implemented)"

    def __init__(self, model_dir: str, device: str = "cpu") -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from bge_siglip_vectorizer.loading import quiet_transformers

        self.device = torch.device(device)
        dtype = torch.float32 if self.device.type == "cpu" else torch.float16
        with quiet_transformers():
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
            self.model = AutoModel.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        hidden = self.model.config.hidden_size
        # FlagEmbedding keeps both heads randomly initialised unless both files exist; a benchmark must not.
        self.sparse_linear = self._head(Path(model_dir) / "sparse_linear.pt", hidden, dtype)
        self.colbert_linear = self._head(Path(model_dir) / "colbert_linear.pt", hidden, dtype)
        special = self.tokenizer.special_tokens_map
        self.unused_tokens = {self.tokenizer.convert_tokens_to_ids(special[name])
                              for name in ("cls_token", "eos_token", "pad_token", "unk_token") if name in special}
        self.last_trial_seconds: float | None = None  # the latest call's trial forward, reported separately

    def _head(self, path: Path, hidden: int, dtype: Any):
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        layer = torch.nn.Linear(hidden, state["weight"].shape[0], dtype=dtype)
        layer.load_state_dict(state)
        return layer.to(self.device).eval()

    def encode(self, sentences: list[str], batch_size: int = 256, max_length: int = 8192, return_dense: bool = True,
               return_sparse: bool = False, return_colbert_vecs: bool = False) -> dict[str, Any]:
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
                out = {}
                if return_dense:
                    out["dense"] = F.normalize(hidden[:, 0], dim=-1)
                if return_sparse:
                    out["sparse"] = torch.relu(self.sparse_linear(hidden)).squeeze(-1)
                if return_colbert_vecs:
                    colbert = self.colbert_linear(hidden[:, 1:]) * padded["attention_mask"][:, 1:][:, :, None].float()
                    out["colbert"] = F.normalize(colbert, dim=-1)
                return out, padded

            started = time.perf_counter()
            forward(ordered[:batch_size])  # FlagEmbedding's batch-size trial run
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # time the trial itself, not just its kernel launches
            self.last_trial_seconds = time.perf_counter() - started
            dense, lexical, colbert = [], [], []
            for start in range(0, len(ordered), batch_size):
                out, padded = forward(ordered[start : start + batch_size])
                if return_dense:
                    dense.append(out["dense"].float().cpu().numpy())
                if return_sparse:
                    lexical.extend(map(self._token_weights, out["sparse"].float().cpu().numpy(),
                                       padded["input_ids"].cpu().numpy().tolist()))
                if return_colbert_vecs:
                    colbert.extend(vecs[: int(mask.sum()) - 1] for vecs, mask in
                                   zip(out["colbert"].float().cpu().numpy(), padded["attention_mask"].cpu().numpy()))
        restore = np.argsort(order)
        return {
            "dense_vecs": np.concatenate(dense)[restore] if return_dense else None,
            "lexical_weights": [lexical[i] for i in restore] if return_sparse else None,
            "colbert_vecs": [colbert[i] for i in restore] if return_colbert_vecs else None,
        }

    def _token_weights(self, weights: np.ndarray, input_ids: list[int]) -> defaultdict:
        """``M3Embedder._process_token_weights``."""
        result: defaultdict = defaultdict(int)
        for weight, token in zip(weights, input_ids):
            if token not in self.unused_tokens and weight > 0:
                key = str(token)
                if weight > result[key]:
                    result[key] = weight
        return result


class RealFlagModel:
    """``FlagEmbedding.BGEM3FlagModel`` itself (used when it imports)."""

    label = "FlagEmbedding BGEM3FlagModel.encode"

    def __init__(self, model_dir: str, device: str = "cpu") -> None:
        from FlagEmbedding import BGEM3FlagModel

        from .context import is_gpu

        self.model = BGEM3FlagModel(model_dir, use_fp16=is_gpu(device), devices=device)
        self.last_trial_seconds: float | None = None  # not separable from the real implementation

    def encode(self, sentences: list[str], batch_size: int = 256, max_length: int = 8192, return_dense: bool = True,
               return_sparse: bool = False, return_colbert_vecs: bool = False) -> dict[str, Any]:
        out = self.model.encode(sentences, batch_size=batch_size, max_length=max_length, return_dense=return_dense,
                                return_sparse=return_sparse, return_colbert_vecs=return_colbert_vecs)
        if return_dense:
            out["dense_vecs"] = np.asarray(out["dense_vecs"], dtype=np.float32)
        return out


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
        return FlagM3Reimplementation(model_dir, device), {
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
