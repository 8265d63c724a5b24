"""3. The Weaviate inference server: cross-request batching vs one request at a time.

The real server (``bge_siglip_weaviate.app.create_app``, uvicorn on 127.0.0.1 with the server's own config, in a
thread of this process, sharing the loaded towers) is started twice: with batching (its default: forward batch
sizes chosen at start-up from what batching gains on this hardware, then refined from the forwards it serves), and
with ``batching=False`` (the ``--no-batching`` mode: one request per forward round, the reference
``multi2vec-clip`` container's behaviour).
32 concurrent clients (httpx, asyncio) each send single-image ``/vectorize`` requests, as Weaviate does during an
import (one request per object, many in flight); every image is distinct, so nothing is de-duplicated. The clients
run in processes of their own (one per 4 CPUs, 1 to 4), as Weaviate does, so that they measure the server and not
themselves. Reported: throughput, p50/p99 latency, the forward passes the model actually ran and the batch sizes
the server chose (from ``/meta``), at 64, 256 and 1024 patches. On a CPU, after each round with batching on (the
server idle), the same run also times offline ``encode_images`` at several batch sizes on that round's images:
batching must come within 0.9x of the best of them (and never fall below 0.95x of no batching), and at 256
patches its p50 latency must stay within 1.1x of no batching's.
The request count and the whole run are bounded.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import socket
import statistics
import threading
import time
from typing import Any, Callable, Iterator

from .. import data
from ..common import NOISY, CpuMonitor, Measurement, ScenarioResult, log, percentile, timed
from ..context import BenchContext, is_gpu

NAME, NUMBER = "server", 3
TITLE = "Weaviate inference server: cross-request batching vs one request at a time"
GPU_TARGET = 2.5  # batching on / off at 256 patches, on a GPU
CPU_TARGET = 0.95  # batching on / off on a CPU, at every patch budget: never worse than one request at a time
OFFLINE_TARGET = 0.9  # batching on / the best offline encode_images rate at any batch size (CPU)
LATENCY_TARGET = 1.1  # p50 latency, batching on / off, at 256 patches (CPU)
# Batch sizes of the offline encode_images reference, on this many of the round's images (the largest size).
_OFFLINE_BATCHES = {True: (1, 4), False: (1, 2, 4, 8)}  # by ctx.quick
_DEADLINE_S = 1200.0  # a whole load round never runs longer than this
# Web-upload sizes (JPEG): what an import of photos into Weaviate typically carries.
_SIZES = ((1024, 768), (800, 600), (768, 1024), (1280, 720))


def _bodies(n: int, quick: bool, seed: int) -> list[bytes]:
    """``n`` request bodies, JSON-encoded: Weaviate sends one image per request during an import."""

    def body(i: int) -> bytes:
        w, h = _SIZES[i % len(_SIZES)]
        if quick:
            w, h = w // 4, h // 4
        image = data.photo_like(data.ImageSpec(w, h, "RGB", "JPEG", "upload"), seed + i)
        return json.dumps({"texts": [], "images": [base64.b64encode(_jpeg(image)).decode()]}).encode()

    return data.parallel_map(body, range(n))


def _jpeg(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class _Server:
    """uvicorn serving the app in a daemon thread, on a free 127.0.0.1 port."""

    def __init__(self, app) -> None:
        import httpx
        import uvicorn

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        from bge_siglip_weaviate.server import uvicorn_config

        self.server = uvicorn.Server(uvicorn_config(app, app.state.server.settings, log_level="warning",
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 300
        # Until the port is open and the model loaded and its batch sizes measured (ready: 204). One client, a
        # poll every 0.5 s: the server times forward passes meanwhile, and a new client per poll (an SSL context
        # each) every 50 ms took enough CPU and GIL from it to make its curve ~20% low.
        with httpx.Client(timeout=5) as http:
            while time.monotonic() < deadline:
                try:
                    if self.server.started and http.get(self.url + "/.well-known/ready").status_code == 204:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
        self.stop()
        raise RuntimeError("the inference server did not become ready")

    def meta(self) -> dict[str, Any]:
        import httpx

        return httpx.get(self.url + "/meta", timeout=30).json()["server"]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=120)
        self._sock.close()


_JSON = {"content-type": "application/json"}


async def _load(url: str, per_client: list[list[bytes]], timeout_s: float) -> tuple[float, float, list[float]]:
    """Every client sends its bodies one after another; all clients run concurrently.
    Returns (start, end) on the wall clock (comparable across processes) and every request's latency."""
    import httpx

    latencies: list[float] = []
    limits = httpx.Limits(max_connections=len(per_client), max_keepalive_connections=len(per_client))
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as http:
        async def client(bodies: list[bytes]) -> None:
            for body in bodies:
                started = time.perf_counter()
                response = await http.post("/vectorize", content=body, headers=_JSON)
                if response.status_code != 200:
                    raise RuntimeError(f"/vectorize answered {response.status_code}: {response.text[:200]}")
                if len(response.json()["imageVectors"]) != 1:
                    raise RuntimeError("/vectorize returned no image vector")
                latencies.append(time.perf_counter() - started)

        start = time.time()
        await asyncio.wait_for(asyncio.gather(*(client(b) for b in per_client)), timeout=timeout_s)
        return start, time.time(), latencies


def _load_generator_main(connection) -> None:
    """One load-generator process: take a round's share of the clients, say "ready", wait for "go", run it, send
    back (start, end, latencies) or the error."""
    while True:
        job = connection.recv()
        if job is None:
            return
        connection.send(("ready", None))
        connection.recv()  # go
        try:
            connection.send(("ok", asyncio.run(_load(*job))))
        except BaseException as exc:  # noqa: BLE001 - the parent raises it
            connection.send(("error", f"{type(exc).__name__}: {exc}"))


def client_processes() -> int:
    """How many processes the clients are spread over: one per 4 CPUs, 1 to 4. On a small machine more would
    take cores from the server; on a big one a single Python process (httpx) tops out near 100 req/s."""
    return max(1, min(4, (os.cpu_count() or 1) // 4))


class _LoadGenerator:
    """The concurrent clients, in processes of their own, as Weaviate is. In the server's process the clients'
    Python work (httpx, JSON) would compete with the server for the GIL, and one process of clients cannot send
    as fast as the server answers on a GPU; either way the benchmark would measure the clients, not the server.
    Each round's requests (pre-encoded JSON) reach every process before the clock starts; all start together."""

    def __init__(self, processes: int) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # this process runs threads (uvicorn, torch): no fork
        self._connections = []
        self.processes = []
        for number in range(processes):
            parent, child = context.Pipe()
            process = context.Process(target=_load_generator_main, args=(child,), daemon=True,
                                      name=f"bge-siglip-bench-clients-{number}")
            process.start()
            child.close()
            self._connections.append(parent)
            self.processes.append(process)

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(p.pid for p in self.processes if p.pid is not None)

    def run(self, url: str, per_client: list[list[bytes]], timeout_s: float) -> tuple[float, list[float]]:
        """Run one round; returns (wall seconds from the first start to the last end, latencies)."""
        shares = [per_client[i::len(self._connections)] for i in range(len(self._connections))]
        busy = [(connection, share) for connection, share in zip(self._connections, shares) if share]
        for connection, share in busy:
            connection.send((url, share, timeout_s))
        for connection, _ in busy:
            self._receive(connection, timeout_s)  # "ready": its share is unpickled
        for connection, _ in busy:
            connection.send("go")
        results = [self._receive(connection, timeout_s) for connection, _ in busy]
        start, end = min(r[0] for r in results), max(r[1] for r in results)
        return end - start, [x for r in results for x in r[2]]

    @staticmethod
    def _receive(connection, timeout_s: float):
        if not connection.poll(timeout_s + 60):
            raise RuntimeError("the load generator did not answer")
        status, value = connection.recv()
        if status == "error":
            raise RuntimeError(f"load generator: {value}")
        return value

    def close(self) -> None:
        for connection in self._connections:
            try:
                connection.send(None)
            except OSError:
                pass
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        for connection in self._connections:
            connection.close()


def _serve_and_load(ctx: BenchContext, patches: int, batching: bool, make_round: Callable[[int], list[list[bytes]]],
                    n_rounds: int, warmup: list[bytes],
                    after_round: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Start the server, warm it up, run ``n_rounds`` load rounds (plus one more for each round that other
    processes disturbed), stop it. ``make_round(i)`` gives round i's requests, per client; ``after_round(i)`` runs
    after round i, while the server is up and idle (the offline reference, timed back to back with it)."""
    from bge_siglip_weaviate.app import create_app
    from bge_siglip_weaviate.settings import ServerSettings

    vectorizer = ctx.with_patches(patches, allow_urls=False)  # a fresh instance: its stats count only this server
    # Batch sizes are left to the server (measured at its start-up, refined online): that is the default under test.
    wanted = {"model": str(ctx.model_dir), "device": ctx.device, "max_num_patches": patches, "batching": batching,
              "max_wait_ms": 5.0, "max_queue_items": 1024,
              # The default (45 s, under Weaviate's 50 s client timeout) answers 503 to requests that wait longer
              # for the worker; without batching the 32nd request waits ~31 forwards. Measure throughput instead.
              "max_queue_wait_s": _DEADLINE_S}
    known = {f.name for f in dataclasses.fields(ServerSettings)}
    settings = ServerSettings(**{k: v for k, v in wanted.items() if k in known})
    server = _Server(create_app(settings, vectorizer=vectorizer))
    clients = _LoadGenerator(client_processes())
    try:
        # Warm-up: one client and a few requests, or on a GPU a whole round (new batch shapes cost kernel selection).
        clients.run(server.url, make_round(-1) if ctx.full_warmup else [warmup], _DEADLINE_S)
        before = server.meta()
        walls, latencies, foreign = [], [], []
        extra = 0
        while len(walls) < n_rounds + extra:
            monitor = CpuMonitor()
            wall, lat = clients.run(server.url, make_round(len(walls)), _DEADLINE_S)
            share = monitor.share()
            walls.append(wall)
            latencies.append(lat)
            foreign.append(share if share is not None else float("nan"))
            if after_round is not None:
                after_round(len(walls) - 1)
            if share is not None and share > NOISY and len(walls) <= n_rounds:  # planned rounds only
                log(f"{NAME}: other processes were busy during this round; one more round")
                extra += 1
        after = server.meta()
    finally:
        clients.close()
        server.stop()
        vectorizer.close()
    stats = {k: after["encode_stats"][k] - before["encode_stats"][k] for k in ("images", "image_batches")}
    # Latency percentiles over the quiet rounds (all rounds if none was quiet), like the throughput median.
    quiet = [lat for lat, share in zip(latencies, foreign) if not share > NOISY] or latencies
    return {
        "walls": walls,
        "foreign": foreign,
        "latencies": [x for lat in quiet for x in lat],
        "forward_passes": stats["image_batches"],
        "images_encoded": stats["images"],
        "worker_batches": after["worker_batches"] - before["worker_batches"],
        "largest_batch_requests": after["largest_batch_requests"],
        "batch_sizes": after["batch_sizes"]["images"],
    }


class _OfflineReference:
    """The offline ``encode_images`` rate at each batch size, on the first images of each load round (file bytes,
    so decoding counts as it does in the server), timed right after that round while the server is idle.

    Timed back to back with the server's rounds, so both see the same machine: on a shared host the speed drifts
    by 10-20% over minutes, as much as the margin under test. The best size is the one with the best median over
    the rounds; the comparison pairs each server round with that size's run of the same round.
    """

    def __init__(self, ctx: BenchContext, patches: int, make_round: Callable[[int], list[list[bytes]]]) -> None:
        self.sizes = _OFFLINE_BATCHES[ctx.quick]
        self.patches = patches
        self._ctx = ctx
        self._make_round = make_round
        self._vectorizer = None
        self.runs = {b: Measurement(f"{patches} patches, offline encode_images batch {b}", max(self.sizes), "img/s")
                     for b in self.sizes}

    def __call__(self, number: int) -> None:
        """Time every batch size once on round ``number``'s first images, in an order rotating by round."""
        bodies = [body for client in self._make_round(number) for body in client][:max(self.sizes)]
        files = [base64.b64decode(json.loads(body)["images"][0]) for body in bodies]
        if self._vectorizer is None:
            self._vectorizer = self._ctx.with_patches(self.patches)
            for b in self.sizes:  # warm-up: the first forward of a new shape allocates
                self._vectorizer.encode_images(files[:b], batch_size=b, show_progress=False)
        shift = number % len(self.sizes)
        for b in self.sizes[shift:] + self.sizes[:shift]:
            seconds, _, share = timed(lambda b=b: self._vectorizer.encode_images(files, batch_size=b,
                                                                                 show_progress=False))
            self.runs[b].seconds.append(seconds)
            self.runs[b].foreign.append(share if share is not None else float("nan"))

    def best(self) -> Measurement:
        return max(self.runs.values(), key=lambda m: m.median)

    def by_size(self) -> dict[int, float]:
        return {b: m.median for b, m in self.runs.items()}

    def close(self) -> None:
        if self._vectorizer is not None:
            self._vectorizer.close()


def _online_summary(online: dict[str, Any] | None) -> str:
    """The refinement's end state: the size chosen from the served forwards, and each size's forwards and rate."""
    if not online or not online["forwards"]:
        return ""
    sizes = ", ".join(f"{p['batch_size']} x{p['timings']}"
                      + (f" {p['items_per_s']:.3g}/s" if p["items_per_s"] is not None else "") for p in online["curve"])
    return (f", refined online to {online['max_batch_size']} after {online['forwards']} forwards (timings by size "
            f"in force: {sizes or 'none'})")


def run(ctx: BenchContext) -> ScenarioResult:
    plan = ctx.plan
    clients = plan.server_clients
    result = ScenarioResult(NAME, NUMBER, f"{TITLE} ({clients} concurrent clients, single-image requests)")
    seeds = iter(range(5000, 10**6, 1000))  # distinct images everywhere: no request is a duplicate of another
    for index, (patches, n_rounds) in enumerate(plan.server_rounds.items()):
        with result.part(f"{patches} patches"):  # a failure at 1024 patches keeps what 256 and 64 measured
            _measure(ctx, result, patches, n_rounds, off_first=index % 2 == 0, seeds=seeds)
    if is_gpu(ctx.device):
        result.notes.append(
            "On a GPU one image's forward leaves most of the chip idle, so batching multiplies what it can do; the "
            "gain is then bounded by what feeds it: decoding, patchifying and the HTTP layer, on the CPU."
        )
        return result
    result.notes.append(
        "Cross-request batching can only gain what a bigger forward batch gains (scenario 7). On CPU cores, one "
        "256-patch image already gives matrix products big enough to keep the cores busy, so the server measures "
        "that gain at start-up, caps its batches where it stops (often 1-8 on a CPU) and goes on measuring it from "
        "the forwards it serves (trying the neighbouring sizes under load): bigger batches would only add waiting "
        "(everyone in a batch waits for the whole batch)."
    )
    return result


def _measure(ctx: BenchContext, result: ScenarioResult, patches: int, n_rounds: int, off_first: bool,
             seeds: Iterator[int]) -> None:
    """One patch budget: both server modes on the same rounds of requests, the paired offline reference, ratios."""
    clients, per_client = ctx.plan.server_clients, ctx.plan.server_requests_per_client
    requests = clients * per_client
    per_mode: dict[bool, dict[str, Any]] = {}
    warmup = _bodies(2, ctx.quick, next(seeds))
    rounds: dict[int, list[list[bytes]]] = {}

    def make_round(number: int) -> list[list[bytes]]:
        # Round i carries the same requests in both modes (a paired comparison); within a round, and across
        # rounds, every image is distinct.
        if number not in rounds:
            bodies = _bodies(requests, ctx.quick, next(seeds))
            rounds[number] = [bodies[c * per_client:(c + 1) * per_client] for c in range(clients)]
        return rounds[number]

    gpu = is_gpu(ctx.device)
    offline = None if gpu else _OfflineReference(ctx, patches, make_round)
    # Alternate which mode goes first, so slow drift in foreign load does not always favour the same one.
    try:
        for batching in ((False, True) if off_first else (True, False)):
            log(f"{NAME}: {patches} patches, batching {'on' if batching else 'off'}: {n_rounds} x {requests} "
                f"requests" + (f", each followed by offline encode_images at batch sizes {list(offline.sizes)}"
                               if batching and offline else ""))
            per_mode[batching] = _serve_and_load(ctx, patches, batching, make_round, n_rounds, warmup,
                                                 after_round=offline if batching else None)
    finally:
        if offline is not None:
            offline.close()
    rates = {}
    for batching, run_ in per_mode.items():
        label = f"{patches} patches, batching {'on' if batching else 'off'} (req/s)"
        rates[batching] = result.add(Measurement(label, requests, "req/s", run_["walls"], run_["foreign"]))
        lat = run_["latencies"]
        chosen = run_["batch_sizes"]
        result.details[label] = {
            "requests": len(lat),
            "p50_ms": round(1000 * statistics.median(lat), 1),
            "p99_ms": round(1000 * percentile(lat, 99), 1),
            "max_ms": round(1000 * max(lat), 1),
            "forward_passes": run_["forward_passes"],
            "images_encoded": run_["images_encoded"],
            "worker_batches": run_["worker_batches"],
            "largest_batch_requests": run_["largest_batch_requests"],
            "chosen_batch_size": chosen["max_batch_size"],
            "start_up_batch_size": chosen.get("start_up_max_batch_size", chosen["max_batch_size"]),
            "batch_size_curve": chosen["curve"],
            "batch_size_stopped": chosen["stopped"],
            # The sizes the served forwards ran at and what they measured (None: not refined online).
            "batch_size_online": chosen.get("online"),
        }
        curve = ", ".join(f"{p['batch_size']}: {p['items_per_s']:.3g}/s" for p in chosen["curve"])
        start = chosen.get("start_up_max_batch_size", chosen["max_batch_size"])
        result.summary.append(
            f"{label.split(' (')[0]}: latency p50 {statistics.median(lat):.1f} s, p99 {percentile(lat, 99):.1f} s; "
            f"{run_['forward_passes']} forward passes for {run_['images_encoded']} images; batch size at start-up "
            f"{start} ({chosen['stopped']}{'; ' + curve if curve else ''}){_online_summary(chosen.get('online'))}"
        )
    target = (GPU_TARGET if patches == 256 else None) if gpu else CPU_TARGET
    result.compare(f"server throughput, batching on / off, {patches} patches", rates[True], rates[False], target)
    if offline is not None:
        best = result.add(offline.best())
        result.details[f"{patches} patches, offline encode_images img/s by batch size"] = {
            str(b): round(r, 4) for b, r in offline.by_size().items()}
        result.compare(f"server batching on / best offline encode_images, {patches} patches", rates[True], best,
                       OFFLINE_TARGET)
    if patches == 256 and not gpu:
        # Latency as a rate (1 / p50), so "p50 on <= 1.1x off" reads as a ratio >= 1/1.1 like every target.
        p50 = {b: statistics.median(per_mode[b]["latencies"]) for b in per_mode}
        inverse = {b: result.add(Measurement(f"256 patches, batching {'on' if b else 'off'}: 1 / p50 latency",
                                             1, "1/s", [p50[b]])) for b in per_mode}
        result.compare("server 1/p50 latency, batching on / off, 256 patches (p50 on <= 1.1x off)",
                       inverse[True], inverse[False], round(1 / LATENCY_TARGET, 3))
