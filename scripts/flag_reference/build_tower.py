"""Build the tiny BGE-M3-shaped text tower the parity tests use (tests/data/bge-m3-tiny); run with the project venv:
    .venv/bin/python scripts/flag_reference/build_tower.py [out_dir]

Layout matches the BAAI/bge-m3 hub repo: HF XLMRobertaModel (no pooler) + tokenizer at the root,
plus sparse_linear.pt (Linear(hidden, 1) state_dict) and colbert_linear.pt (Linear(hidden, hidden) state_dict).
The output is byte-reproducible (same torch/transformers/tokenizers): compare with tower_sha256 in the reference.
"""
import json
import sys
from pathlib import Path

import torch
from transformers import XLMRobertaConfig, XLMRobertaModel

from bge_siglip_vectorizer.testing.tiny import build_tokenizer

REPO = Path(__file__).resolve().parents[2]
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "tests" / "data" / "bge-m3-tiny"
HIDDEN = 32

tokenizer = build_tokenizer(model_max_length=512)
torch.manual_seed(0)
model = XLMRobertaModel(
    XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=514,
        type_vocab_size=1,
        initializer_range=0.5,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    ),
    add_pooling_layer=False,
).eval()

# Heads, drawn after the encoder from the same seeded stream (nn.Linear default kaiming-uniform init).
sparse_linear = torch.nn.Linear(HIDDEN, 1)
colbert_linear = torch.nn.Linear(HIDDEN, HIDDEN)
with torch.no_grad():
    # Keep sparse_linear's default-init weight but replace its bias with +0.25. The encoder ends in a LayerNorm, so
    # the default-init logit w.h is roughly centred on 0 (its median over the reference texts is ~0.0, quartiles
    # about -0.18 / +0.21); a +0.25 bias makes most tokens (62 of the 79 distinct non-special token ids in the
    # reference texts) get relu(w.h + b) > 0 while some, and whole texts, get exactly 0, so FlagEmbedding's
    # "weight > 0" filter and its "max per token id" rule both matter. Weights come out in ~0..0.8, like the
    # real BGE-M3's lexical weights, which keeps float32 noise small in absolute terms.
    sparse_linear.bias.fill_(0.25)

OUT.mkdir(parents=True, exist_ok=True)
model.save_pretrained(OUT)
tokenizer.save_pretrained(OUT)
# transformers 5 writes tokenizer_class "TokenizersBackend", which transformers 4.x (needed by FlagEmbedding 1.4.2)
# cannot resolve. Write what the BAAI/bge-m3 hub repo has ("XLMRobertaTokenizer"): transformers 4 then loads
# XLMRobertaTokenizerFast from tokenizer.json, transformers 5 loads XLMRobertaTokenizer from tokenizer.json; both
# give the same ids as build_tokenizer() (checked in check_reimplementation.py).
cfg_path = OUT / "tokenizer_config.json"
cfg = json.loads(cfg_path.read_text())
cfg.pop("backend", None)
cfg["tokenizer_class"] = "XLMRobertaTokenizer"
cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
torch.save(sparse_linear.state_dict(), OUT / "sparse_linear.pt")
torch.save(colbert_linear.state_dict(), OUT / "colbert_linear.pt")
print("saved", OUT, sorted(p.name for p in OUT.iterdir()))
