"""NaFlex preprocessing parity with transformers' Siglip2 image processor (the PIL backend installed here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

from bge_siglip_vectorizer.inputs import to_rgb
from bge_siglip_vectorizer.preprocess import NaFlexConfig, collate, patchify, preprocess, target_size
from bge_siglip_vectorizer.testing.images import SAMPLE_SPECS, sample_images


def _reference(images, max_num_patches):
    processor = Siglip2ImageProcessorPil(max_num_patches=max_num_patches, patch_size=16)
    out = processor(images=images, do_convert_rgb=True, return_tensors="np")
    return out["pixel_values"], out["pixel_attention_mask"], out["spatial_shapes"]


@pytest.mark.parametrize("max_num_patches", [64, 256, 1024])
def test_matches_transformers_processor_on_varied_sizes_and_modes(max_num_patches):
    images = sample_images(seed=3)
    assert {image.mode for image in images} >= {"RGB", "L", "LA", "RGBA", "P", "CMYK", "I;16", "1"}
    ours = preprocess(images, NaFlexConfig(max_num_patches=max_num_patches), pad_to=max_num_patches)
    reference = _reference(images, max_num_patches)
    pixel_values, mask, shapes = ours
    assert pixel_values.dtype == np.float32 and pixel_values.shape == reference[0].shape
    np.testing.assert_array_equal(shapes, reference[2])
    np.testing.assert_array_equal(mask, reference[1])
    assert np.abs(pixel_values - reference[0]).max() <= 1e-5


def test_rgb_conversion_matches_processor_for_transparent_images():
    # Transparent pixels composite onto white (not black), as transformers' convert_to_rgb does.
    from PIL import Image

    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("size", [(1, 1), (16, 16), (17, 17), (10000, 3), (3, 10000), (640, 480), (4000, 3000)])
def test_target_size_respects_patch_budget_and_aspect(size):
    height, width = size
    for budget in (1, 64, 256, 1024):
        th, tw = target_size(height, width, 16, budget)
        assert th % 16 == 0 and tw % 16 == 0 and th >= 16 and tw >= 16
        assert (th // 16) * (tw // 16) <= max(budget, 1)


def test_collate_pads_to_longest_and_masks_padding():
    config = NaFlexConfig(max_num_patches=64)
    images = sample_images()[:4]
    items = [patchify(image, config) for image in images]
    pixel_values, mask, shapes = collate(items, config)
    longest = max(item.num_patches for item in items)
    assert pixel_values.shape == (4, longest, 768)
    for row, item in enumerate(items):
        assert mask[row].sum() == item.num_patches == shapes[row].prod()
        assert not pixel_values[row, item.num_patches :].any()
    with pytest.raises(ValueError):
        collate(items, config, pad_to=longest - 1)


def test_saved_processor_config_reproduces_our_preprocessing(bge_siglip_model_dir):
    # The vision folder's preprocessor_config.json lets transformers' own processor reproduce our tensors.
    settings = json.loads((bge_siglip_model_dir / "vision" / "preprocessor_config.json").read_text())
    settings.pop("image_processor_type")
    processor = Siglip2ImageProcessorPil(**settings)
    images = sample_images(seed=9)[:5]
    reference = processor(images=images, return_tensors="np")
    ours = preprocess(images, NaFlexConfig(max_num_patches=settings["max_num_patches"]), pad_to=settings["max_num_patches"])
    assert np.abs(ours[0] - reference["pixel_values"]).max() <= 1e-5
    np.testing.assert_array_equal(ours[2], reference["spatial_shapes"])


def test_sample_specs_cover_extreme_aspect_ratios():
    ratios = [w / h for w, h, _ in SAMPLE_SPECS]
    assert max(ratios) > 30 and min(ratios) < 1 / 30


def test_per_channel_mean_and_std_match_the_processor():
    # CLIP-style statistics exercise the per-channel path of collate (SigLIP's are uniform).
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    images = sample_images(seed=8)[:6]
    ours = preprocess(images, NaFlexConfig(max_num_patches=256, image_mean=mean, image_std=std), pad_to=256)
    processor = Siglip2ImageProcessorPil(max_num_patches=256, image_mean=list(mean), image_std=list(std))
    reference = processor(images=images, do_convert_rgb=True, return_tensors="np")
    assert np.abs(ours[0] - reference["pixel_values"]).max() <= 1e-5
