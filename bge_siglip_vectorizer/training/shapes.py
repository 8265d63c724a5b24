"""Synthetic captioned images: coloured shapes at varied positions and sizes, captioned in four languages.

For tests and the offline demo: a model trained on these through the real ``train`` path must learn to find
"ein roter Kreis" among blue squares. Each row carries a ``label`` (colour + shape) so evaluation counts any image of
the right kind as a hit.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {
    "red": ((215, 35, 35), {"de": "rot", "fr": "rouge", "es": "rojo"}),
    "green": ((35, 165, 55), {"de": "grün", "fr": "vert", "es": "verde"}),
    "blue": ((35, 70, 215), {"de": "blau", "fr": "bleu", "es": "azul"}),
    "yellow": ((235, 200, 25), {"de": "gelb", "fr": "jaune", "es": "amarillo"}),
}
SHAPES = {
    "circle": {"de": "Kreis", "fr": "cercle", "es": "círculo"},
    "square": {"de": "Quadrat", "fr": "carré", "es": "cuadrado"},
    "triangle": {"de": "Dreieck", "fr": "triangle", "es": "triángulo"},
}
# Phrasings that avoid adjective inflection, so every colour fits every shape grammatically.
TEMPLATES = {
    "en": ["a {color} {shape}", "a photo of a {color} {shape}", "{color} {shape} on a plain background"],
    "de": ["ein {shape} in {color}", "ein Bild: {shape}, Farbe {color}"],
    "fr": ["un {shape} de couleur {color}", "une image d'un {shape} {color}"],
    "es": ["un {shape} de color {color}", "una foto de un {shape} {color}"],
}
LANGUAGES = tuple(TEMPLATES)


def caption(color: str, shape: str, language: str = "en", variant: int = 0) -> str:
    """The caption of a ``color`` ``shape`` in ``language`` (variant picks the phrasing)."""
    color_word = color if language == "en" else COLORS[color][1][language]
    shape_word = shape if language == "en" else SHAPES[shape][language]
    templates = TEMPLATES[language]
    return templates[variant % len(templates)].format(color=color_word, shape=shape_word)


def draw_shape(color: str, shape: str, rng: random.Random) -> Image.Image:
    """One image: random aspect ratio, light background with noise-free tint, the shape at a random place/size."""
    width, height = rng.choice([(128, 128), (160, 112), (112, 160), (192, 96), (96, 176)])
    tint = tuple(rng.randint(225, 250) for _ in range(3))
    image = Image.new("RGB", (width, height), tint)
    draw = ImageDraw.Draw(image)
    size = rng.uniform(0.35, 0.7) * min(width, height)
    cx, cy = rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2)
    box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
    fill = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in COLORS[color][0])
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
    return image


def make_shapes(
    directory: str | os.PathLike,
    n: int = 600,
    val_fraction: float = 0.2,
    seed: int = 0,
    languages: tuple[str, ...] = LANGUAGES,
    phrasings: int = 3,
) -> Path:
    """Write ``n`` images and ``train.jsonl`` / ``val.jsonl`` (rows: image, caption, label) under ``directory``.

    Captions rotate through ``languages`` and up to ``phrasings`` templates per language.
    """
    unknown = set(languages) - set(LANGUAGES)
    if unknown:
        raise ValueError(f"unknown languages {sorted(unknown)}; available: {', '.join(LANGUAGES)}")
    root = Path(directory)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    classes = [(color, shape) for color in COLORS for shape in SHAPES]
    rows = []
    for i in range(n):
        color, shape = classes[i % len(classes)]  # balanced classes
        language = languages[(i // len(classes)) % len(languages)]
        name = f"images/{i:05d}_{color}_{shape}.png"
        draw_shape(color, shape, rng).save(root / name)
        rows.append(
            {"image": name, "caption": caption(color, shape, language, rng.randrange(max(1, phrasings))), "label": f"{color} {shape}"}
        )
    rng.shuffle(rows)
    n_val = max(len(classes), int(round(n * val_fraction))) if val_fraction > 0 else 0
    for name, part in (("val.jsonl", rows[:n_val]), ("train.jsonl", rows[n_val:])):
        with (root / name).open("w", encoding="utf-8") as handle:
            for row in part:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return root
