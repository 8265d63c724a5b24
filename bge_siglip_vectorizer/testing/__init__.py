"""Test helpers for this package and its adapters (and for users' own CI).

* :func:`make_tiny_model` — a small random model in the real format (no semantic meaning).
* :mod:`.images` — deterministic sample images of many sizes, modes and encodings.
* :mod:`.contract` — the adapter contract suite every database integration runs (needs pytest).
"""

from .images import sample_image, sample_images
from .tiny import make_tiny_model

__all__ = ["make_tiny_model", "sample_image", "sample_images"]
