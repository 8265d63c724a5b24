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


# ---------------------------------------------------------------------------------------------- reduced decoding
@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    """Photo-like JPEGs as phones and cameras write them: 12 MP both ways (one with EXIF orientation 6, stored
    sideways), a 1080p frame and an odd size whose DCT-scaled decode ends in a partial pixel."""
    from PIL import Image

    from bge_siglip_vectorizer.testing.images import photo_image

    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i, (w, h, orientation) in enumerate([(4032, 3024, 1), (3024, 4032, 6), (1920, 1080, 1), (2017, 1513, 3)]):
        image = photo_image(w, h, seed=60 + i)
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = folder / f"photo{i}.jpg"
        image.save(path, quality=90, exif=exif)
        paths.append(path)
    return paths


def test_default_decoding_is_reduced_and_within_cosine_0_9999_of_exact(bge_siglip_vectorizer, photo_files):
    from bge_siglip_vectorizer import Vectorizer
    from bge_siglip_vectorizer.inputs import open_image
    from bge_siglip_vectorizer.preprocess import reduced_decode_size

    exact = Vectorizer(bge_siglip_vectorizer.components, exact_preprocessing=True)
    default = bge_siglip_vectorizer
    assert not default.options.exact_preprocessing
    ours, reference = default.prepare_images(photo_files), exact.prepare_images(photo_files)
    # Same grid whatever the decode (the size comes from the full image), so padding and batching are unchanged ...
    assert [p.grid for p in ours] == [p.grid for p in reference]
    # ... while the JPEGs really were decoded at 1/8 or 1/4 scale, never below their target.
    for path, patched in zip(photo_files, ours):
        with open_image(path) as opened:
            full = opened.pixels
            opened.reduce_for(lambda w, h: reduced_decode_size(w, h, default.preprocessing))
            assert opened.pixels * 15 < full and opened.pixels >= patched.num_patches * 256
    assert any((a.patches != b.patches).any() for a, b in zip(ours, reference))
    vectors, exact_vectors = default.encode_images(photo_files), exact.encode_images(photo_files)
    cosines = (vectors * exact_vectors).sum(1)  # both L2-normalised
    assert cosines.min() >= 0.9999, cosines
    # Deterministic: the same file gives the same vector in any batch.
    np.testing.assert_array_equal(default.encode_images(photo_files[::-1])[::-1], vectors)


def test_exact_preprocessing_from_files_matches_the_processor_bit_for_bit(bge_siglip_vectorizer, tmp_path):
    from PIL import Image

    from bge_siglip_vectorizer import Vectorizer
    from bge_siglip_vectorizer.testing.images import encode_image, photo_image

    exact = Vectorizer(bge_siglip_vectorizer.components, exact_preprocessing=True)
    paths = []
    for i, (w, h, fmt) in enumerate([(1600, 1200, "JPEG"), (900, 1400, "JPEG"), (640, 480, "PNG"), (512, 512, "WEBP")]):
        paths.append(tmp_path / f"f{i}.{fmt.lower()}")
        paths[-1].write_bytes(encode_image(photo_image(w, h, seed=i), fmt))
    config = exact.preprocessing
    ours = collate(exact.prepare_images(paths), config, pad_to=config.max_num_patches)
    reference = _reference([Image.open(p).convert("RGB") for p in paths], config.max_num_patches)  # a user's decode
    np.testing.assert_array_equal(ours[0], reference[0])
    np.testing.assert_array_equal(ours[1], reference[1])
    np.testing.assert_array_equal(ours[2], reference[2])
