"""9. Ray Data: files -> vectors with ``embed_dataset`` on local Ray vs in-process ``encode_images``, same files.

* ``in-process``: ``Vectorizer.encode_images(paths)`` (decode thread pool one window ahead of the model).
* ``Ray``: ``embed_dataset(read_binary_files(paths, include_paths=True), image_column="bytes")`` consumed with
  ``take_all``: CPU decode tasks, one model actor. The actor is given every core for its torch threads
  (``OMP_NUM_THREADS``) as the in-process model has them, while it reserves one Ray CPU, so decode tasks run beside
  it. Each timed run starts its own actor pool (Ray Data keeps none between datasets), so the model load is inside
  the Ray timing; it is measured apart (``model load``) to show how much of the gap it is.
* ``decode stage, 1 CPU``: the decode stage's own function (``PrepareImages``, the core's ``ImagePreparer``) on the
  same files' bytes in one thread: images per second per CPU, which decides how many CPUs feed one GPU actor.

The vectors of both paths are compared in the same run.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from .. import data
from ..common import Measurement, ScenarioResult, interleaved, log, measured
from ..context import BenchContext

NAME, NUMBER = "ray", 9
TITLE = "Ray Data embed_dataset (local) vs in-process encode_images"
TARGET = 0.85


def run(ctx: BenchContext) -> ScenarioResult:
    import pyarrow as pa
    import ray

    from bge_siglip_ray import Columns, embed_dataset, quiet_ray_data
    from bge_siglip_ray.embed import PrepareImages
    from bge_siglip_vectorizer import Vectorizer

    plan = ctx.plan
    batch = plan.ingest_batch
    vectorizer = ctx.vectorizer
    paths = [str(p) for p in data.image_files(ctx.images_dir, plan.ray_images, ctx.quick, seed=300)]
    cpus = os.cpu_count() or 1
    result = ScenarioResult(NAME, NUMBER, f"{TITLE} ({len(paths)} files, batch {batch}, {cpus} CPUs)")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=cpus, num_gpus=0 if not ctx.full_warmup else None, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
    try:
        threads = {"runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(cpus)}}}
        gpus = 1 if ctx.full_warmup else 0

        def on_ray(items: list[str] = paths) -> dict[str, np.ndarray]:
            ds = embed_dataset(ray.data.read_binary_files(items, include_paths=True), ctx.model_dir,
                               image_column="bytes", batch_size=batch, device=ctx.device, num_gpus=gpus,
                               actor_options=None if gpus else threads)
            return {row["path"]: np.asarray(row["embedding"], dtype=np.float32) for row in ds.take_all()}

        def in_process() -> np.ndarray:
            return vectorizer.encode_images(paths, batch_size=batch, show_progress=False)

        table = pa.table({"bytes": [open(p, "rb").read() for p in paths]})
        decode = PrepareImages(vectorizer.preparer, Columns(image="bytes"), threads=1)

        contenders = {"in-process encode_images": in_process, "Ray embed_dataset (local)": on_ray,
                      "decode stage, 1 CPU": lambda: decode(table)}
        warmups = ctx.warmups({"in-process encode_images": lambda: vectorizer.encode_images(paths[:1]),
                               "Ray embed_dataset (local)": lambda: on_ray(paths[:1]),
                               "decode stage, 1 CPU": lambda: decode(table.slice(0, 1))})
        log(f"{NAME}: {len(paths)} files x 3 contenders x {plan.reps} rounds")
        with quiet_ray_data():  # the harness logs its own progress; Ray Data's per-run lines would drown it
            runs, last = interleaved(contenders, plan.reps, plan.warmup, warmups,
                                     on_round=lambda r: log(f"{NAME}: round {r + 1}/{plan.reps} done"))
        names = list(contenders)
        local, on_ray_m, decode_m = (result.add(measured(runs[n], len(paths), "img/s")) for n in names)
        loads = Measurement("model load (Vectorizer.from_pretrained, inside each Ray run)", 1, "loads/s")
        for _ in range(2):
            begin = time.perf_counter()
            Vectorizer.from_pretrained(ctx.model_dir, device=ctx.device)
            loads.seconds.append(time.perf_counter() - begin)
        result.add(loads)
        result.compare("Ray embed_dataset / in-process encode_images", on_ray_m, local, TARGET,
                       note="includes one actor start (model load) per run")
        result.compare("decode stage per CPU / in-process end-to-end", decode_m, local, None,
                       note="how many CPUs one model replica needs: its rate / this ratio")
        reference = dict(zip(paths, last[names[0]]))
        got = last[names[1]]
        diffs = [float(np.abs(got[p] - reference[p]).max()) for p in paths]
        result.checks["Ray vectors vs in-process"] = {"max_abs_diff": max(diffs), "ok": max(diffs) <= 1e-5}
        per_cpu = decode_m.median
        result.details.update({
            "decode_images_per_s_per_cpu": per_cpu,
            "model_load_s": float(np.median(loads.seconds)),
            "cpus": cpus,
            "files": [p.rsplit("/", 1)[-1] for p in paths],
        })
        result.summary.append(f"decode stage: {per_cpu:.1f} img/s per CPU; model load {np.median(loads.seconds):.1f}"
                              " s per actor start")
        result.notes.append(
            "On one machine Ray adds task scheduling, object-store copies of the patches and one actor start per "
            "run; on a cluster the decode tasks scale with its CPUs and the model actors with its GPUs (see the "
            "sizing table in BENCHMARKS.md)."
        )
    finally:
        if started:
            ray.shutdown()
    return result
