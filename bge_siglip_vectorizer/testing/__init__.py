"""Test helpers for this package and its adapters (and for users' own CI).

* :func:`make_tiny_model` — a small random model in the real format (no semantic meaning);
  :func:`make_random_model` — the same builder for any size (the benchmark's real-size models);
  :func:`make_head_variant` — a copy with other BGE-M3 heads, or none (same dense space).
* :mod:`.images` — deterministic sample images of many sizes, modes and encodings.
* :mod:`.contract` — the adapter contract suite every database integration runs (needs pytest).
"""

from .images import sample_image, sample_images
from .tiny import make_head_variant, make_random_model, make_tiny_model, small_text_tower

__all__ = ["make_head_variant", "make_random_model", "make_tiny_model", "small_text_tower", "sample_image",
           "sample_images"]
