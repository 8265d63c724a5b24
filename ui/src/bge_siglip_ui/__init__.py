"""``bge-siglip ui``: a search page for a folder of images or a Chroma / Qdrant collection, served on this machine.

    bge-siglip ui --model my-model --folder ~/Pictures
    bge-siglip ui --model my-model --store qdrant:./qdrant#photos

Python: ``UIState(UIOptions(model=..., folder=...))`` and ``create_app(state)`` give the FastAPI application;
:func:`~bge_siglip_ui.server.serve` runs it. Names load on first use, so ``bge-siglip --help`` imports no web stack.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "UIOptions": "command",
    "UIState": "app",
    "create_app": "app",
    "serve": "server",
    "FolderIndex": "gallery",
    "open_store": "stores",
    "Store": "stores",
    "StoreError": "stores",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bge_siglip_ui' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
