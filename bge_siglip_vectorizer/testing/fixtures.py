"""pytest plugin (auto-registered through the ``pytest11`` entry point): shared fixtures for adapter tests.

Imports nothing heavy at collection time; each tiny model is built on first use, once per test session.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bge_siglip_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BGE-SigLIP model directory (real formats, no semantic meaning)."""
    from .tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("bge-siglip-tiny") / "model")


@pytest.fixture(scope="session")
def bge_siglip_other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny model: same architecture and vector size as ``bge_siglip_model_dir``, other weights, so another
    fingerprint. What model-guard tests write and query with: a store must refuse it, and its dimension check
    cannot (the sizes match)."""
    from .tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("bge-siglip-tiny-other") / "model", seed=1)


@pytest.fixture(scope="session")
def bge_siglip_vectorizer(bge_siglip_model_dir: Path):
    """The process-wide shared Vectorizer for the tiny model (the same instance adapters get)."""
    from ..vectorizer import shared_vectorizer

    return shared_vectorizer(bge_siglip_model_dir, device="cpu")
