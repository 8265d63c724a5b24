"""Thumbnails: decoded by the core (reduced where JPEG allows, EXIF applied), made once, nothing left on failure."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bge_siglip_ui.thumbnails import QUALITY, SIZE, Thumbnails
from bge_siglip_vectorizer import ImageLimits, InvalidImageError
from bge_siglip_vectorizer.testing import sample_image


def test_a_big_jpeg_is_decoded_reduced_and_looks_like_the_full_decode(tmp_path):
    photo = tmp_path / "photo.jpg"
    sample_image(2400, 1600, "RGB", seed=4).save(photo, "JPEG", quality=92)
    thumbnails = Thumbnails(tmp_path / "cache", ImageLimits())
    made = Image.open(thumbnails.get("k" * 36, photo))
    assert made.size == (SIZE, round(SIZE * 1600 / 2400))
    # The reference: the whole photo decoded, shrunk and stored as the cache stores thumbnails.
    full = Image.open(photo).convert("RGB")
    full.thumbnail((SIZE, SIZE), Image.Resampling.LANCZOS)
    encoded = io.BytesIO()
    full.save(encoded, "JPEG", quality=QUALITY, optimize=True)
    reference = Image.open(encoded)
    difference = np.abs(np.asarray(made, dtype=np.int16) - np.asarray(reference, dtype=np.int16))
    assert difference.mean() < 2.5  # the same picture, up to rounding and JPEG noise


def test_exif_orientation_is_applied_and_small_images_are_not_enlarged(tmp_path):
    photo = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees: portrait
    sample_image(200, 100, "RGB", seed=5).save(photo, "JPEG", exif=exif)
    made = Image.open(Thumbnails(tmp_path / "cache", ImageLimits()).get("r" * 36, photo))
    assert made.size == (100, 200)


def test_a_file_that_does_not_decode_raises_the_typed_error_and_leaves_nothing(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 cut short")
    thumbnails = Thumbnails(tmp_path / "cache", ImageLimits())
    with pytest.raises(InvalidImageError):
        thumbnails.get("b" * 36, broken)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
    with pytest.raises(InvalidImageError, match="exceeds the limit"):
        big = tmp_path / "big.png"
        sample_image(300, 300, "RGB").save(big)
        Thumbnails(tmp_path / "cache", ImageLimits(max_pixels=10_000)).get("c" * 36, big)
