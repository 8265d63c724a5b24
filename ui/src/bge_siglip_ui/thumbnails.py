"""Thumbnails, made once per image content and kept on disk.

A thumbnail is keyed by the content id of its file (:class:`~bge_siglip_ui.files.FileIds`), so a renamed or copied
photo reuses it and an edited one gets a new one. Images are decoded by the core (:func:`bge_siglip_vectorizer.
open_image`: the pixel limit checked from the header, EXIF orientation, palette/alpha handling, typed errors), as for
embedding, and JPEGs at the smallest DCT scale that still covers the thumbnail (a 12 MP photo decodes at 1/8).
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from pathlib import Path

from PIL import Image

from bge_siglip_vectorizer import ImageLimits, open_image

__all__ = ["Thumbnails", "decode_within"]

#: Longest side in pixels: tiles are ~200 CSS px wide, so this stays sharp on a 1.5x screen.
SIZE = 320
QUALITY = 82


class Thumbnails:
    """``get(key, file)`` -> the path of ``file``'s JPEG thumbnail under ``root``, made on first use."""

    def __init__(self, root: str | os.PathLike, limits: ImageLimits, size: int = SIZE) -> None:
        self.root = Path(root)
        self.limits = limits
        self.size = size
        # One lock per key stripe: two requests for one new thumbnail make it once; different ones run in parallel.
        self._locks = [threading.Lock() for _ in range(64)]
        #: Thumbnails made by this instance (the rest came from the cache).
        self.made = 0

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.jpg"

    def get(self, key: str, file: Path) -> Path:
        """The thumbnail of ``file`` (whose content id is ``key``); raises the core's ``InvalidImageError`` for a
        file that does not decode."""
        target = self.path(key)
        if target.is_file():
            return target
        with self._locks[hash(key) % len(self._locks)]:
            if target.is_file():
                return target
            image = decode_within(file, self.limits, self.size)
            image.thumbnail((self.size, self.size), Image.Resampling.LANCZOS, reducing_gap=3.0)
            target.parent.mkdir(parents=True, exist_ok=True)
            # Written beside and renamed: a reader never sees half a file, a crash leaves no broken thumbnail.
            handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
            try:
                with os.fdopen(handle, "wb") as out:
                    image.save(out, "JPEG", quality=QUALITY, optimize=True)
                os.replace(temporary, target)
            except BaseException:
                os.unlink(temporary)
                raise
            self.made += 1
        return target


def decode_within(file: Path, limits: ImageLimits, size: int) -> Image.Image:
    """``file`` decoded by the core, reduced where the format allows but never below ``size`` on its longest side
    (an image already smaller stays as it is)."""

    def at_least(width: int, height: int) -> tuple[int, int]:
        scale = min(1.0, size / max(width, height))
        return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))

    with open_image(file, None, limits) as opened:
        opened.reduce_for(at_least)
        return opened.decode().image
