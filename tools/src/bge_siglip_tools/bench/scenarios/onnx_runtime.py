"""5. ONNX Runtime fp32 and int8 vs torch fp32: throughput and cosine to torch.

The graphs are written once by the package's own ``export_onnx(model, model, int8=True)`` (cached next to the
model). Each backend runs behind the same Vectorizer (``onnx_backend_for``, what ``from_pretrained(...,
backend="onnx" | "onnx-int8")`` builds), sharing the already loaded preprocessing and tokenizer: identical inputs,
only the forward differs. Images and texts are timed; cosines are per item against torch. With random weights,
vectors of different items are already similar, so the cosine of each item *after removing the set's mean torch
vector* is reported too (a stricter test of int8 error).
"""

from __future__ import annotations

import numpy as np

from .. import data
from ..common import ScenarioResult, cosines, interleaved, log, measured
from ..context import BenchContext

NAME, NUMBER = "onnx", 5
TITLE = "ONNX Runtime fp32 / int8 vs torch fp32"
TARGET = 1.5
MIN_COSINE = 0.99


def _agreement(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    centre = reference.mean(0, keepdims=True)
    raw = cosines(vectors, reference)
    centred = cosines(vectors - centre, reference - centre) if len(reference) > 1 else raw
    return {"min_cosine": min(raw), "mean_cosine": float(np.mean(raw)), "min_centred_cosine": min(centred)}


def _cross_item_cosine(vectors: np.ndarray) -> float:
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = normed @ normed.T
    n = len(vectors)
    return float((sims.sum() - n) / max(n * (n - 1), 1))


def run(ctx: BenchContext) -> ScenarioResult:
    from bge_siglip_vectorizer import Vectorizer
    from bge_siglip_vectorizer.backends.onnx import onnx_backend_for

    plan = ctx.plan
    export = ctx.ensure_onnx()
    torch_vec = ctx.vectorizer
    components = torch_vec.components
    backends = {
        "torch fp32": torch_vec,
        "onnxruntime fp32": Vectorizer(components, backend=onnx_backend_for(components, "onnx", device="cpu")),
        "onnxruntime int8": Vectorizer(components, backend=onnx_backend_for(components, "onnx-int8", device="cpu")),
    }
    images = data.decoded(data.image_files(ctx.images_dir, plan.onnx_images, ctx.quick, seed=300))
    texts = data.bench_texts(plan.onnx_texts, seed=3)
    result = ScenarioResult(NAME, NUMBER, f"{TITLE} ({len(images)} images, {len(texts)} texts)")
    n_img, n_txt = len(images), len(texts)

    def images_with(vec: Vectorizer):
        return lambda: vec.encode_images(images, batch_size=n_img, show_progress=False)

    def texts_with(vec: Vectorizer):
        return lambda: vec.encode_texts(texts, batch_size=n_txt, show_progress=False)

    log(f"{NAME}: {n_img} images, {n_txt} texts x 3 backends x {plan.reps} rounds")
    image_runs, image_last = interleaved(
        {name: images_with(vec) for name, vec in backends.items()}, plan.reps, plan.warmup,
        {name: (lambda v=vec: v.encode_images(images[:1], show_progress=False)) for name, vec in backends.items()})
    text_runs, text_last = interleaved(
        {name: texts_with(vec) for name, vec in backends.items()}, plan.reps, plan.warmup)
    img = {name: result.add(measured(r, n_img, "img/s", f"images, {name}")) for name, r in image_runs.items()}
    txt = {name: result.add(measured(r, n_txt, "texts/s", f"texts, {name}")) for name, r in text_runs.items()}

    agreement = {}
    for kind, last in (("images", image_last), ("texts", text_last)):
        reference = last["torch fp32"]
        agreement[kind] = {name: _agreement(last[name], reference) for name in ("onnxruntime fp32", "onnxruntime int8")}
        agreement[kind]["cross_item_cosine_torch"] = _cross_item_cosine(reference)
    result.checks["cosine to torch"] = agreement
    int8_cos = agreement["images"]["onnxruntime int8"]["min_cosine"]
    result.compare("images: onnx fp32 / torch", img["onnxruntime fp32"], img["torch fp32"])
    result.compare("images: onnx int8 / torch", img["onnxruntime int8"], img["torch fp32"], TARGET,
                   note=f"target also needs min cosine >= {MIN_COSINE}: measured {int8_cos:.4f}",
                   condition=int8_cos >= MIN_COSINE)
    result.compare("texts: onnx fp32 / torch", txt["onnxruntime fp32"], txt["torch fp32"])
    result.compare("texts: onnx int8 / torch", txt["onnxruntime int8"], txt["torch fp32"])
    result.details["export"] = export
    result.details["int8"] = "dynamic quantisation of MatMul weights (uint8, per channel); activations per call"
    for vec in list(backends.values())[1:]:
        vec.close()
    return result
