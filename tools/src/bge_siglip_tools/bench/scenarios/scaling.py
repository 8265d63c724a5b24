"""7. Scaling: image throughput vs batch size, for ``max_num_patches`` 64, 256 and 1024.

One Vectorizer per patch budget shares the loaded towers. Inputs are distinct same-size photos (uint8 arrays), so
every image has the same patch count and no batch pads: the curves show the model, not the data. All encoding goes
through ``encode_images``. The plot of this scenario is the one to pick a batch size and a patch budget from.
"""

from __future__ import annotations

from contextlib import closing

from .. import data
from ..common import ScenarioResult, interleaved, log, measured
from ..context import BenchContext

NAME, NUMBER = "scaling", 7
TITLE = "Scaling: image throughput vs batch size and max_num_patches"
# 4:3, the commonest photo shape; its NaFlex grids: 7x9 (63 patches), 14x18 (252), 27x36 (972).
_SIZE = (1024, 768)


def run(ctx: BenchContext) -> ScenarioResult:
    plan = ctx.plan
    width, height = (_SIZE[0] // 4, _SIZE[1] // 4) if ctx.quick else _SIZE
    result = ScenarioResult(NAME, NUMBER, f"{TITLE} ({width}x{height} photos)")
    curves: dict[str, list[dict[str, float]]] = result.details.setdefault("curves", {})  # filled as measured
    for patches, (n, batch_sizes, reps) in plan.scaling.items():
        # closing: a part that fails does not leave its Vectorizer's decode threads running under the next parts
        with result.part(f"{patches} patches"), closing(ctx.with_patches(patches)) as vectorizer:
            arrays = data.uniform_images(n, width, height, seed=7000 + patches)
            grid = vectorizer.prepare_images(arrays[:1], show_progress=False)[0]
            contenders = {
                f"{patches} patches, batch {b}": (lambda b=b: vectorizer.encode_images(arrays, batch_size=b,
                                                                                       show_progress=False))
                for b in batch_sizes
            }
            # Each batch size warms up with one batch of its own shape.
            warm = {name: (lambda b=b: vectorizer.encode_images(arrays[:b], batch_size=b, show_progress=False))
                    for name, b in zip(contenders, batch_sizes)}
            log(f"{NAME}: {patches} patches ({grid.num_patches} used), {n} images, batch sizes {list(batch_sizes)}, "
                f"{reps} round(s)")
            runs, _ = interleaved(contenders, reps, 1, ctx.warmups(warm))
            points = []
            for run, b in zip(runs.values(), batch_sizes):
                m = result.add(measured(run, n, "img/s"))
                points.append({"batch_size": b, "median": m.median, "min": m.low, "max": m.high})
            curves[str(patches)] = points
            result.details[f"patches_used_at_{patches}"] = grid.num_patches
            group = result.measurements[-len(batch_sizes):]
            result.compare(f"{patches} patches: batch {batch_sizes[-1]} / batch {batch_sizes[0]}", group[-1], group[0])
    return result
