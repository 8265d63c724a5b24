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
def bge_siglip_other_heads_model_dir(bge_siglip_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bge_siglip_model_dir`` with other sparse and multi-vector heads: the same dense vectors and
    ``fingerprint``, other ``fingerprints["sparse"]`` and ``["multivector"]``. A store keeping those granularities
    must refuse it there (the dense check alone cannot)."""
    from .tiny import make_head_variant

    return make_head_variant(bge_siglip_model_dir, tmp_path_factory.mktemp("bge-siglip-other-heads") / "model",
                             "other")


@pytest.fixture(scope="session")
def bge_siglip_dense_only_model_dir(bge_siglip_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bge_siglip_model_dir`` without BGE-M3's heads: dense vectors only (sparse or multi-vector output is a
    ``MissingHeadError``)."""
    from .tiny import make_head_variant

    return make_head_variant(bge_siglip_model_dir, tmp_path_factory.mktemp("bge-siglip-dense-only") / "model", "none")


@pytest.fixture(scope="session")
def bge_siglip_vectorizer(bge_siglip_model_dir: Path):
    """The process-wide shared Vectorizer for the tiny model (the same instance adapters get)."""
    from ..vectorizer import shared_vectorizer

    return shared_vectorizer(bge_siglip_model_dir, device="cpu")
