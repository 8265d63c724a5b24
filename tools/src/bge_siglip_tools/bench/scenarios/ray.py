"""9. Ray Data: files -> vectors with ``embed_dataset`` on local Ray vs in-process ``encode_images``, same files.

A Ray job starts its model where it runs: each ``embed_dataset`` run starts an actor (a new worker process that
imports torch and transformers and loads the model, then runs its first, cold forward), and Ray Data keeps no
actor between datasets. The in-process alternative a user runs for a batch of files (a script, or ``bge-siglip
ingest`` without ``--ray``) pays the same start once. So the comparison that measures what the engine adds is
like for like, both from a model on disk:

* ``in-process, new process``: a new Python process runs ``Vectorizer.from_pretrained`` then
  ``encode_images(paths)`` (decode thread pool one window ahead of the model) and hands the vectors back: the
  baseline of the target.
* ``Ray``: ``embed_dataset(read_binary_files(paths, include_paths=True), image_column="bytes")`` consumed with
  ``take_all`` on a Ray already up (``ray.init`` is once per driver; it is timed apart): CPU decode tasks, one
  model actor. The actor is given every core for its torch threads (``OMP_NUM_THREADS``) as the in-process model
  has them, while it reserves one Ray CPU, so decode tasks run beside it.
* ``in-process, model loaded``: ``encode_images(paths)`` on a Vectorizer this process loaded and warmed before the
  clock started: Ray against it is reported too (no target): the gap is the model start a long-lived process
  has already paid (the new process's start is measured, ``model start``).
* ``decode stage, 1 CPU``: the decode stage's own function (``PrepareImages``, the core's ``ImagePreparer``) on the
  same files' bytes in one thread: images per second per CPU, which decides how many CPUs feed one GPU actor.

The vectors of all three paths are compared in the same run.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
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

    plan = ctx.plan
    batch = plan.ingest_batch
    vectorizer = ctx.vectorizer
    paths = [str(p) for p in data.image_files(ctx.images_dir, plan.ray_images, ctx.quick, seed=300)]
    cpus = os.cpu_count() or 1
    result = ScenarioResult(NAME, NUMBER, f"{TITLE} ({len(paths)} files, batch {batch}, {cpus} CPUs)")
    started = not ray.is_initialized()
    ray_init_s: float | None = None  # timed only where this scenario starts Ray
    if started:
        begin = time.perf_counter()
        ray.init(num_cpus=cpus, num_gpus=0 if not ctx.full_warmup else None, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
        ray_init_s = time.perf_counter() - begin
    try:
        threads = {"runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(cpus)}}}
        gpus = 1 if ctx.full_warmup else 0

        def on_ray(items: list[str] = paths) -> dict[str, np.ndarray]:
            ds = embed_dataset(ray.data.read_binary_files(items, include_paths=True), ctx.model_dir,
                               image_column="bytes", batch_size=batch, device=ctx.device, num_gpus=gpus,
                               actor_options=None if gpus else threads)
            return {row["path"]: np.asarray(row["embedding"], dtype=np.float32) for row in ds.take_all()}

        new_process = _NewProcess(ctx.model_dir, ctx.device, batch)

        def loaded() -> np.ndarray:
            return vectorizer.encode_images(paths, batch_size=batch, show_progress=False)

        table = pa.table({"bytes": [open(p, "rb").read() for p in paths]})
        decode = PrepareImages(vectorizer.preparer, Columns(image="bytes"), threads=1)

        cold, distributed, already_loaded, stage = (
            "in-process encode_images, new process (import, load, encode)", "Ray embed_dataset (local)",
            "in-process encode_images, model loaded", "decode stage, 1 CPU")
        contenders = {cold: lambda: new_process(paths), distributed: on_ray, already_loaded: loaded,
                      stage: lambda: decode(table)}
        warmups = ctx.warmups({cold: lambda: new_process(paths[:1]), distributed: lambda: on_ray(paths[:1]),
                               already_loaded: lambda: vectorizer.encode_images(paths[:1]),
                               stage: lambda: decode(table.slice(0, 1))})
        log(f"{NAME}: {len(paths)} files x {len(contenders)} contenders x {plan.reps} rounds")
        with quiet_ray_data():  # the harness logs its own progress; Ray Data's per-run lines would drown it
            runs, last = interleaved(contenders, plan.reps, plan.warmup, warmups,
                                     on_round=lambda r: log(f"{NAME}: round {r + 1}/{plan.reps} done"))
        cold_m, on_ray_m, warm, decode_m = (result.add(measured(runs[n], len(paths), "img/s")) for n in contenders)
        starts = Measurement("model start in a new process (imports + from_pretrained)", 1, "starts/s",
                             list(new_process.starts))
        result.add(starts)
        result.compare("Ray embed_dataset / in-process encode_images (both start the model)", on_ray_m, cold_m, TARGET,
                       note="the engine's overhead: worker process, scheduling, object store")
        result.compare("Ray embed_dataset / in-process encode_images with the model already loaded", on_ray_m, warm,
                       None, note="includes the actor's model start, which the loaded process paid before")
        result.compare("decode stage per CPU / in-process end-to-end", decode_m, warm, None,
                       note="how many CPUs one model replica needs: its rate / this ratio")
        reference = dict(zip(paths, last[already_loaded]))
        for label, got in (("Ray", last[distributed]), ("new process", dict(zip(paths, last[cold])))):
            diffs = [float(np.abs(got[p] - reference[p]).max()) for p in paths]
            result.checks[f"{label} vectors vs loaded in-process"] = {"max_abs_diff": max(diffs),
                                                                     "ok": max(diffs) <= 1e-5}
        per_cpu = decode_m.median
        result.details.update({
            "decode_images_per_s_per_cpu": per_cpu,
            "model_start_s": float(np.median(starts.seconds)),
            "ray_init_s": ray_init_s,
            "cpus": cpus,
            "files": [p.rsplit("/", 1)[-1] for p in paths],
        })
        init = "Ray was up already" if ray_init_s is None else f"ray.init {ray_init_s:.1f} s"
        result.summary.append(f"decode stage: {per_cpu:.1f} img/s per CPU; model start in a new process "
                              f"{np.median(starts.seconds):.1f} s (imports + load); {init} (once per driver, outside "
                              "the Ray timings)")
        result.notes.append(
            "On one machine Ray adds a worker process per actor, task scheduling and object-store copies of the "
            "patches; on a cluster the decode tasks scale with its CPUs and the model actors with its GPUs (see "
            "the sizing table in BENCHMARKS.md)."
        )
    finally:
        if started:
            ray.shutdown()
    return result


_CHILD = """
import json, sys, time
started = time.perf_counter()
import numpy as np
from bge_siglip_vectorizer import Vectorizer
model, device, batch, listing, out = sys.argv[1:6]
vectorizer = Vectorizer.from_pretrained(model, device=device)
loaded = time.perf_counter()
with open(listing) as handle:
    paths = json.load(handle)
np.save(out, vectorizer.encode_images(paths, batch_size=int(batch), show_progress=False))
print(json.dumps({"start_s": loaded - started}))
"""


class _NewProcess:
    """``encode_images`` in a new Python process, as a batch job runs it: imports, model load, encode."""

    def __init__(self, model_dir: os.PathLike, device: str, batch: int) -> None:
        self.args = [str(model_dir), device, str(batch)]
        self.starts: list[float] = []  # seconds from the child's first line to its model loaded

    def __call__(self, paths: list[str]) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="bge-siglip-bench-ray-") as work:
            listing, out = os.path.join(work, "paths.json"), os.path.join(work, "vectors.npy")
            with open(listing, "w") as handle:
                json.dump(paths, handle)
            done = subprocess.run([sys.executable, "-c", _CHILD, *self.args, listing, out], check=True,
                                  capture_output=True, text=True)
            self.starts.append(json.loads(done.stdout.strip().splitlines()[-1])["start_s"])
            return np.load(out)
