"""8. Real photos from files: reduced decoding vs the exact path vs transformers, per thread and with the pool.

Users start from files: phone JPEGs of 12-48 MP, video frames, PNG screenshots. Each group is timed from the file on
disk to the model's input tensors, for:

* ``(a) transformers``: ``Image.open(path).convert("RGB")`` (the decode a user does) + ``Siglip2ImageProcessorPil``;
* ``(b) ours exact``: ``prepare_images`` + ``collate`` with ``exact_preprocessing=True`` (full decode, bit-identical
  tensors to (a));
* ``(c) ours default``: the same with reduced decoding (JPEG DCT scaling to the smallest scale >= the NaFlex target).

Each runs with one thread ("per thread": one decode thread; (a) in the calling thread) and with the pool
(``num_workers`` threads; (a) on a thread pool of the same size, one image per task). In the same run: the cosine of
(c)'s vectors to (b)'s on the benchmark model, and each contender's peak memory, measured in a fresh child process
of its own (the growth of its peak RSS over its baseline after imports, model load and a one-image warm-up), so no
contender inherits another's high-water mark.
"""

from __future__ import annotations

import resource
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

from .. import data
from ..common import ScenarioResult, cosines, interleaved, log, measured
from ..context import BenchContext, is_gpu

NAME, NUMBER = "photos", 8
TITLE = "Real photos from files: reduced decoding vs exact vs transformers"
TARGET_VS_EXACT = 4.0  # (c) / (b), per thread, 12 MP JPEGs
TARGET_VS_TRANSFORMERS = 8.0  # (c) / (a), per thread, 12 MP JPEGs
MIN_COSINE = 0.9999
#: The GPU forward rate measured earlier (H200, So400m/16 at 256 patches, batch 32; BENCHMARKS.md, scenario 7):
#: how many decode cores feed it follows from the per-thread rates.
GPU_FORWARD_IMG_S = 448.0
HEADLINE = "12 MP JPEG"


def _contenders(paths: list[Path], processor, exact1, exact_pool, default1, default_pool, threads: int,
                pad_to: int) -> dict[str, Callable[[], Any]]:
    from PIL import Image

    from bge_siglip_vectorizer.preprocess import collate

    def transformers_one(path: Path):
        with Image.open(path) as image:
            return processor(images=[image.convert("RGB")], return_tensors="np")

    def ours(vectorizer) -> Callable[[], Any]:
        return lambda: collate(vectorizer.prepare_images(paths, show_progress=False), vectorizer.preprocessing,
                               pad_to=pad_to)

    def transformers_pool():
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(transformers_one, paths))

    return {
        "(a) transformers, 1 thread": lambda: [transformers_one(p) for p in paths],
        "(b) ours exact, 1 thread": ours(exact1),
        "(c) ours default, 1 thread": ours(default1),
        f"(a) transformers, {threads} threads": transformers_pool,
        f"(b) ours exact, {threads} threads": ours(exact_pool),
        f"(c) ours default, {threads} threads": ours(default_pool),
    }


def run(ctx: BenchContext) -> ScenarioResult:
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    vectorizer = ctx.vectorizer
    config = vectorizer.preprocessing
    budget = config.max_num_patches
    threads = vectorizer.num_workers
    per_group = 1 if ctx.quick else 16 if is_gpu(ctx.device) else 6
    groups = data.photo_files(ctx.images_dir, per_group, ctx.quick)
    result = ScenarioResult(NAME, NUMBER, f"{TITLE} ({per_group} files per group, {threads} decode threads)")
    processor = Siglip2ImageProcessorPil(max_num_patches=budget, patch_size=config.patch_size,
                                         image_mean=list(config.image_mean), image_std=list(config.image_std))
    # Sharing the loaded towers: only the preprocessing options differ.
    exact1 = ctx.with_patches(budget, exact_preprocessing=True, num_workers=1)
    default1 = ctx.with_patches(budget, num_workers=1)
    exact_pool = ctx.with_patches(budget, exact_preprocessing=True)
    default_pool = ctx.with_patches(budget)

    for group, paths in groups.items():
        contenders = _contenders(paths, processor, exact1, exact_pool, default1, default_pool, threads, budget)
        small = _contenders(paths[:1], processor, exact1, exact_pool, default1, default_pool, threads, budget)
        log(f"{NAME}: {group}, {len(paths)} files x {len(contenders)} contenders x {ctx.plan.reps} rounds")
        runs, _ = interleaved(contenders, ctx.plan.reps, ctx.plan.warmup, ctx.warmups(small))
        timings = {name: result.add(measured(run, len(paths), "img/s", f"{group}: {name}"))
                   for name, run in runs.items()}
        names = list(contenders)
        headline = group == HEADLINE

        # Fidelity in the same run: (c)'s vectors against (b)'s, on the benchmark model.
        exact_vectors = vectorizer.encode_prepared(exact_pool.prepare_images(paths, show_progress=False))
        default_vectors = vectorizer.encode_prepared(default_pool.prepare_images(paths, show_progress=False))
        similarity = cosines(default_vectors, exact_vectors)
        fidelity = min(similarity) >= MIN_COSINE
        result.checks[f"{group}: cosine (c) default vs (b) exact"] = {
            "min_cosine": min(similarity), "mean_cosine": sum(similarity) / len(similarity), "target": MIN_COSINE,
            "met": fidelity,
        }
        result.compare(f"{group}: (c) default / (b) exact, 1 thread", timings[names[2]], timings[names[1]],
                       TARGET_VS_EXACT if headline else None, condition=fidelity if headline else None)
        result.compare(f"{group}: (c) default / (a) transformers, 1 thread", timings[names[2]], timings[names[0]],
                       TARGET_VS_TRANSFORMERS if headline else None)
        result.compare(f"{group}: (c) default / (b) exact, {threads} threads", timings[names[5]], timings[names[4]])
        result.compare(f"{group}: (c) default / (a) transformers, {threads} threads", timings[names[5]],
                       timings[names[3]])
        per_core = timings[names[2]].median
        result.details.setdefault("per_thread_img_s", {})[group] = {
            "transformers": timings[names[0]].median, "exact": timings[names[1]].median, "default": per_core,
            "cores_to_feed_gpu_forward": round(GPU_FORWARD_IMG_S / per_core, 1) if per_core else None,
        }
        if headline:
            exact_core = timings[names[1]].median
            result.summary.append(
                f"{group}: {per_core:.1f} img/s per decode thread with reduced decoding ({exact_core:.1f} exact): "
                f"{GPU_FORWARD_IMG_S / per_core:.0f} cores feed the {GPU_FORWARD_IMG_S:.0f} img/s GPU forward "
                f"({GPU_FORWARD_IMG_S / exact_core:.0f} exact); min cosine (c) vs (b) {min(similarity):.6f}")

    mix = [path for paths in groups.values() for path in paths]
    result.details["peak_rss_mb"] = _peak_memory(ctx, mix, threads)
    result.details["files"] = {group: [p.name for p in paths] for group, paths in groups.items()}
    result.notes.append(
        "Per thread = one decode thread (transformers in the calling thread); the pool = num_workers threads. "
        "Peak RSS: each contender decodes the mixed set with the pool in a fresh child process; the number is the "
        "growth of the child's peak resident memory over its baseline after imports, model load and a one-image "
        "warm-up. (b) and (c) give patches of the same grid (the size comes from the full image), so batches pad "
        "the same; (c) differs from (b) only by the DCT-scaled decode (see the cosine checks).")
    return result


def _peak_memory(ctx: BenchContext, paths: list[Path], threads: int) -> dict[str, dict[str, float]]:
    peaks = {}
    for kind in ("transformers", "exact", "default"):
        # One fresh process per contender (spawned, not forked: nothing inherited from this one).
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as child:
            peaks[kind] = child.submit(_rss_child, kind, [str(p) for p in paths], str(ctx.model_dir), threads).result()
        log(f"{NAME}: peak RSS of {kind}: +{peaks[kind]['growth_mb']:.0f} MB over {peaks[kind]['baseline_mb']:.0f} MB")
    return peaks


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def _rss_child(kind: str, paths: list[str], model_dir: str, threads: int) -> dict[str, float]:
    """In a fresh process: the resident memory before, and the peak while ``kind`` prepares ``paths``.

    The peak is the kernel's high-water mark (VmHWM), reset to the current RSS just before the workload (writing 5
    to /proc/self/clear_refs), so the model load and imports before it do not count. Where that is not possible
    (not Linux), ``ru_maxrss`` is used and the growth may read 0 when loading peaked higher than the workload."""
    from PIL import Image
    from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

    from bge_siglip_vectorizer import Vectorizer

    if kind == "transformers":  # needs no model, only its preprocessing settings
        from bge_siglip_vectorizer.loading import ModelConfig

        config = ModelConfig.read(Path(model_dir)).preprocessing
    else:
        vectorizer = Vectorizer.from_pretrained(model_dir, device="cpu", num_workers=threads,
                                                exact_preprocessing=kind == "exact")
        config = vectorizer.preprocessing
    processor = Siglip2ImageProcessorPil(max_num_patches=config.max_num_patches, patch_size=config.patch_size,
                                         image_mean=list(config.image_mean), image_std=list(config.image_std))

    def transformers_one(path: str):
        with Image.open(path) as image:
            return processor(images=[image.convert("RGB")], return_tensors="np")["pixel_values"].shape

    def workload(items: list[str]):
        if kind == "transformers":
            with ThreadPoolExecutor(threads) as pool:
                return list(pool.map(transformers_one, items))
        return vectorizer.prepare_images(items, show_progress=False)

    workload(paths[:1])
    baseline = _status_mb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")  # reset the peak-RSS mark to the current RSS
        reset = True
    except OSError:
        reset = False
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workload(paths)
    if reset and baseline is not None:
        peak = _status_mb("VmHWM") or baseline
        return {"baseline_mb": baseline, "peak_mb": peak, "growth_mb": max(0.0, peak - baseline)}
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"baseline_mb": before, "peak_mb": after, "growth_mb": after - before}
