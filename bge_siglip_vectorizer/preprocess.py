"""NaFlex preprocessing: aspect-preserving resize, rescale, normalise, patchify, pad, mask, spatial shapes.

Produces the same tensors as transformers' ``Siglip2ImageProcessor`` (PIL backend): the resize is the same PIL
bilinear call, and rescale+normalise is applied through a 256-entry lookup table computed with the processor's exact
arithmetic (float64 rescale, cast to float32, float32 normalise), so values are bit-identical. Work is split in two:

* :func:`patchify` (per image, thread-safe, releases the GIL inside PIL/numpy): resize and cut into ``uint8``
  patches — one copy of the resized pixels, 4x smaller than float32.
* :func:`collate` (per batch): one ``np.take`` through the lookup table straight into the padded float32 batch.

Reduced decoding (the default for files; ``exact_preprocessing=True`` turns it off): a JPEG is decoded through
libjpeg's DCT scaling at the smallest scale (1/2, 1/4 or 1/8) that keeps it at least as large as its NaFlex target
(:func:`reduced_decode_size`), then resized to the target by the same bilinear call, over the region that covers
the whole original (``DecodedImage.box``). The target is computed from the full-resolution size, so every image
gets the same patch grid as in exact mode, whatever the batch. Images that arrive decoded (PIL, numpy) and formats
without a reduced decoder go through the exact path unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Sequence

import numpy as np
from PIL import Image

from .inputs import DecodedImage, to_rgb

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class NaFlexConfig:
    """Preprocessing settings; defaults are those of google/siglip2-*-naflex."""

    patch_size: int = 16
    max_num_patches: int = 256
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255
    resample: str = "bilinear"
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {self.resample!r}")
        if self.max_num_patches < 1 or self.patch_size < 1:
            raise ValueError("patch_size and max_num_patches must be positive")
        # The processor's arithmetic, per channel, for every possible uint8 value.
        values = (np.arange(256, dtype=np.float64) * self.rescale_factor).astype(np.float32)
        mean = np.asarray(self.image_mean, dtype=np.float32)
        std = np.asarray(self.image_std, dtype=np.float32)
        lut = ((values[:, None] - mean[None, :]) / std[None, :]).astype(np.float32)  # (256, 3)
        object.__setattr__(self, "_lut", np.ascontiguousarray(lut))

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * 3

    def to_dict(self) -> dict:
        """JSON-able settings (every init field), as saved in ``bge_siglip_config.json``."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in _init_fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "NaFlexConfig":
        """The inverse of :meth:`to_dict`; unknown keys (from newer releases) are ignored."""
        known = {}
        for f in _init_fields(cls):
            if f.name in data:
                value = data[f.name]
                known[f.name] = tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else value
        return cls(**known)

    def to_processor_config(self) -> dict:
        """The same settings as transformers' ``preprocessor_config.json``, so its ``AutoImageProcessor``
        reproduces our preprocessing from a saved vision folder."""
        return {
            "image_processor_type": "Siglip2ImageProcessor",
            "do_convert_rgb": True,
            "do_resize": True,
            "do_rescale": True,
            "do_normalize": True,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "rescale_factor": self.rescale_factor,
            "resample": int(_RESAMPLE[self.resample]),
            "patch_size": self.patch_size,
            "max_num_patches": self.max_num_patches,
        }


def _init_fields(config) -> list:
    return [f for f in fields(config) if f.init]


@dataclass(frozen=True)
class PatchedImage:
    """One image cut into ``uint8`` patches, channel-last within each patch (the processor's layout)."""

    patches: np.ndarray  # (grid_h * grid_w, patch_size * patch_size * 3) uint8
    grid: tuple[int, int]  # (grid_h, grid_w)

    @property
    def num_patches(self) -> int:
        return self.patches.shape[0]

    def to_bytes(self) -> bytes:
        """The patches' raw ``uint8`` buffer (with :attr:`grid`, all :meth:`from_bytes` needs): how prepared images
        travel between processes, e.g. in a binary column of an Arrow table, at one byte per pixel channel."""
        return np.ascontiguousarray(self.patches).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, grid: tuple[int, int]) -> "PatchedImage":
        """The inverse of :meth:`to_bytes`; ``ValueError`` if the buffer does not hold ``grid_h * grid_w`` patches."""
        gh, gw = (int(v) for v in grid)
        count = gh * gw
        if count < 1 or len(data) == 0 or len(data) % count:
            raise ValueError(f"{len(data)} bytes do not hold the {gh}x{gw} patches of a grid")
        patches = np.frombuffer(data, dtype=np.uint8).reshape(count, len(data) // count)
        return cls(patches=patches, grid=(gh, gw))


def target_size(height: int, width: int, patch_size: int, max_num_patches: int, eps: float = 1e-5) -> tuple[int, int]:
    """Largest aspect-preserving size, in multiples of ``patch_size``, with at most ``max_num_patches`` patches.

    The same binary search as transformers' ``get_image_size_for_max_num_patches``, so sizes agree exactly.
    """

    def scaled(scale: float, size: int) -> int:
        return int(max(patch_size, math.ceil(size * scale / patch_size) * patch_size))

    scale_min, scale_max = eps / 10, 100.0
    while (scale_max - scale_min) >= eps:
        scale = (scale_min + scale_max) / 2
        patches = (scaled(scale, height) / patch_size) * (scaled(scale, width) / patch_size)
        if patches <= max_num_patches:
            scale_min = scale
        else:
            scale_max = scale
    return scaled(scale_min, height), scaled(scale_min, width)


#: Reduced JPEG decodes keep at least this many times the NaFlex target (per side). 1 = the smallest DCT scale that
#: is still >= the target. Measured on photo-like JPEGs (12 MP, 48 MP, 1080p; a random So400m/16 tower): at 1 the
#: cosine to the exact path is 0.99994-0.99998 and a 12 MP photo decodes 4.8x faster than in full; 2 brings the
#: cosine to 0.99999 but only 3.8x (one thread, this machine).
DRAFT_MARGIN = 1


def reduced_decode_size(width: int, height: int, config: NaFlexConfig) -> tuple[int, int]:
    """The smallest ``(width, height)`` a reduced decode of a ``width`` x ``height`` image may produce: its NaFlex
    target (times :data:`DRAFT_MARGIN`), so the final resize only ever shrinks."""
    target_h, target_w = target_size(height, width, config.patch_size, config.max_num_patches)
    return target_w * DRAFT_MARGIN, target_h * DRAFT_MARGIN


def patchify(image: Image.Image | DecodedImage, config: NaFlexConfig) -> PatchedImage:
    """Resize an image (any mode; or a possibly reduced :class:`DecodedImage`) to its NaFlex size and cut it into
    uint8 patches. The size comes from the full-resolution image either way."""
    box = None
    if isinstance(image, DecodedImage):
        (full_w, full_h), box, image = image.size, image.box, image.image
    else:
        full_w, full_h = image.size
    image = to_rgb(image)
    p = config.patch_size
    height, width = target_size(full_h, full_w, p, config.max_num_patches)
    if (width, height) != image.size or box is not None:
        image = image.resize((width, height), resample=_RESAMPLE[config.resample], box=box)
    pixels = np.asarray(image)  # (H, W, 3) uint8, a view of PIL's buffer where possible
    gh, gw = height // p, width // p
    patches = pixels.reshape(gh, p, gw, p, 3).transpose(0, 2, 1, 3, 4).reshape(gh * gw, p * p * 3)
    return PatchedImage(patches=patches, grid=(gh, gw))


def collate(
    items: Sequence[PatchedImage], config: NaFlexConfig, pad_to: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stack patched images into model inputs, padding to the longest item (or ``pad_to``).

    Returns ``pixel_values`` (B, N, p*p*3) float32, ``pixel_attention_mask`` (B, N) int32 and
    ``spatial_shapes`` (B, 2) int64, exactly as the processor lays them out.
    """
    longest = max(item.num_patches for item in items)
    length = longest if pad_to is None else pad_to
    if length < longest:
        raise ValueError(f"pad_to={pad_to} is shorter than the longest item ({longest} patches)")
    pixel_values = np.zeros((len(items), length, config.patch_dim), dtype=np.float32)
    mask = np.zeros((len(items), length), dtype=np.int32)
    shapes = np.zeros((len(items), 2), dtype=np.int64)
    lut = config._lut
    # SigLIP's mean/std are the same for every channel: then one table serves all values, in one np.take.
    uniform = bool((lut == lut[:, :1]).all())
    for row, item in enumerate(items):
        n = item.num_patches
        if uniform:
            np.take(lut[:, 0], item.patches, out=pixel_values[row, :n])
        else:
            target, source = pixel_values[row, :n].reshape(n, -1, 3), item.patches.reshape(n, -1, 3)
            for channel in range(3):
                target[:, :, channel] = lut[source[:, :, channel], channel]
        mask[row, :n] = 1
        shapes[row] = item.grid
    # The processor pads pixel values with 0 (not the normalised value of a 0 pixel); keep that.
    return pixel_values, mask, shapes


def preprocess(
    images: Sequence[Image.Image], config: NaFlexConfig, pad_to: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``patchify`` + ``collate``: the drop-in equivalent of calling the Siglip2 image processor."""
    return collate([patchify(image, config) for image in images], config, pad_to=pad_to)
