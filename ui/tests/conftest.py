"""Shared pieces of the page's tests: a gallery folder of distinct images and a started UIState."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pytest

from bge_siglip_ui.app import UIState
from bge_siglip_ui.command import UIOptions
from bge_siglip_vectorizer.testing import sample_image

#: (width, height, format): sizes and aspect ratios vary, so do the patch grids.
GALLERY = [(96, 64, "PNG"), (64, 96, "JPEG"), (80, 80, "PNG"), (120, 48, "JPEG"), (50, 70, "PNG"), (72, 72, "PNG"),
           (100, 60, "PNG"), (40, 120, "JPEG")]


def _write_image(path: Path, seed: int, size: tuple[int, int] = (80, 80), fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sample_image(*size, "RGB", seed=seed).save(path, fmt)
    return path


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """``write_image(path, seed, size=(80, 80), fmt="PNG")``: a distinct sample image file."""
    return _write_image


@pytest.fixture
def gallery(tmp_path: Path) -> Path:
    """A folder of 8 distinct images (one in a subfolder), an exact copy of one, and a file that is no image."""
    folder = tmp_path / "photos"
    for i, (width, height, fmt) in enumerate(GALLERY):
        name = f"{'trips/' if i == 3 else ''}photo{i}.{'jpg' if fmt == 'JPEG' else 'png'}"
        _write_image(folder / name, seed=10 + i, size=(width, height), fmt=fmt)
    shutil.copyfile(folder / "photo0.png", folder / "trips" / "copy-of-photo0.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    return folder


@pytest.fixture
def start_state(bge_siglip_vectorizer, tmp_path: Path) -> Callable[..., UIState]:
    """``start_state(folder=..., store=..., model=...)``: a UIState on the tiny model, started and settled."""
    states: list[UIState] = []

    def start(vectorizer=bge_siglip_vectorizer, **options) -> UIState:
        options.setdefault("model", "tiny")
        options.setdefault("cache_dir", str(tmp_path / "cache"))
        state = UIState(UIOptions(**options), vectorizer=vectorizer, show_progress=False)
        states.append(state)
        state.start()
        assert state.done.wait(120), "the page did not finish starting"
        return state

    yield start
    for state in states:
        state.close()
