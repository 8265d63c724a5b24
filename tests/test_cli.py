"""The bge-siglip command, run as users run it (a real subprocess) and in-process for speed."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from bge_siglip_vectorizer import Vectorizer
from bge_siglip_vectorizer.cli import main
from bge_siglip_vectorizer.testing.images import encode_image, sample_image


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bge_siglip_vectorizer.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_make_tiny_info_and_encode_end_to_end(tmp_path):
    model = tmp_path / "tiny"
    made = _run("make-tiny", str(model))
    assert made.returncode == 0, made.stderr
    info = _run("info", str(model), "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["dim"] == 32
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    (images / "a.png").write_bytes(encode_image(sample_image(64, 48, seed=1), "PNG"))
    (images / "nested" / "b.jpg").write_bytes(encode_image(sample_image(48, 64, seed=2), "JPEG"))
    out = tmp_path / "vectors.jsonl"
    encoded = _run("encode", "--model", str(model), "--images", str(images), "--texts", "ein Hund", "a dog", "--out", str(out))
    assert encoded.returncode == 0, encoded.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["kind"], r["input"].rsplit("/", 1)[-1]) for r in rows] == [
        ("image", "a.png"), ("image", "b.jpg"), ("text", "ein Hund"), ("text", "a dog")
    ]
    vectorizer = Vectorizer.from_pretrained(model)
    expected = np.concatenate(
        [vectorizer.encode_images([images / "a.png", images / "nested" / "b.jpg"]), vectorizer.encode_texts(["ein Hund", "a dog"])]
    )
    np.testing.assert_allclose(np.array([r["vector"] for r in rows]), expected, atol=1e-6)


def test_encode_to_npy_with_a_texts_file(bge_siglip_model_dir, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("eins\n\nzwei\n", encoding="utf-8")
    out = tmp_path / "v.npy"
    assert main(["encode", "--model", str(bge_siglip_model_dir), "--texts-file", str(texts), "--out", str(out)]) == 0
    vectors = np.load(out)
    assert vectors.shape == (2, 32) and vectors.dtype == np.float32
    assert "0 image rows then 2 text rows" in capsys.readouterr().err


def test_bad_input_is_one_clear_line_not_a_traceback(bge_siglip_model_dir, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = _run("encode", "--model", str(bge_siglip_model_dir), "--images", str(bad), "--texts", "ok")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: image #0") and "broken.png" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing")]) == 1
    assert "no such model directory" in capsys.readouterr().err


def test_nothing_to_encode(bge_siglip_model_dir, capsys):
    assert main(["encode", "--model", str(bge_siglip_model_dir)]) == 2
    assert "nothing to encode" in capsys.readouterr().err


def test_help_lists_every_command():
    result = _run("--help")
    assert result.returncode == 0
    for command in ("encode", "make-tiny", "convert", "info", "serve"):
        assert command in result.stdout


def test_serve_is_handed_to_the_server_package():
    result = _run("serve", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: bge-siglip serve") and "--max-batch-size" in result.stdout
