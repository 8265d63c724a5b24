"""Training writes checkpoints and the caption cache atomically, and resuming survives a file that does not load."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from bge_siglip_vectorizer import DataError
from bge_siglip_vectorizer.testing import make_tiny_model, small_text_tower
from bge_siglip_vectorizer.training import TrainConfig, make_shapes, train


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    shapes = make_shapes(tmp_path_factory.mktemp("shapes"), n=48, languages=("en",), seed=0)
    vision = make_tiny_model(tmp_path_factory.mktemp("tiny") / "m") / "vision"

    def make(out, **overrides):
        options = dict(train_data=str(shapes / "train.jsonl"), val_data=str(shapes / "val.jsonl"), out=str(out),
                       vision=str(vision), text=str(small_text_tower()), text_pooling="mean", epochs=2,
                       batch_size=16, trainable_vision_layers=1, max_num_patches=16, show_progress=False,
                       save_every=1, keep_checkpoints=5, eval_every=10**6)
        options.update(overrides)
        return TrainConfig(**options)

    return make


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_resume_skips_a_checkpoint_that_does_not_load(config, tmp_path):
    whole = train(config(tmp_path / "run"))
    checkpoints = sorted((tmp_path / "run").glob("checkpoint-*"))
    assert len(checkpoints) >= 2
    resumed_out = tmp_path / "resumed"
    for checkpoint in checkpoints[-2:]:
        shutil.copytree(checkpoint, resumed_out / checkpoint.name)
    _truncate(resumed_out / checkpoints[-1].name / "trainer_state.pt")  # as a full disk leaves it
    with pytest.warns(RuntimeWarning, match=f"skipping checkpoint .*{checkpoints[-1].name}.*does not load"):
        resumed = train(config(resumed_out, resume="latest"))
    assert resumed.steps == whole.steps
    # The resumed run rewrote that checkpoint whole (written aside, then renamed): it loads again.
    torch.load(resumed_out / checkpoints[-1].name / "trainer_state.pt", weights_only=True)
    # Asked for by name, a checkpoint that does not load is an error that says so (no silent substitute).
    _truncate(resumed_out / checkpoints[-1].name / "trainer_state.pt")
    with pytest.raises(DataError, match="the checkpoint does not load"):
        train(config(tmp_path / "named", resume=str(resumed_out / checkpoints[-1].name)))


def test_a_damaged_caption_cache_is_recomputed(config, tmp_path):
    train(config(tmp_path / "first", epochs=1, save_every=0, cache_dir=str(tmp_path / "cache")))
    (cache,) = (tmp_path / "cache").glob("captions-*.npy")
    good = np.load(cache)
    _truncate(cache)
    with pytest.warns(RuntimeWarning, match="recomputing caption cache"):
        train(config(tmp_path / "second", epochs=1, save_every=0, cache_dir=str(tmp_path / "cache")))
    np.testing.assert_array_equal(np.load(cache), good)


def test_a_write_that_fails_midway_leaves_no_checkpoint(config, tmp_path, monkeypatch):
    def dies_midway(obj, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"PK\x03\x04 partial")  # what a killed torch.save leaves behind
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "run"))
    assert list((tmp_path / "run").glob("checkpoint-*")) == []  # nothing that --resume latest would take
    assert [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")] == []
