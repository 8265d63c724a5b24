"""``bge-siglip make-shapes`` prints a train command that works as printed."""

from __future__ import annotations

import shlex

from bge_siglip_vectorizer.cli import main as cli_main
from bge_siglip_vectorizer.testing import make_tiny_model, small_text_tower


def test_make_shapes_prints_the_train_command_that_works(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["make-shapes", "my shapes", "--n", "24", "--languages", "en"]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.strip().startswith("bge-siglip train ")]
    argv = shlex.split(line)[1:]
    # As printed, plus local towers (the defaults are hub ids, unreachable here) and a short run.
    vision = make_tiny_model(tmp_path / "tiny") / "vision"
    extra = ["--vision", str(vision), "--text", str(small_text_tower()), "--text-pooling", "mean", "--epochs", "1",
             "--max-num-patches", "16", "--trainable-vision-layers", "0", "--no-progress"]
    assert cli_main(argv + extra) == 0
    assert (tmp_path / "my shapes-model" / "bge_siglip_config.json").is_file()
