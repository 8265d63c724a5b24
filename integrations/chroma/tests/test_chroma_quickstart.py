"""``examples/chroma_quickstart.py`` runs end to end on a tiny model, twice (create, then reopen from the config).

Run in-process with ``runpy`` (a new interpreter per run would cost more than the rest of the module; reopening in a
separate process is covered by ``test_chroma_reopen.py``).
"""

from __future__ import annotations

import re
import runpy
import sys
from pathlib import Path

import pytest

from bge_siglip_vectorizer.testing import sample_image

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "chroma_quickstart.py"


def _run(monkeypatch, capsys, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), *args])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    return capsys.readouterr().out


@pytest.mark.skipif(not EXAMPLE.exists(), reason="examples/ is not part of this checkout (installed package only)")
def test_quickstart_indexes_and_answers_text_and_image_queries(bge_siglip_model_dir, tmp_path, monkeypatch, capsys):
    images = tmp_path / "photos"
    (images / "nested").mkdir(parents=True)
    for i in range(3):
        sample_image(60 + 20 * i, 48, "RGB", seed=i).save(images / f"photo-{i}.jpg")
    sample_image(40, 40, "RGBA", seed=7).save(images / "nested" / "alpha.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    args = ["--images", str(images), "--db", str(tmp_path / "db"), "--query", "ein Hund am Strand", "-k", "2"]

    first = _run(monkeypatch, capsys, "--model", str(bge_siglip_model_dir), *args)
    assert "created collection 'photos'" in first
    assert "skipping" in first and "broken.png" in first
    assert "4 images in the collection" in first
    assert "text -> images: 'ein Hund am Strand'" in first
    # the image query uses an indexed image, which must come back first at distance 0 (float noise may print -0.0000)
    hit = re.search(r"image -> images: 'nested/alpha.png'\n  1\. nested/alpha.png  \(cosine distance (-?[0-9.]+)\)", first)
    assert hit is not None, first
    assert abs(float(hit.group(1))) < 1e-4

    monkeypatch.chdir(tmp_path.parent)
    second = _run(monkeypatch, capsys, "--model", "/not/used/when/reopening", *args)
    assert "reopened collection 'photos'" in second
    assert "4 images in the collection" in second
    assert first.split("text -> images")[1] == second.split("text -> images")[1]
