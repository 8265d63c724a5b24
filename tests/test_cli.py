"""The bge-siglip command, run as users run it (a real subprocess) and in-process for speed."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np

from bge_siglip_vectorizer import Vectorizer
from bge_siglip_vectorizer.cli import main
from bge_siglip_vectorizer.testing.images import encode_image, sample_image


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bge_siglip_vectorizer", *args], capture_output=True, text=True, timeout=300
    )


def test_make_tiny_info_and_encode_end_to_end(tmp_path, capsys):
    model = tmp_path / "tiny"
    assert main(["make-tiny", str(model)]) == 0
    assert f"wrote tiny model to {model}" in capsys.readouterr().out
    assert main(["info", str(model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dim"] == 32 and info["text_outputs"] == ["dense", "sparse", "multivector"]
    assert (info["sparse_dim"], info["multivector_dim"]) == (258, 32)
    assert info["fingerprints"] == Vectorizer.from_pretrained(model).fingerprints
    assert main(["info", str(model)]) == 0
    assert re.search(r"^text_outputs +dense, sparse, multivector$", capsys.readouterr().out, re.MULTILINE)
    images = tmp_path / "images"
    (images / "nested").mkdir(parents=True)
    (images / "a.png").write_bytes(encode_image(sample_image(64, 48, seed=1), "PNG"))
    (images / "nested" / "b.jpg").write_bytes(encode_image(sample_image(48, 64, seed=2), "JPEG"))
    out = tmp_path / "vectors.jsonl"
    # The one real subprocess: the command as users run it.
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


def test_bad_input_is_one_clear_line_not_a_traceback(bge_siglip_model_dir, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    # In process: an exception main() does not turn into its one line would propagate and fail the test.
    assert main(["encode", "--model", str(bge_siglip_model_dir), "--images", str(bad), "--texts", "ok"]) == 1
    err = capsys.readouterr().err
    assert err.strip().startswith("error: image #0") and "broken.png" in err and len(err.strip().splitlines()) == 1


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nothing")]) == 1
    assert "no such model directory" in capsys.readouterr().err


def test_nothing_to_encode(bge_siglip_model_dir, capsys):
    assert main(["encode", "--model", str(bge_siglip_model_dir)]) == 2
    assert "nothing to encode" in capsys.readouterr().err


def test_help_lists_every_core_command():
    result = _run("--help")
    assert result.returncode == 0
    for command in ("encode", "make-tiny", "make-shapes", "train", "eval", "convert", "export-onnx", "info"):
        assert f"    {command}" in result.stdout


def test_commands_of_other_distributions_join_through_entry_points(bge_siglip_model_dir, monkeypatch, capsys):
    from bge_siglip_vectorizer import cli

    ran: list[str] = []
    hello = cli.Command(help="say hello", add_arguments=lambda p: p.add_argument("--name", default="you"),
                        run=lambda args: ran.append(args.name) or 0)
    monkeypatch.setattr(cli, "plugin_commands", lambda: {"hello": hello, "encode": hello})
    assert main(["hello", "--name", "Ada"]) == 0 and ran == ["Ada"]
    # A plug-in cannot replace a core command.
    assert main(["encode", "--model", str(bge_siglip_model_dir)]) == 2 and ran == ["Ada"]
    assert "nothing to encode" in capsys.readouterr().err
    # A command of this project's other distributions that is not installed: say which one brings it.
    monkeypatch.setattr(cli, "plugin_commands", lambda: {})
    assert main(["serve", "--model", "x"]) == 2
    assert "bge-siglip-weaviate" in capsys.readouterr().err


def test_the_installed_entry_points_are_commands():
    from bge_siglip_vectorizer.cli import COMMAND_GROUP, Command

    from importlib import metadata

    for entry in metadata.entry_points(group=COMMAND_GROUP):
        assert isinstance(entry.load(), Command), entry
