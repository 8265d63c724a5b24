"""The benchmark harness (``bge-siglip bench``) runs end to end in --quick mode and writes its files.

No timing is asserted anywhere: CI machines are shared and noisy. What is checked is that every scenario ran,
produced positive numbers and ratios, and that the machine description and raw timings are in the JSON.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time

import pytest

from bge_siglip_tools.bench import NAMES, main
from bge_siglip_tools.bench.models import QUICK
from bge_siglip_tools.bench.scenarios import resolve


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bench")
    out = root / "out"
    code = main(["--quick", "--out", str(out), "--cache-dir", str(root / "cache"), "--plot", str(root / "copy.png")])
    return code, out, root


def test_quick_run_succeeds_and_writes_json_png_and_table(quick_run) -> None:
    code, out, root = quick_run
    assert code == 0
    for name in ("bench.json", "bench.png", "bench.txt"):
        assert (out / name).is_file(), name
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (root / "copy.png").read_bytes() == (out / "bench.png").read_bytes()
    assert not (out / "work").exists()  # databases of the ingest scenario are cleaned up
    table = (out / "bench.txt").read_text()
    assert "Ratios" in table and table.count(">= ") >= 5  # every target is printed next to its ratio


def test_json_has_every_scenario_with_numbers(quick_run) -> None:
    _, out, _ = quick_run
    report = json.loads((out / "bench.json").read_text())
    assert report["schema"] == "bge-siglip-bench/1" and report["quick"] is True
    assert set(report["scenarios"]) == set(NAMES) and len(NAMES) == 10
    for name, scenario in report["scenarios"].items():
        details = scenario["details"]
        assert scenario["status"] == "ok", (name, scenario["error"], details.get("tracebacks"))
        assert scenario["measurements"], name
        for m in scenario["measurements"]:
            assert m["seconds"] and all(s > 0 for s in m["seconds"]), (name, m["label"])
            assert len(m["rates"]) == len(m["seconds"])
            assert m["median"] > 0 and m["min"] <= m["median"] <= m["max"], (name, m["label"])
        assert scenario["comparisons"], name
        for c in scenario["comparisons"]:
            assert c["ratio"] is not None and math.isfinite(c["ratio"]) and c["ratio"] > 0, (name, c["label"])
            assert c["met"] in (True, False, None)
    targets = {c["label"]: c["target"] for s in report["scenarios"].values() for c in s["comparisons"]}
    assert {3.0, 0.9, 0.95, 0.909, 1.5, 1.0} <= {t for t in targets.values() if t is not None}


def test_json_describes_machine_model_and_checks(quick_run) -> None:
    _, out, _ = quick_run
    report = json.loads((out / "bench.json").read_text())
    machine = report["machine"]
    assert machine["cpu_model"] and machine["logical_cpus"] >= 1 and machine["torch_threads"] >= 1
    assert machine["versions"]["torch"] and machine["versions"]["transformers"]
    assert machine["load_average_at_start"] is None or len(machine["load_average_at_start"]) == 3
    assert report["model"]["vision_parameters"] > 0 and report["model"]["tokenizer_vocab"] > 5
    assert report["finished"] is True and (report["device"], report["dtype"]) == ("cpu", "float32")
    scenarios = report["scenarios"]
    # Correctness checks made in the same run as the timings.
    assert all(v["identical"] for v in scenarios["preprocess"]["checks"].values())
    assert scenarios["text"]["checks"]["same vectors"]["ok"] is True
    assert scenarios["text"]["checks"]["same sparse and multi-vectors"]["ok"] is True
    assert {"ours dense+sparse+multi / ours dense (time <= 1.10x)", "ours / FlagEmbedding dense+sparse+colbert"} <= {
        c["label"] for c in scenarios["text"]["comparisons"]}
    assert scenarios["ingest"]["checks"]["stored vectors vs pure forward"]["chroma_min_cosine"] > 0.9999
    assert scenarios["onnx"]["checks"]["cosine to torch"]["images"]["onnxruntime fp32"]["min_cosine"] > 0.999
    server = scenarios["server"]["details"]
    modes = {label: d for label, d in server.items() if isinstance(d, dict) and "forward_passes" in d}
    on = [d for label, d in modes.items() if "batching on" in label]
    off = [d for label, d in modes.items() if "batching off" in label]
    assert len(on) == len(off) == 3  # at 64, 256 and 1024 patches
    assert all(d["forward_passes"] == d["requests"] for d in off)  # one at a time without batching
    for d in on:  # with it: sizes measured at start-up, then refined from every served forward (none repeated)
        assert d["batch_size_curve"] and d["start_up_batch_size"] in [p["batch_size"] for p in d["batch_size_curve"]]
        online = d["batch_size_online"]
        # Every forward was observed (the warm-up's too); the sizes timed are caps it ran under, within the ceiling.
        assert online["forwards"] >= d["forward_passes"] and online["ceiling"] == 64
        assert all(1 <= p["batch_size"] <= 64 for p in online["curve"])
        assert d["largest_batch_requests"] <= online["ceiling"]
    assert any(d["forward_passes"] < d["requests"] for d in on) or all(
        d["start_up_batch_size"] == 1 and all(p["batch_size"] == 1 for p in d["batch_size_online"]["curve"])
        for d in on)
    offline = [d for label, d in server.items() if "offline" in label and isinstance(d, dict)]
    assert len(offline) == 3 and all(rate > 0 for d in offline for rate in d.values())
    labels = {c["label"] for c in scenarios["server"]["comparisons"]}
    assert sum("best offline" in label for label in labels) == 3 and any("p50" in label for label in labels)
    assert set(scenarios["scaling"]["details"]["curves"]) == {"64", "256", "1024"}
    ray_checks = scenarios["ray"]["checks"]
    assert ray_checks["Ray vectors vs loaded in-process"]["ok"] is True
    assert ray_checks["new process vectors vs loaded in-process"]["ok"] is True
    assert scenarios["ray"]["details"]["decode_images_per_s_per_cpu"] > 0
    # ray.init is timed only where the scenario starts Ray (in this suite a session fixture may have started it).
    ray_details = scenarios["ray"]["details"]
    assert ray_details["model_start_s"] > 0 and (ray_details["ray_init_s"] is None or ray_details["ray_init_s"] > 0)
    ray_targets = [c for c in scenarios["ray"]["comparisons"] if c["target"] is not None]
    assert [c["baseline"] for c in ray_targets] == ["in-process encode_images, new process (import, load, encode)"]
    photos = scenarios["photos"]
    assert {c["min_cosine"] > 0.999 for c in photos["checks"].values()} == {True}  # quick model: no 0.9999 claim
    assert set(photos["details"]["files"]) == {"12 MP JPEG", "48 MP JPEG", "1080p JPEG", "1440p PNG"}
    assert all(m["peak_mb"] >= m["baseline_mb"] > 0 for m in photos["details"]["peak_rss_mb"].values())


def test_scenario_selection_by_name_or_number() -> None:
    assert resolve(None) == list(NAMES)
    assert resolve(["7", "ingest"]) == ["ingest", "scaling"]
    assert resolve(["onnx,1"]) == ["preprocess", "onnx"]
    with pytest.raises(ValueError, match="unknown scenario"):
        resolve(["nope"])
    assert main(["--scenarios", "nope"]) == 2
    # ONNX Runtime (CPU) against torch on a GPU is no comparison: refused before anything is built.
    assert main(["--device", "cuda", "--scenarios", "onnx"]) == 2


def test_plot_falls_back_to_pillow_without_matplotlib(tmp_path, monkeypatch) -> None:
    from bge_siglip_tools.bench import report
    from bge_siglip_tools.bench.common import Measurement, ScenarioResult

    result = ScenarioResult("scaling", 7, "scaling")
    a = result.add(Measurement("64 patches, batch 1", 4, seconds=[1.0, 1.2]))
    b = result.add(Measurement("64 patches, batch 4", 4, seconds=[0.5, 0.6]))
    result.compare("batch 4 / batch 1", b, a, 1.5)
    result.details["curves"] = {"64": [{"batch_size": 1, "median": a.median, "min": a.low, "max": a.high},
                                       {"batch_size": 4, "median": b.median, "min": b.low, "max": b.high}]}
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert report.plot(tmp_path / "p.png", [result], "title") == "pillow"
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_disturbed_runs_are_repeated_and_left_out_of_the_median(monkeypatch) -> None:
    from bge_siglip_tools.bench import common

    shares = iter([0.9] + [0.0] * 10)  # the first timed run sees other processes using 90% of the CPU
    monkeypatch.setattr(common.CpuMonitor, "share", lambda self: next(shares))
    calls: list[str] = []
    runs, _ = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, reps=2, warmup=0)
    assert calls.count("a") == 3 and calls.count("b") == 2  # a's disturbed run was repeated once
    measured = common.measured(runs["a"], items=4, unit="img/s")
    assert len(measured.seconds) == 3 and not measured.quiet(0) and len(measured.counted) == 2
    assert measured.to_json()["runs_counted"] == 2 and measured.to_json()["foreign_cpu_share"][0] == 0.9


def test_cpu_of_a_grandchild_counts_as_ours_and_its_end_takes_nothing_off() -> None:
    """A local Ray cluster's actors are grandchildren nobody has reaped yet: their CPU is the benchmark's own; when
    one is torn down, what it used before does not vanish from the total (the next run would look disturbed)."""
    import subprocess

    from bge_siglip_tools.bench import common

    busy = ("import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass\n"
            "print('done', flush=True)\ntime.sleep(60)")
    # The child auto-reaps (SIGCHLD ignored, as a daemon may): the grandchild's times never reach anyone's totals.
    spawn = ("import signal, subprocess, sys, time; signal.signal(signal.SIGCHLD, signal.SIG_IGN); "
             f"subprocess.Popen([sys.executable, '-c', {busy!r}]); time.sleep(60)")
    before = common.own_cpu_seconds()
    child = subprocess.Popen([sys.executable, "-c", spawn], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "done"  # the grandchild has burnt its 0.6 s and sleeps, alive
        alive = common.own_cpu_seconds()
        assert common.cpu_used(before, alive) >= 0.6
        grandchildren = [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and (common._stat_fields(pid) or
                         ["", "0"])[1] == str(child.pid)]
        assert grandchildren and all(pid in alive for pid in grandchildren)
        for pid in grandchildren:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{pid}") for pid in grandchildren) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert common.cpu_used(alive, common.own_cpu_seconds()) >= 0  # not -0.6
    finally:
        child.kill()
        child.wait(timeout=30)


def test_load_generator_spreads_clients_over_processes_against_the_real_server(quick_run) -> None:
    """The server scenario's clients, in two processes of their own, against the real inference server: every
    request is answered once, latencies fall inside the round's wall time, and a refused request is an error."""
    from bge_siglip_vectorizer import Vectorizer
    from bge_siglip_tools.bench.scenarios import server
    from bge_siglip_weaviate.app import create_app
    from bge_siglip_weaviate.settings import ServerSettings

    _, _, root = quick_run
    model = root / "cache" / QUICK.name
    vectorizer = Vectorizer.from_pretrained(model, device="cpu")
    running = server._Server(create_app(ServerSettings(model=str(model)), vectorizer=vectorizer))
    clients = server._LoadGenerator(2)
    try:
        assert len(set(clients.pids)) == 2
        bodies = server._bodies(6, quick=True, seed=1)
        per_client = [bodies[i:i + 2] for i in range(0, 6, 2)]  # 3 clients, 2 requests each, over 2 processes
        before = running.meta()["encode_stats"]["images"]
        wall, latencies = clients.run(running.url, per_client, 120)
        assert running.meta()["encode_stats"]["images"] - before == 6
        assert len(latencies) == 6 and all(0 < x <= wall + 0.05 for x in latencies)
        with pytest.raises(RuntimeError, match="answered 400"):
            clients.run(running.url, [[b'{"images": ["not base64!"]}']], 60)
    finally:
        clients.close()
        running.stop()
        vectorizer.close()
    assert not any(process.is_alive() for process in clients.processes)


def test_offline_reference_times_every_batch_size_after_each_round_and_pairs_the_best(quick_run) -> None:
    """The server scenario's offline reference: each call times every batch size once on that round's images (so
    round i of the server pairs with run i of the reference), and the best size is the best median over rounds."""
    from bge_siglip_tools.bench.context import BenchContext
    from bge_siglip_tools.bench.scenarios import server

    _, _, root = quick_run
    ctx = BenchContext(quick=True, out=root / "reference", cache_dir=root / "cache")
    rounds = {n: [server._bodies(4, quick=True, seed=100 * n)] for n in range(2)}
    asked: list[int] = []

    def make_round(number: int) -> list[list[bytes]]:
        asked.append(number)
        return rounds[number]

    reference = server._OfflineReference(ctx, 64, make_round)
    try:
        reference(0)
        reference(1)
    finally:
        reference.close()
    assert asked == [0, 1]  # each round's own images, not the first round's twice
    assert set(reference.runs) == set(reference.sizes) and len(reference.sizes) >= 2
    for size, run in reference.runs.items():
        assert len(run.seconds) == len(run.foreign) == 2 and all(s > 0 for s in run.seconds), size
        assert run.items == max(reference.sizes) and f"batch {size}" in run.label
    best = reference.best()
    assert best.median == max(run.median for run in reference.runs.values())
    assert reference.by_size() == {size: run.median for size, run in reference.runs.items()}


def test_a_failing_part_keeps_what_the_other_parts_of_its_scenario_measured(quick_run, monkeypatch) -> None:
    """A scenario of independent parts (here scaling's patch budgets) that fails in one part still reports the
    others: the error names the part, the run exits 1, and the table prints both the error and the measurements."""
    from bge_siglip_tools.bench.context import BenchContext

    _, _, root = quick_run
    real = BenchContext.with_patches

    def with_patches(self, max_num_patches: int, **options):
        if max_num_patches == 256:
            raise RuntimeError("the 256-patch part broke")
        return real(self, max_num_patches, **options)

    monkeypatch.setattr(BenchContext, "with_patches", with_patches)
    out = root / "partial"
    assert main(["--quick", "--scenarios", "scaling", "--out", str(out), "--cache-dir", str(root / "cache")]) == 1
    scaling = json.loads((out / "bench.json").read_text())["scenarios"]["scaling"]
    assert scaling["status"] == "error" and scaling["error"] == "256 patches: RuntimeError: the 256-patch part broke"
    assert "the 256-patch part broke" in scaling["details"]["tracebacks"]["256 patches"]
    labels = [m["label"] for m in scaling["measurements"]]
    assert any(label.startswith("64 patches") for label in labels)  # before the failing part
    assert any(label.startswith("1024 patches") for label in labels)  # and after it: the run went on
    assert not any(label.startswith("256 patches") for label in labels)
    assert set(scaling["details"]["curves"]) == {"64", "1024"}
    table = (out / "bench.txt").read_text()
    assert "ERROR: 256 patches: RuntimeError" in table and "64 patches, batch 1" in table


def test_a_scenario_that_raises_is_recorded_and_the_run_goes_on(quick_run, monkeypatch) -> None:
    from bge_siglip_tools.bench import scenarios

    _, _, root = quick_run

    def broken(ctx):
        raise ValueError("scaling broke before measuring")

    monkeypatch.setattr(scenarios.load("scaling"), "run", broken)
    out = root / "broken"
    # ui runs after scaling (scenarios run in their numbered order): the run went on past the broken one
    assert main(["--quick", "--scenarios", "scaling", "ui", "--out", str(out),
                 "--cache-dir", str(root / "cache")]) == 1
    report = json.loads((out / "bench.json").read_text())["scenarios"]
    scaling = report["scaling"]
    assert scaling["status"] == "error" and scaling["error"] == "ValueError: scaling broke before measuring"
    assert list(scaling["details"]["tracebacks"]) == ["scenario"]
    assert "in broken" in scaling["details"]["tracebacks"]["scenario"]
    assert report["ui"]["status"] == "ok" and report["ui"]["measurements"]
