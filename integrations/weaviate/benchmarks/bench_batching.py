"""Cross-request batching vs the reference container's one-request-at-a-time serving.

Sends what Weaviate sends during an import: one ``/vectorize`` request per object (a caption and an image), with
``--concurrency`` requests in flight, to the real server (uvicorn on 127.0.0.1) started twice from the same model:
once with batching, once with ``--no-batching``. Prints throughput, latency percentiles and forward passes.

    python integrations/weaviate/benchmarks/bench_batching.py --model DIR [--requests 256] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import socket
import statistics
import threading
import time

import httpx
import uvicorn

from bge_siglip_vectorizer.testing.images import encode_image, sample_image
from bge_siglip_weaviate.app import create_app
from bge_siglip_weaviate.settings import ServerSettings


def _start(settings: ServerSettings) -> tuple[str, uvicorn.Server, threading.Thread]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    while True:  # until the model is loaded
        try:
            if server.started and httpx.get(url + "/.well-known/ready").status_code == 204:
                return url, server, thread
        except httpx.TransportError:
            pass
        time.sleep(0.1)


async def _load(url: str, bodies: list[dict], concurrency: int) -> list[float]:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=httpx.Limits(max_connections=concurrency)) as http:
        async def one(body: dict) -> None:
            async with gate:
                started = time.perf_counter()
                response = await http.post("/vectorize", json=body)
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(one(body) for body in bodies))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default=None)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=16, help="in flight, like Weaviate's GOMAXPROCS*2")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--image-size", type=int, default=384)
    args = parser.parse_args()

    bodies = [
        {"texts": [f"a photo of object number {i}"],
         "images": [base64.b64encode(encode_image(sample_image(args.image_size, args.image_size - i % 64, seed=i), "JPEG")).decode()]}
        for i in range(args.requests)
    ]
    for batching in (False, True):
        settings = ServerSettings(model=args.model, device=args.device, batching=batching,
                                  max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
                                  max_queue_items=max(1024, 2 * args.requests))
        url, server, thread = _start(settings)
        asyncio.run(_load(url, bodies[: min(16, len(bodies))], args.concurrency))  # warm-up
        before = httpx.get(url + "/meta").json()["server"]
        started = time.perf_counter()
        latencies = sorted(asyncio.run(_load(url, bodies, args.concurrency)))
        elapsed = time.perf_counter() - started
        after = httpx.get(url + "/meta").json()["server"]
        forward = sum(after["encode_stats"][k] - before["encode_stats"][k] for k in ("text_batches", "image_batches"))
        print(
            f"{'batching   ' if batching else 'no-batching'}  {args.requests / elapsed:7.1f} req/s  "
            f"p50 {1000 * statistics.median(latencies):7.1f} ms  p95 {1000 * latencies[int(0.95 * (len(latencies) - 1))]:7.1f} ms  "
            f"worker batches {after['worker_batches'] - before['worker_batches']:4d}  forward passes {forward:4d}  "
            f"({args.requests} requests, {args.concurrency} in flight)"
        )
        server.should_exit = True
        thread.join()


if __name__ == "__main__":
    main()
