"""4. One forward per item vs batched encoding.

Chroma's own ``OpenCLIPEmbeddingFunction`` loops over its input and runs the model once per image (preprocess,
``unsqueeze(0)``, ``encode_image``). The same pattern through our core is ``encode_images([image])`` per item;
ours is one ``encode_images(images, batch_size=B)`` call (decoding in a thread pool, patch-count-sorted batches).
Inputs are uint8 arrays, what Chroma's ``images=`` carries. The per-item and batched vectors are also compared
(an item's vector must not depend on its batch).
"""

from __future__ import annotations

import numpy as np

from .. import data
from ..common import ScenarioResult, cosines, interleaved, log, measured
from ..context import BenchContext

NAME, NUMBER = "per-item", 4
TITLE = "Per-item forward (Chroma OpenCLIP pattern) vs batched encode_images"


def run(ctx: BenchContext) -> ScenarioResult:
    plan = ctx.plan
    vectorizer = ctx.vectorizer
    n = plan.per_item_images
    batch = n
    images = data.decoded(data.image_files(ctx.images_dir, n, ctx.quick, seed=200))
    arrays = [np.asarray(image if image.mode in ("RGB", "RGBA", "L") else image.convert("RGB")) for image in images]
    result = ScenarioResult(NAME, NUMBER, f"{TITLE} ({n} images as uint8 arrays, batch {batch})")

    def per_item() -> np.ndarray:
        return np.concatenate([vectorizer.encode_images([a], batch_size=1, show_progress=False) for a in arrays])

    def batched() -> np.ndarray:
        return vectorizer.encode_images(arrays, batch_size=batch, show_progress=False)

    contenders = {"per item: encode_images([x]) in a loop": per_item,
                  f"batched: encode_images(all, batch_size={batch})": batched}
    warm = arrays[:1]
    warmups = {name: (lambda: vectorizer.encode_images(warm, batch_size=1, show_progress=False))
               for name in contenders}
    log(f"{NAME}: {n} images x 2 patterns x {plan.per_item_reps} rounds")
    runs, last = interleaved(contenders, plan.per_item_reps, plan.warmup, ctx.warmups(warmups))
    names = list(contenders)
    timings = [result.add(measured(runs[name], n, "img/s")) for name in names]
    result.compare("batched / per-item", timings[1], timings[0], None)
    per, bat = last[names[0]], last[names[1]]
    result.checks["per-item vs batched vectors"] = {
        "min_cosine": min(cosines(per, bat)),
        "max_abs_diff": float(np.abs(per - bat).max()),
    }
    result.details["shapes"] = [list(a.shape) for a in arrays]
    result.notes.append(
        "No target. The gain is bounded by what a bigger forward batch gains on this machine (scenario 7) minus "
        "padding (mixed aspect ratios pad to the longest item of a batch)."
    )
    return result
