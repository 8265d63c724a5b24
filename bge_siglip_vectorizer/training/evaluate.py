"""Retrieval recall@k for text->image and image->text, computed from vectors of the core encode path."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import Example

DEFAULT_KS = (1, 5, 10)


@dataclass
class RecallReport:
    text_to_image: dict[int, float] = field(default_factory=dict)
    image_to_text: dict[int, float] = field(default_factory=dict)
    n_images: int = 0
    n_texts: int = 0

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("text_to_image", "image_to_text"):
            data[key] = {f"R@{k}": v for k, v in data[key].items()}
        return data

    def table(self) -> str:
        ks = sorted(self.text_to_image)
        header = "direction      " + "".join(f"  R@{k:<5}" for k in ks)
        rows = [
            f"{name:<15}" + "".join(f"  {values[k]:<7.3f}" for k in ks)
            for name, values in (("text -> image", self.text_to_image), ("image -> text", self.image_to_text))
        ]
        return "\n".join([header, *rows, f"({self.n_texts} texts, {self.n_images} images)"])

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def recall_at_k(
    query_vectors: np.ndarray,
    candidate_vectors: np.ndarray,
    query_keys: Sequence[str],
    candidate_keys: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[int, float]:
    """Fraction of queries with a matching candidate (same key) among their top k."""
    scores = query_vectors @ candidate_vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")
    matches = np.asarray(candidate_keys, dtype=object)[order] == np.asarray(query_keys, dtype=object)[:, None]
    return {k: float(matches[:, :k].any(axis=1).mean()) for k in ks}


def unique_captions(examples: Sequence[Example]) -> tuple[list[str], list[str]]:
    """Distinct captions and the key (label or caption) each stands for."""
    keys: dict[str, str] = {}
    for example in examples:
        keys.setdefault(example.caption, example.key)
    return list(keys), list(keys.values())


def recall_report(
    image_vectors: np.ndarray, caption_vectors: np.ndarray, examples: Sequence[Example], ks: Sequence[int] = DEFAULT_KS
) -> RecallReport:
    """``image_vectors[i]`` is ``examples[i]``'s image; ``caption_vectors`` follow :func:`unique_captions`."""
    _, caption_keys = unique_captions(examples)
    image_keys = [example.key for example in examples]
    return RecallReport(
        text_to_image=recall_at_k(caption_vectors, image_vectors, caption_keys, image_keys, ks),
        image_to_text=recall_at_k(image_vectors, caption_vectors, image_keys, caption_keys, ks),
        n_images=len(examples),
        n_texts=len(caption_keys),
    )


def evaluate(vectorizer, examples: Sequence[Example], batch_size: int = 32, show_progress: bool | None = None) -> RecallReport:
    """Recall@1/5/10 of a Vectorizer on held-out examples (any image of the same label/caption counts as a hit)."""
    captions, _ = unique_captions(examples)
    image_vectors = vectorizer.encode_images([e.image for e in examples], batch_size=batch_size, show_progress=show_progress)
    caption_vectors = vectorizer.encode_texts(captions, batch_size=batch_size, show_progress=show_progress)
    return recall_report(image_vectors, caption_vectors, examples)
