"""``bge-siglip bench``: our path vs the path a user would otherwise take, measured in the same run.

Nine scenarios (see ``BENCHMARKS.md``): preprocessing, end-to-end ingest into Chroma and Qdrant, the Weaviate
inference server with and without batching, per-item vs batched encoding, ONNX fp32/int8, text vs FlagEmbedding,
throughput scaling, photo files with reduced decoding, and Ray Data. The full run uses the real architectures
(SigLIP-2 So400m/16 NaFlex, XLM-R-large / BGE-M3)
with random weights, built once into a cache folder; ``--quick`` uses 2-layer versions and few items, to prove the
harness works (CI) — its numbers are not speed claims.

Writes ``OUT/bench.json`` (raw timings, machine description, versions), ``OUT/bench.txt`` (the printed table) and
``OUT/bench.png`` (scaling curves and ratios against targets).

Import-light: only ``run`` pulls in torch and the scenario stacks.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from .scenarios import NAMES

__all__ = ["add_arguments", "run", "main", "NAMES", "DESCRIPTION"]

DESCRIPTION = """\
Benchmarks: our path vs the path a user would otherwise take, in the same run on the same machine; ratios.
  1 preprocess  NaFlex preprocessing vs transformers' Siglip2 image processor (target >= 3x)
  2 ingest      files -> Chroma / Qdrant / Milvus / LanceDB through the adapters vs the pure forward (>= 0.9x)
  3 server      Weaviate inference server, batching vs one request at a time, 32 clients (>= 2.5x)
  4 per-item    one forward per item (Chroma's OpenCLIP pattern) vs batched encode_images
  5 onnx        ONNX Runtime fp32 / int8 vs torch (int8 >= 1.5x at cosine >= 0.99)
  6 text        encode_texts / encode_texts_all vs FlagEmbedding BGEM3FlagModel, dense and dense+sparse+colbert
                (>= 1x, same outputs); all three vs dense alone (<= 1.10x the time: one forward)
  7 scaling     throughput vs batch size and max_num_patches 64 / 256 / 1024
  8 photos      photo files (12/48 MP JPEG, 1080p, PNG screenshots): reduced decoding vs exact vs transformers
                (>= 4x exact and >= 8x transformers per thread on 12 MP JPEGs, cosine >= 0.9999)
  9 ray         files -> vectors via embed_dataset on local Ray vs in-process encode_images, both starting
                the model (>= 0.85x), and against a loaded model; the decode stage's images/s per CPU
The full run builds SigLIP-2 So400m/16 + XLM-R-large (random weights) once into the cache (~5 min, ~10 GB), then
takes ~50-55 min on 2 CPU cores (all scenarios). See BENCHMARKS.md.
"""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options to ``parser`` and return it."""
    parser.add_argument("--quick", action="store_true",
                        help="small models and few items: proves the harness works in about a minute (no speed claims)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"),
                        help="output folder for bench.json, bench.txt and bench.png [%(default)s]")
    parser.add_argument("--scenarios", nargs="+", metavar="NAME",
                        help=f"run only these (names or numbers 1-{len(NAMES)}): {', '.join(NAMES)} [all]")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the benchmark models and images are built once and reused "
                             "[$BGE_SIGLIP_BENCH_CACHE or ~/.cache/bge-siglip-bench]")
    parser.add_argument("--reps", type=int, default=None,
                        help="timed rounds per comparison (after warm-up) [3 full, 2 quick]")
    parser.add_argument("--device", default="cpu",
                        help="where the towers run: cpu, cuda, cuda:N. On a GPU the model runs in the core's default "
                             "dtype there (float16), the plan has more items, and the onnx scenario (a CPU "
                             "comparison) is left out [%(default)s]")
    parser.add_argument("--plot", type=Path, default=None, help="also copy the PNG here (e.g. docs/bench.png)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the selected scenarios; print the table; write JSON, text and PNG. Exit status 1 if any scenario failed."""
    from . import report, scenarios
    from .common import ScenarioResult, log, wait_for_quiet
    from .context import BenchContext, is_gpu
    from .machine import describe_machine, load_average

    try:
        names = scenarios.resolve(args.scenarios)
    except ValueError as exc:
        print(f"bge-siglip bench: {exc}", file=sys.stderr)
        return 2
    if is_gpu(args.device) and "onnx" in names:
        if args.scenarios:
            print("bge-siglip bench: the onnx scenario compares ONNX Runtime and torch on the CPU; "
                  "run it with --device cpu", file=sys.stderr)
            return 2
        names.remove("onnx")
    if args.reps is not None and args.reps < 1:
        print("bge-siglip bench: --reps must be at least 1", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    ctx = BenchContext(quick=args.quick, out=out, cache_dir=args.cache_dir, reps=args.reps, device=args.device)
    started = time.perf_counter()
    machine = describe_machine()
    log(f"{'quick' if args.quick else 'full'} run: {', '.join(names)}; cache {ctx.cache_dir}; output {out}")
    results: list[ScenarioResult] = []
    model_ready = None

    def describe(finished: bool) -> dict:
        backend = ctx.vectorizer.backend if model_ready is not None else None
        return {
            "quick": args.quick,
            "finished": finished,  # False: written after a scenario, the run went on (or was cut short)
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                     time.localtime(time.time() - (time.perf_counter() - started))),
            "duration_s": round(time.perf_counter() - started, 1),
            "model_ready_s": None if model_ready is None else round(model_ready, 1),
            "plan": _plan_json(ctx.plan),
            "machine": {**machine, "load_average_at_end": load_average()},
            "device": backend.device if backend else args.device,
            "dtype": backend.dtype if backend else None,
            "model": {"description": ctx.spec.description, "directory_name": ctx.spec.name, **ctx.model_info},
            "scenarios_run": names,
        }

    try:
        _ = ctx.vectorizer  # build (first run only) and load the model before any timing
        model_ready = time.perf_counter() - started
        for name in names:
            module = scenarios.load(name)
            log(f"[{module.NUMBER}/{len(NAMES)}] {module.TITLE}")
            quiet = None if args.quick else wait_for_quiet()  # CI (--quick) asserts no timing: do not wait there
            scenario_started = time.perf_counter()
            try:
                result = module.run(ctx)
            except Exception as exc:  # noqa: BLE001 - one broken scenario must not lose the others' numbers
                result = ScenarioResult(name, module.NUMBER, module.TITLE)
                result.record_error(exc)
            result.duration_s = time.perf_counter() - scenario_started
            result.details["foreign_cpu_share_before"] = quiet
            log(f"{name} took {result.duration_s:.0f} s")
            results.append(result)
            # Written after every scenario, so a run that is interrupted keeps the numbers of those that finished.
            report.write_json(out / "bench.json", describe(finished=False), results)
            gc.collect()
    finally:
        ctx.cleanup()
    description = describe(finished=True)
    text = report.table(description, results)
    print(text)
    report.write_json(out / "bench.json", description, results)
    (out / "bench.txt").write_text(text, encoding="utf-8")
    where = (f"{', '.join(machine['gpus']) or args.device} ({description['dtype']}), " if is_gpu(args.device) else "")
    renderer = report.plot(out / "bench.png", results,
                           f"bge-siglip bench ({'quick' if args.quick else 'full'}) - {where}{machine['cpu_model']}, "
                           f"{machine['usable_cpus']} CPUs, torch {machine['versions'].get('torch')}")
    if args.plot is not None:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "bench.png", args.plot)
    log(f"wrote {out / 'bench.json'}, {out / 'bench.txt'}, {out / 'bench.png'} ({renderer})")
    return 0 if all(r.status == "ok" for r in results) else 1


def _plan_json(plan) -> dict:
    from dataclasses import asdict

    return {k: ({str(kk): vv for kk, vv in v.items()} if isinstance(v, dict) else v) for k, v in asdict(plan).items()}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bge_siglip_tools.bench [options]`` (the same as ``bge-siglip bench``)."""
    parser = add_arguments(argparse.ArgumentParser(
        prog="bge-siglip bench", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter))
    return run(parser.parse_args(list(sys.argv[1:] if argv is None else argv)))
