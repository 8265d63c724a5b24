"""One real local Ray for the whole test session (started once: ~5 s), quiet, and a folder of small image files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """``ray.init(num_cpus=2)``, shared by every Ray test (and by the bench scenario when the suite runs whole).

    Quiet: no worker output on the driver, Ray's own INFO lines off, and Ray Data's driver logs at WARNING (pytest
    captures every record, and Ray Data logs a dict of metrics per operator every few seconds at DEBUG level: a
    failing test would print tens of kilobytes of them)."""
    import ray

    from bge_siglip_ray import quiet_ray_data

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    with quiet_ray_data():
        yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 distinct small photos (JPEG and PNG, varied sizes and modes) in a folder with a sub-folder."""
    from bge_siglip_vectorizer.testing.images import encode_image, sample_image

    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    sizes = [(64, 48), (40, 90), (120, 30), (33, 33), (80, 60), (50, 70)]
    for i in range(12):
        width, height = sizes[i % len(sizes)]
        mode = ("RGB", "L", "RGBA")[i % 3]
        fmt = "JPEG" if mode == "RGB" else "PNG"
        folder = root / "sub" if i % 4 == 0 else root
        (folder / f"img{i:02d}.{fmt.lower().replace('jpeg', 'jpg')}").write_bytes(
            encode_image(sample_image(width, height, mode, seed=i), fmt))
    return root


@pytest.fixture(scope="session")
def photos(image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's 12 photos in one folder, plus one corrupt file (``broken.png``)."""
    from bge_siglip_vectorizer.testing.images import encode_image, sample_image

    folder = tmp_path_factory.mktemp("ingest-photos")
    for f in image_dir.rglob("*.*"):
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.png").write_bytes(encode_image(sample_image(80, 80, seed=5), "PNG")[:200])
    return folder
