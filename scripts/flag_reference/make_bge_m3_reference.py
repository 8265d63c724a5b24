"""Reference outputs of the real FlagEmbedding BGEM3FlagModel on the tiny tower in ./tower.

Run with a throwaway venv holding FlagEmbedding 1.4.2 + transformers 4.57.x (see README.md here), from the repo root:
    /path/to/throwaway-venv/bin/python scripts/flag_reference/make_bge_m3_reference.py [tower_dir] [out_json]
Writes reference.json: per text the token ids, dense vector, lexical weights (exactly FlagEmbedding's dict:
str token id -> weight) and ColBERT vectors, from encode(..., batch_size=4, max_length=32); plus the
max abs differences against batch_size=1 and batch_size=256 runs, and against use_fp16=True on CPU.
"""
import hashlib
import json
import logging
import platform
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
TOWER = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "data" / "bge-m3-tiny"
OUT = Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "tests" / "data" / "bge_m3_reference.json"

LONG = " ".join([
    "a photo of a dog on the beach", "a red circle on a white background", "ein blaues Quadrat oben links",
    "un triangle vert en bas à droite", "un perro corriendo en el parque", "the quick brown fox jumps over the lazy dog",
])
TEXTS = {
    "english": "a photo of a dog on the beach",
    "german": "ein Hund am Strand",
    "french": "un chat noir sur un canapé",
    "spanish": "un perro corriendo en el parque",
    "russian": "кошка спит на окне",
    "greek": "γάτα στο παράθυρο",
    "chinese": "海滩上的一只狗",
    "japanese": "赤い丸と青い四角",
    "arabic": "قطة على النافذة",
    "hindi": "समुद्र तट पर एक कुत्ता",
    "repeated_words": "dog dog the dog on the beach the dog a dog",
    "very_short": "a",
    "long_truncated": LONG,
    "product_code": "model X-9000 0123456789",
    "empty": "",
}
MAX_LENGTH = 32
MAIN_BATCH = 4


def _relative(path):
    """The tower's path relative to the repository (no machine path in committed outputs)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return path.name


def load(use_fp16=False):
    from FlagEmbedding import BGEM3FlagModel
    return BGEM3FlagModel(str(TOWER), use_fp16=use_fp16, devices="cpu")


def run(model, texts, batch_size):
    return model.encode(texts, batch_size=batch_size, max_length=MAX_LENGTH,
                        return_dense=True, return_sparse=True, return_colbert_vecs=True)


def max_diff(a, b):
    d = float(np.max(np.abs(a["dense_vecs"] - b["dense_vecs"])))
    c = max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a["colbert_vecs"], b["colbert_vecs"]))
    s, keys_equal = 0.0, True
    for x, y in zip(a["lexical_weights"], b["lexical_weights"]):
        keys_equal &= set(x) == set(y)
        for k in set(x) | set(y):
            s = max(s, abs(float(x.get(k, 0.0)) - float(y.get(k, 0.0))))
    shapes_equal = all(x.shape == y.shape for x, y in zip(a["colbert_vecs"], b["colbert_vecs"]))
    return {"dense": d, "sparse": s, "colbert": c, "sparse_keys_equal": bool(keys_equal),
            "colbert_shapes_equal": bool(shapes_equal)}


def main():
    torch.manual_seed(0)
    names, texts = list(TEXTS), list(TEXTS.values())
    model = load(use_fp16=False)

    # Sanity: every tensor of model.safetensors was loaded (no silently re-initialised encoder weights),
    # and the heads equal the saved .pt files.
    saved = load_file(str(TOWER / "model.safetensors"))
    live = model.model.model.state_dict()
    # AutoModel builds XLMRobertaModel *with* a pooler; the tower has none (add_pooling_layer=False), so the pooler
    # is randomly initialised. FlagEmbedding never uses pooler_output (only last_hidden_state), so that is harmless.
    missing = [k for k in live if k not in saved and not k.startswith("pooler.")]
    assert not missing, f"encoder keys not in model.safetensors: {missing}"
    assert all(torch.equal(live[k], saved[k]) for k in live if k in saved)
    for head in ("sparse_linear", "colbert_linear"):
        sd = torch.load(TOWER / f"{head}.pt", weights_only=True)
        assert all(torch.equal(getattr(model.model, head).state_dict()[k], v) for k, v in sd.items()), head

    tok = model.tokenizer(texts, truncation=True, max_length=MAX_LENGTH)
    main_out = run(model, texts, MAIN_BATCH)
    out_bs1 = run(model, texts, 1)
    out_bs256 = run(model, texts, 256)
    model_fp16 = load(use_fp16=True)
    out_fp16 = run(model_fp16, texts, MAIN_BATCH)

    lw0 = main_out["lexical_weights"][0]
    first_val = next(iter(lw0.values())) if lw0 else None
    returned_types = {
        "dense_vecs": f"{type(main_out['dense_vecs']).__name__} dtype={main_out['dense_vecs'].dtype} "
                      f"shape={list(main_out['dense_vecs'].shape)}",
        "lexical_weights": f"list of {type(lw0).__module__}.{type(lw0).__name__}; keys "
                           f"{type(next(iter(lw0))).__name__}; values {type(first_val).__module__}."
                           f"{type(first_val).__name__}",
        "colbert_vecs": f"list of {type(main_out['colbert_vecs'][0]).__name__} "
                        f"dtype={main_out['colbert_vecs'][0].dtype}, shape (n_tokens-1, dim)",
    }

    items = []
    for i, (name, text) in enumerate(zip(names, texts)):
        ids = tok["input_ids"][i]
        items.append({
            "name": name,
            "text": text,
            "input_ids": ids,
            "tokens": model.tokenizer.convert_ids_to_tokens(ids),
            "dense": [float(x) for x in main_out["dense_vecs"][i]],
            "lexical_weights": {k: float(v) for k, v in main_out["lexical_weights"][i].items()},
            "colbert_vecs": [[float(x) for x in row] for row in main_out["colbert_vecs"][i]],
        })

    tk = model.tokenizer
    result = {
        "description": "FlagEmbedding BGEM3FlagModel.encode reference outputs on a tiny random BGE-M3-shaped tower "
                       "(weights carry no meaning). Main outputs use batch_size=%d." % MAIN_BATCH,
        "tower_dir": _relative(TOWER),
        "tower_sha256": {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(TOWER.iterdir())},
        "versions": {p: version(p) for p in ("FlagEmbedding", "transformers", "torch", "tokenizers", "numpy",
                                            "sentence-transformers", "peft", "accelerate", "datasets")}
                    | {"python": platform.python_version()},
        "constructor_args": {"model_name_or_path": "<tower_dir>", "use_fp16": False, "devices": "cpu"},
        "encode_args": {"batch_size": MAIN_BATCH, "max_length": MAX_LENGTH, "return_dense": True,
                        "return_sparse": True, "return_colbert_vecs": True},
        "tokenizer": {"class": type(tk).__name__, "padding_side": tk.padding_side,
                      "truncation_side": tk.truncation_side, "special_tokens_map": tk.special_tokens_map,
                      "cls_token_id": tk.cls_token_id, "eos_token_id": tk.eos_token_id,
                      "pad_token_id": tk.pad_token_id, "unk_token_id": tk.unk_token_id},
        "returned_types": returned_types,
        "batch_size_consistency_max_abs_diff": {
            "bs4_vs_bs1": max_diff(main_out, out_bs1),
            "bs4_vs_bs256": max_diff(main_out, out_bs256),
        },
        "use_fp16_true_on_cpu_vs_fp32_max_abs_diff": max_diff(main_out, out_fp16),
        "items": items,
    }
    OUT.write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("versions", "returned_types", "batch_size_consistency_max_abs_diff",
                                              "use_fp16_true_on_cpu_vs_fp32_max_abs_diff")}, indent=1))
    for it in items:
        print(it["name"], len(it["input_ids"]), "sparse:", len(it["lexical_weights"]), "colbert:",
              len(it["colbert_vecs"]))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
