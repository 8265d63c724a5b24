"""1. Preprocessing: ours vs transformers' Siglip2 image processor (PIL backend), identical tensors checked.

Inputs are decoded ``PIL.Image``s of the varied set (12 MP photos down to thumbnails, RGBA/P/L modes), as a user
holding images would hand them to either. Both produce the processor's layout padded to ``max_num_patches``.
Contenders, interleaved:

* ``transformers``: ``Siglip2ImageProcessorPil(images=..., return_tensors="np")``;
* ``ours, 1 thread``: :func:`~bge_siglip_vectorizer.preprocess.preprocess` (resize + uint8 patches + one lookup-table
  gather per image) in the calling thread;
* ``ours, pipeline``: what ``encode_images`` runs: ``Vectorizer.prepare_images`` (validation, RGB conversion,
  resize, patchify, content hash in the decode thread pool) + ``collate``;
* ``PIL resize only``: RGB conversion + the one PIL bilinear resize both must do, nothing else: the bound of any
  single-threaded PIL pipeline (the resize of a 12 MP photo dominates everything else).
"""

from __future__ import annotations

from PIL import Image

from .. import data
from ..common import ScenarioResult, interleaved, log, measured
from ..context import BenchContext

NAME, NUMBER = "preprocess", 1
TITLE = "Preprocessing: ours vs transformers Siglip2ImageProcessorPil"
TARGET = 3.0


def run(ctx: BenchContext) -> ScenarioResult:
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    from bge_siglip_vectorizer.inputs import to_rgb
    from bge_siglip_vectorizer.preprocess import collate, preprocess, target_size

    plan = ctx.plan
    vectorizer = ctx.vectorizer
    config = vectorizer.preprocessing
    budget = config.max_num_patches
    paths = data.image_files(ctx.images_dir, plan.preprocess_images, ctx.quick)
    images = data.decoded(paths)
    pixels = sum(image.width * image.height for image in images)
    result = ScenarioResult(NAME, NUMBER, f"{TITLE} ({len(images)} images, max_num_patches {budget})")
    processor = Siglip2ImageProcessorPil(max_num_patches=budget, patch_size=config.patch_size,
                                         image_mean=list(config.image_mean), image_std=list(config.image_std))

    def transformers_() -> tuple:
        out = processor(images=images, do_convert_rgb=True, return_tensors="np")
        return out["pixel_values"], out["pixel_attention_mask"], out["spatial_shapes"]

    def ours_single() -> tuple:
        return preprocess(images, config, pad_to=budget)

    def ours_pipeline() -> tuple:
        return collate(vectorizer.prepare_images(images, show_progress=False), config, pad_to=budget)

    def pil_resize_only() -> None:
        for image in images:
            rgb = to_rgb(image)
            height, width = target_size(rgb.height, rgb.width, config.patch_size, budget)
            rgb.resize((width, height), resample=Image.Resampling.BILINEAR)

    contenders = {
        "transformers Siglip2ImageProcessorPil": transformers_,
        "ours preprocess (1 thread)": ours_single,
        f"ours prepare_images + collate ({vectorizer.num_workers} decode threads)": ours_pipeline,
        "PIL RGB + resize only (1 thread)": pil_resize_only,
    }
    log(f"{NAME}: {len(images)} images ({pixels / 1e6:.0f} MP in all), {plan.preprocess_reps} rounds")
    runs, last = interleaved(contenders, plan.preprocess_reps, plan.warmup)
    timings = {name: result.add(measured(run, len(images), "img/s")) for name, run in runs.items()}
    names = list(contenders)
    reference = last[names[0]]
    for name in names[1:3]:
        ours = last[name]
        shapes_equal = all(a.shape == b.shape for a, b in zip(ours, reference))
        result.checks[f"{name}: identical tensors"] = {
            "pixel_values_max_abs_diff": float(abs(ours[0] - reference[0]).max()) if shapes_equal else None,
            "mask_equal": bool(shapes_equal and (ours[1] == reference[1]).all()),
            "spatial_shapes_equal": bool(shapes_equal and (ours[2] == reference[2]).all()),
            "identical": bool(shapes_equal and (ours[0] == reference[0]).all() and (ours[1] == reference[1]).all()
                              and (ours[2] == reference[2]).all()),
        }
    baseline = timings[names[0]]
    result.compare("ours preprocess (1 thread) / transformers", timings[names[1]], baseline, TARGET)
    result.compare("ours prepare_images pipeline / transformers", timings[names[2]], baseline, TARGET)
    result.compare("bound: PIL RGB + resize only / transformers", timings[names[3]], baseline, None,
                   note="no PIL-based single-threaded preprocessing can beat this")
    resize_share = timings[names[1]].median / timings[names[3]].median
    result.details.update({
        "images": [{"file": path.name, "mode": image.mode, "size": image.size} for path, image in zip(paths, images)],
        "megapixels": round(pixels / 1e6, 1),
        "resize_share_of_ours_1_thread": round(resize_share, 3),
        "decode_threads": vectorizer.num_workers,
    })
    result.notes.append(
        f"PIL's resize is {resize_share:.0%} of our single-threaded time; the rest is RGB conversion, patchify and "
        "one lookup-table gather per image. Decoding is not timed here (inputs are decoded PIL images)."
    )
    return result
