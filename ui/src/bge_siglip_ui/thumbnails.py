"""Thumbnails, made once per image content and kept on disk.

A thumbnail is keyed by the content id of its file (:class:`~bge_siglip_ui.files.FileIds`), so a renamed or copied
photo reuses it and an edited one gets a new one. Images are decoded by the core (:func:`bge_siglip_vectorizer.
load_image`: EXIF orientation, palette/alpha handling, the pixel limit, typed errors), as for embedding.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from PIL import Image

from bge_siglip_vectorizer import ImageLimits, load_image

__all__ = ["Thumbnails"]

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
            image = load_image(file, None, self.limits)
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
