"""Deterministic sample images: varied sizes, aspect ratios and PIL modes, and their encoded files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# (width, height, mode): extreme aspect ratios, tiny and larger-than-budget sizes, every common mode.
SAMPLE_SPECS: list[tuple[int, int, str]] = [
    (224, 224, "RGB"),
    (640, 480, "RGB"),
    (480, 640, "RGB"),
    (1000, 30, "RGB"),
    (17, 900, "RGB"),
    (1, 1, "RGB"),
    (15, 15, "RGB"),
    (333, 257, "L"),
    (300, 200, "LA"),
    (256, 256, "RGBA"),
    (200, 300, "P"),
    (128, 96, "CMYK"),
    (160, 120, "I;16"),
    (120, 160, "1"),
    (1600, 1200, "RGB"),
]


def sample_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A smooth gradient plus noise and a seed-dependent rectangle: distinct per seed, not flat."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            255 * x / max(width - 1, 1),
            255 * y / max(height - 1, 1),
            255 * (0.5 + 0.5 * np.sin((x + y) / (7 + seed % 5))),
        ],
        axis=-1,
    )
    base += rng.normal(0, 20, size=base.shape)
    x0, y0 = int(rng.integers(0, max(width // 2, 1))), int(rng.integers(0, max(height // 2, 1)))
    base[y0 : y0 + max(height // 3, 1), x0 : x0 + max(width // 3, 1)] = rng.integers(0, 256, size=3)
    rgb = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    if mode == "RGB":
        return rgb
    if mode in ("RGBA", "LA"):
        alpha = Image.fromarray((255 * (x / max(width - 1, 1))).astype(np.uint8), "L")
        image = rgb.convert(mode[:-1])
        image.putalpha(alpha)
        return image
    if mode == "P":
        image = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        image.info["transparency"] = 0  # palette images with a transparent index exercise the alpha path
        return image
    if mode == "I;16":
        return Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 3)  # uint16 -> mode I;16
    return rgb.convert(mode)


def sample_images(seed: int = 0) -> list[Image.Image]:
    """One image per entry of :data:`SAMPLE_SPECS`."""
    return [sample_image(w, h, mode, seed + i) for i, (w, h, mode) in enumerate(SAMPLE_SPECS)]


def encode_image(image: Image.Image, fmt: str = "PNG", **save_args) -> bytes:
    """The image as file bytes in ``fmt`` (PNG, JPEG, WEBP, GIF, ...)."""
    buffer = io.BytesIO()
    if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        image = image.convert("RGB")
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def photo_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A deterministic synthetic photo: a smooth colour field, soft-edged shapes and mild sensor-like noise, in
    ``mode`` (RGB, L, RGBA, P). Unlike :func:`sample_image` it has the statistics of a camera picture, which is
    what JPEG decoding and resizing costs and fidelity depend on (not per-pixel noise)."""
    rng = np.random.default_rng(seed)
    w, h = width, height
    coarse = rng.integers(0, 256, size=(max(2, h // 64), max(2, w // 64), 3), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGB").resize((w, h), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(w // 20 + 1, w // 3 + 2)), y0 + int(rng.integers(h // 20 + 1, h // 3 + 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    noise = Image.effect_noise((w, h), 24).convert("RGB")
    image = Image.blend(image, noise, 0.12)
    if mode == "RGBA":
        alpha = Image.linear_gradient("L").resize((w, h))
        image = image.convert("RGBA")
        image.putalpha(alpha)
        return image
    if mode == "P":
        return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return image.convert(mode)


def sample_image_files(folder: "str | os.PathLike", n: int, seed: int = 0) -> list[Path]:
    """``n`` distinct image files in ``folder`` (created), alternating JPEG and PNG, of growing widths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i:02d}.{'png' if i % 2 else 'jpg'}"
        sample_image(48 + 8 * i, 40, "RGB", seed=seed + i).save(path)
        paths.append(path)
    return paths
