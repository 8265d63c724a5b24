"""The offline end-to-end demo (the README's main command) through the real adapters."""

from __future__ import annotations

import pytest

from bge_siglip_tools.demo import run_demo


def test_demo_runs_end_to_end_offline(tmp_path):
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", out=lines.append)
    text = "\n".join(lines)
    assert "Streifen in rot" in text and "[5/5]" in text
    assert result.recall["text_to_image"]["R@1"] >= 0.9
    assert result.query_hits["chroma"] >= 0.8 and result.query_hits["qdrant"] >= 0.8
    assert (tmp_path / "demo" / "chroma").is_dir() and (tmp_path / "demo" / "qdrant").is_dir()


def test_demo_never_deletes_a_directory_it_did_not_make(tmp_path):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"not really a photo")
    with pytest.raises(Exception, match="was not made by the demo"):
        run_demo(precious, out=lambda line: None)
    assert (precious / "holiday.jpg").read_bytes() == b"not really a photo"
