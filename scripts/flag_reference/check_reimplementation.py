"""Independent re-computation of BGE-M3's three outputs with plain transformers (5.x) + torch, compared with the
FlagEmbedding reference. Run with the project venv, from the repo root:
    .venv/bin/python scripts/flag_reference/check_reimplementation.py [reference.json]
"""
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

REPO = Path(__file__).resolve().parents[2]
REF = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "tests" / "data" / "bge_m3_reference.json").read_text())
TOWER = REPO / REF["tower_dir"]
MAX_LENGTH = REF["encode_args"]["max_length"]

tokenizer = AutoTokenizer.from_pretrained(TOWER)
model = AutoModel.from_pretrained(TOWER, add_pooling_layer=False).eval()
hidden = model.config.hidden_size
sparse_linear, colbert_linear = torch.nn.Linear(hidden, 1), torch.nn.Linear(hidden, hidden)
sparse_linear.load_state_dict(torch.load(TOWER / "sparse_linear.pt", weights_only=True))
colbert_linear.load_state_dict(torch.load(TOWER / "colbert_linear.pt", weights_only=True))
UNUSED = {tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}


@torch.no_grad()
def encode(texts):
    """Right-padded batch -> (dense [B,H], list of {str id: weight}, list of [n-1, H] colbert)."""
    enc = tokenizer(texts, truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    h = model(input_ids=ids, attention_mask=mask).last_hidden_state
    dense = F.normalize(h[:, 0], dim=-1)                                     # CLS, L2
    weights = torch.relu(sparse_linear(h)).squeeze(-1)                        # [B, T]
    colbert = F.normalize(colbert_linear(h[:, 1:]) * mask[:, 1:, None].float(), dim=-1)
    lexical, multi = [], []
    for b in range(len(texts)):
        lw = {}
        for w, i in zip(weights[b].tolist(), ids[b].tolist()):
            if i not in UNUSED and w > 0 and w > lw.get(str(i), 0):
                lw[str(i)] = w
        lexical.append(lw)
        multi.append(colbert[b, : int(mask[b].sum()) - 1])                   # drops CLS, keeps final </s>
    return dense, lexical, multi, ids, mask


def compare(label, batches):
    """batches: lists of indices into REF["items"]."""
    items = REF["items"]
    d_max = s_max = c_max = 0.0
    problems = []
    for batch in batches:
        dense, lexical, multi, ids, mask = encode([items[i]["text"] for i in batch])
        for b, k in enumerate(batch):
            it = items[k]
            n = int(mask[b].sum())
            if ids[b, :n].tolist() != it["input_ids"]:
                problems.append(f"{it['name']}: input_ids differ")
            d_max = max(d_max, (dense[b] - torch.tensor(it["dense"])).abs().max().item())
            ref_lw = it["lexical_weights"]
            if set(ref_lw) != set(lexical[b]):
                problems.append(f"{it['name']}: token sets differ: only ref {set(ref_lw) - set(lexical[b])}, "
                                f"only ours {set(lexical[b]) - set(ref_lw)}")
            if list(ref_lw) != list(lexical[b]):
                problems.append(f"{it['name']}: key order differs")
            for key in set(ref_lw) | set(lexical[b]):
                s_max = max(s_max, abs(ref_lw.get(key, 0.0) - lexical[b].get(key, 0.0)))
            ref_c = torch.tensor(it["colbert_vecs"]).reshape(-1, hidden)
            if ref_c.shape != multi[b].shape:
                problems.append(f"{it['name']}: colbert shape {tuple(multi[b].shape)} vs ref {tuple(ref_c.shape)}")
            else:
                c_max = max(c_max, (multi[b] - ref_c).abs().max().item() if ref_c.numel() else 0.0)
    print(f"{label}: max|dense diff|={d_max:.3g}  max|sparse diff|={s_max:.3g}  max|colbert diff|={c_max:.3g}  "
          f"problems={problems or 'none'}")
    return max(d_max, s_max, c_max), problems


texts = [it["text"] for it in REF["items"]]
# Tokenizer sanity: the project's build_tokenizer() gives the same ids as the saved tower tokenizer.
try:
    from bge_siglip_vectorizer.testing.tiny import build_tokenizer
    fresh = build_tokenizer()
    same = all(fresh(t, truncation=True, max_length=MAX_LENGTH)["input_ids"] == it["input_ids"]
               for t, it in zip(texts, REF["items"]))
    print("build_tokenizer() ids == reference ids:", same)
except ImportError as e:
    print("(package not importable right now, skipped build_tokenizer check:", e, ")")

# FlagEmbedding's own batching: sort by tokenized length, descending (stable argsort of -len), then chunks of
# batch_size; the reference was made with batch_size=%d.
bs = REF["encode_args"]["batch_size"]
order = sorted(range(len(texts)), key=lambda i: -len(REF["items"][i]["input_ids"]))
worst = 0.0
for label, batches in [("FlagEmbedding-style batches (length-sorted, batch_size=%d)" % bs,
                        [order[i:i + bs] for i in range(0, len(order), bs)]),
                       ("one text at a time (no padding)", [[i] for i in range(len(texts))]),
                       ("all texts in one right-padded batch", [list(range(len(texts)))])]:
    m, problems = compare(label, batches)
    worst = max(worst, m)
print("worst max abs diff:", worst, "PASS" if worst <= 1e-5 else "ABOVE 1e-5")
