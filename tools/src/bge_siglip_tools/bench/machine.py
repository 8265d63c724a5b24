"""What the numbers were measured on: CPU, cores, memory, threads, load and library versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

# Distributions whose versions bound or explain the numbers (missing ones are reported as null).
_DISTRIBUTIONS = (
    "bge-siglip-vectorizer", "torch", "transformers", "tokenizers", "numpy", "pillow", "onnx", "onnxruntime",
    "chromadb", "qdrant-client", "fastapi", "uvicorn", "httpx", "FlagEmbedding", "matplotlib",
    "bge-siglip-chroma", "bge-siglip-qdrant", "bge-siglip-weaviate",
)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in _DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def describe_machine() -> dict[str, Any]:
    """JSON-able machine description (no host names or paths)."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        pass
    simd = [name for name in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "fma") if f" {name}" in flags]
    return {
        "cpu_model": cpu_model(),
        "cpu_simd": simd,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": memory_total_gib(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda": bool(torch.cuda.is_available()),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available() else [],
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "load_average_at_start": load_average(),
        "versions": versions(),
    }
