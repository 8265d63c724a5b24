"""The benchmark scenarios, in run order. Each module has ``NAME``, ``NUMBER``, ``TITLE`` and ``run(ctx)``."""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module (imported only when run: each pulls in its own stack: chromadb, uvicorn, onnxruntime, ...)
MODULES: dict[str, str] = {
    "preprocess": "preprocess",
    "ingest": "ingest",
    "server": "server",
    "per-item": "per_item",
    "onnx": "onnx_runtime",
    "text": "text",
    "scaling": "scaling",
    "photos": "photos",
    "ray": "ray",
    "ui": "ui",
}
NAMES: tuple[str, ...] = tuple(MODULES)


def load(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{MODULES[name]}")


def resolve(selection: list[str] | None) -> list[str]:
    """Scenario names from names or numbers (``ingest``, ``2``), in run order; all when ``selection`` is empty."""
    if not selection:
        return list(NAMES)
    chosen = set()
    for item in selection:
        for token in item.split(","):
            token = token.strip().lower()
            if not token:
                continue
            if token.isdigit() and 1 <= int(token) <= len(NAMES):
                chosen.add(NAMES[int(token) - 1])
            elif token in MODULES:
                chosen.add(token)
            else:
                raise ValueError(f"unknown scenario {token!r}; choose from {', '.join(NAMES)} (or 1-{len(NAMES)})")
    return [name for name in NAMES if name in chosen]
