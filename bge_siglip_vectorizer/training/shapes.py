"""Synthetic captioned images: coloured shapes and patterns, captioned in four languages.

For tests and the offline demo: a model trained on these through the real ``train`` path must learn to find
"rote Streifen" among blue dots. Each image shows one colour and one kind (a disc, stripes, a checkerboard or
dots) at a random place, size and aspect ratio; captions name the colour and the kind in several phrasings. Each row
carries a ``label`` (colour + kind) so evaluation counts any image of the right kind as a hit.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLORS = {
    "red": ((215, 35, 35), {"en": "red", "de": "rot", "fr": "rouge", "es": "rojo"}),
    "green": ((35, 165, 55), {"en": "green", "de": "grün", "fr": "vert", "es": "verde"}),
    "blue": ((35, 70, 215), {"en": "blue", "de": "blau", "fr": "bleu", "es": "azul"}),
    "yellow": ((235, 200, 25), {"en": "yellow", "de": "gelb", "fr": "jaune", "es": "amarillo"}),
}
KINDS = {
    "circle": {"en": "circle", "de": "Kreis", "fr": "cercle", "es": "círculo"},
    "stripes": {"en": "stripes", "de": "Streifen", "fr": "rayures", "es": "rayas"},
    "checkerboard": {"en": "checkerboard", "de": "Schachbrett", "fr": "damier", "es": "tablero de ajedrez"},
    "dots": {"en": "dots", "de": "Punkte", "fr": "pois", "es": "lunares"},
}
# Phrasings that name the colour without inflecting it, so every colour fits every kind grammatically.
TEMPLATES = {
    "en": ["{color} {kind}", "a picture of {color} {kind}", "{kind} in {color}"],
    "de": ["{kind} in {color}", "ein Bild: {kind}, Farbe {color}"],
    "fr": ["{kind} de couleur {color}", "une image : {kind}, couleur {color}"],
    "es": ["{kind} de color {color}", "una imagen: {kind}, color {color}"],
}
LANGUAGES = tuple(TEMPLATES)


def caption(color: str, kind: str, language: str = "en", variant: int = 0) -> str:
    """The caption of ``color`` ``kind`` in ``language`` (``variant`` picks the phrasing)."""
    templates = TEMPLATES[language]
    return templates[variant % len(templates)].format(color=COLORS[color][1][language], kind=KINDS[kind][language])


def draw_example(color: str, kind: str, rng: random.Random) -> Image.Image:
    """One image of ``color`` ``kind``: random aspect ratio, light tint, random placement, size and spacing."""
    width, height = rng.choice([(128, 128), (160, 112), (112, 160), (192, 96), (96, 176)])
    image = Image.new("RGB", (width, height), tuple(rng.randint(225, 250) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    fill = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in COLORS[color][0])
    if kind == "circle":
        size = rng.uniform(0.4, 0.8) * min(width, height)
        cx, cy = rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2)
        draw.ellipse((cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2), fill=fill)
    elif kind == "stripes":
        period, vertical = rng.randint(10, 18), rng.random() < 0.5
        for start in range(rng.randint(0, period), width if vertical else height, period):
            box = (start, 0, start + period // 2, height) if vertical else (0, start, width, start + period // 2)
            draw.rectangle(box, fill=fill)
    elif kind == "checkerboard":
        cell = rng.randint(8, 14)
        for row in range(0, height, cell):
            for col in range(0, width, cell):
                if (row // cell + col // cell) % 2 == 0:
                    draw.rectangle((col, row, col + cell - 1, row + cell - 1), fill=fill)
    else:
        spacing, radius = rng.randint(16, 24), rng.uniform(3, 5)
        for y in range(rng.randint(4, 10), height, spacing):
            for x in range(rng.randint(4, 10), width, spacing):
                draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill)
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

    Classes (colour x kind) are balanced; captions rotate through ``languages`` and up to ``phrasings`` templates.
    """
    unknown = set(languages) - set(LANGUAGES)
    if unknown or not languages:
        raise ValueError(f"languages must be a non-empty subset of {', '.join(LANGUAGES)}; got {list(languages)}")
    root = Path(directory)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    classes = [(color, kind) for color in COLORS for kind in KINDS]
    rows = []
    for i in range(n):
        color, kind = classes[i % len(classes)]
        language = languages[(i // len(classes)) % len(languages)]
        name = f"images/{i:05d}_{color}_{kind}.png"
        draw_example(color, kind, rng).save(root / name)
        text = caption(color, kind, language, rng.randrange(max(1, phrasings)))
        rows.append({"image": name, "caption": text, "label": f"{color} {kind}"})
    rng.shuffle(rows)
    n_val = int(round(n * val_fraction))
    for name, part in (("val.jsonl", rows[:n_val]), ("train.jsonl", rows[n_val:])):
        with (root / name).open("w", encoding="utf-8") as handle:
            for row in part:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return root
