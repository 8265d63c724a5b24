"""Research checkpoint conversion (parity with the reference forward), composed towers, hub-layout vision towers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import Siglip2Config, Siglip2Model, Siglip2VisionConfig, Siglip2VisionModel
from transformers.models.siglip2.image_processing_pil_siglip2 import Siglip2ImageProcessorPil

from bge_siglip_vectorizer import ModelLoadError, Vectorizer
from bge_siglip_vectorizer.cli import main as cli_main
from bge_siglip_vectorizer.convert import convert_research_checkpoint
from bge_siglip_vectorizer.testing.images import sample_images


def _research_model(hidden: int, heads: int, seed: int, dim: int = 32):
    """What the research code trained: a Siglip2 vision tower and nn.Sequential(Linear, GELU, Linear)."""
    torch.manual_seed(seed)
    config = Siglip2VisionConfig(
        hidden_size=hidden, intermediate_size=64, num_hidden_layers=2, num_attention_heads=heads, num_patches=256
    )
    vision = Siglip2VisionModel(config).eval()
    projector = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, dim))
    return vision, projector


def _save_checkpoint(path, vision, projector, nested: bool):
    # transformers-4 era wrappers: `vision_model.<transformer>` or `vision_model.vision_model.<transformer>`.
    prefix = "vision_model.vision_model." if nested else "vision_model."
    state = {prefix + k: v for k, v in vision.state_dict().items()}
    state.update({f"projector.{k}": v for k, v in projector.state_dict().items()})
    state["logit_scale"] = torch.tensor(2.3)
    state["logit_bias"] = torch.tensor(-9.5)
    torch.save(state, path)


def _reference_vectors(vision, projector, images, max_num_patches=256):
    processor = Siglip2ImageProcessorPil(max_num_patches=max_num_patches)
    inputs = processor(images=images, do_convert_rgb=True, return_tensors="pt")
    with torch.no_grad():
        return F.normalize(projector(vision(**inputs).pooler_output), dim=-1).numpy()


@pytest.mark.parametrize("nested", [False, True])
def test_converted_checkpoint_matches_the_reference_forward(tmp_path, bge_siglip_model_dir, nested):
    vision, projector = _research_model(hidden=32, heads=2, seed=1)
    checkpoint = tmp_path / "model_checkpoint.pt"
    _save_checkpoint(checkpoint, vision, projector, nested)
    vision.save_pretrained(tmp_path / "vision-config")  # tiny sizes are not a published tower: give the config
    out = convert_research_checkpoint(
        checkpoint, tmp_path / "converted", text_tower=str(bge_siglip_model_dir / "text"),
        vision_config=str(tmp_path / "vision-config"),
    )
    vectorizer = Vectorizer.from_pretrained(out)
    images = sample_images(seed=21)
    expected = _reference_vectors(vision, projector, images)
    assert np.abs(vectorizer.encode_images(images, batch_size=4) - expected).max() <= 1e-5
    state = vectorizer.components.image_encoder.projector_state()
    assert float(state["logit_scale"]) == pytest.approx(2.3) and float(state["logit_bias"]) == pytest.approx(-9.5)


def test_vision_config_is_inferred_for_published_tower_sizes(tmp_path, bge_siglip_model_dir):
    # hidden 768 is SigLIP base (12 heads): no config needed.
    vision, projector = _research_model(hidden=768, heads=12, seed=2)
    checkpoint = tmp_path / "model_checkpoint.pt"
    _save_checkpoint(checkpoint, vision, projector, nested=False)
    code = cli_main(["convert", str(checkpoint), "--out", str(tmp_path / "out"), "--text-tower", str(bge_siglip_model_dir / "text")])
    assert code == 0
    vectorizer = Vectorizer.from_pretrained(tmp_path / "out")
    config = vectorizer.components.image_encoder.vision.config
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (768, 12, 2)
    images = sample_images(seed=4)[:3]
    assert np.abs(vectorizer.encode_images(images) - _reference_vectors(vision, projector, images)).max() <= 1e-5


def test_converted_model_gets_the_text_towers_bge_m3_heads(tmp_path, bge_siglip_model_dir, capsys):
    vision, projector = _research_model(hidden=32, heads=2, seed=2)
    checkpoint = tmp_path / "model_checkpoint.pt"
    _save_checkpoint(checkpoint, vision, projector, nested=False)
    vision.save_pretrained(tmp_path / "vision-config")
    text = str(bge_siglip_model_dir / "text")
    assert cli_main(["convert", str(checkpoint), "--out", str(tmp_path / "out"), "--text-tower", text,
                     "--vision-config", str(tmp_path / "vision-config")]) == 0
    assert "text outputs: dense, sparse, multivector" in capsys.readouterr().out
    converted = Vectorizer.from_pretrained(tmp_path / "out")
    original = Vectorizer.from_pretrained(bge_siglip_model_dir)
    assert converted.encode_texts_sparse(["ein Hund am Strand"]) == original.encode_texts_sparse(["ein Hund am Strand"])
    assert converted.fingerprints["multivector"] == original.fingerprints["multivector"]
    # A broken head file beside the text tower fails the conversion before anything is written.
    broken = tmp_path / "broken-text"
    shutil.copytree(bge_siglip_model_dir / "text", broken)
    (broken / "sparse_linear.pt").write_bytes(b"junk")
    with pytest.raises(ModelLoadError, match="sparse head"):
        convert_research_checkpoint(checkpoint, tmp_path / "never", text_tower=str(broken),
                                    vision_config=str(tmp_path / "vision-config"))
    assert not (tmp_path / "never").exists()


def test_unknown_tower_size_asks_for_a_config(tmp_path):
    vision, projector = _research_model(hidden=48, heads=2, seed=3)
    checkpoint = tmp_path / "model_checkpoint.pt"
    _save_checkpoint(checkpoint, vision, projector, nested=False)
    with pytest.raises(ModelLoadError, match="--vision-config"):
        convert_research_checkpoint(checkpoint, tmp_path / "out")


def test_not_a_research_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, path)
    with pytest.raises(ModelLoadError, match="no projector"):
        convert_research_checkpoint(path, tmp_path / "out")
    with pytest.raises(ModelLoadError, match="not found"):
        convert_research_checkpoint(tmp_path / "absent.pt", tmp_path / "out")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelLoadError, match="cannot read"):
        convert_research_checkpoint(tmp_path / "junk.pt", tmp_path / "out")


def test_from_towers_composes_a_full_siglip2_checkpoint_with_a_projector(tmp_path, bge_siglip_model_dir):
    # google/siglip2-*-naflex on the hub is a full Siglip2Model (text + vision); the vision tower loads from it.
    torch.manual_seed(5)
    full = Siglip2Model(
        Siglip2Config(
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
            text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100),
        )
    ).eval()
    full.save_pretrained(tmp_path / "siglip2-full")
    composed = Vectorizer.from_towers(
        bge_siglip_model_dir / "projector.safetensors",
        vision=str(tmp_path / "siglip2-full"),
        text=str(bge_siglip_model_dir / "text"),
    )
    loaded = composed.components.image_encoder.vision
    for name, tensor in full.vision_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    saved = composed.save_pretrained(tmp_path / "composed", copy_towers=False)
    again = Vectorizer.from_pretrained(saved)
    images = sample_images()[:3]
    np.testing.assert_array_equal(again.encode_images(images), composed.encode_images(images))


def test_dimension_mismatch_is_reported(tmp_path, bge_siglip_model_dir):
    vision, projector = _research_model(hidden=32, heads=2, seed=6, dim=16)  # projects to 16, text tower has 32
    checkpoint = tmp_path / "model_checkpoint.pt"
    _save_checkpoint(checkpoint, vision, projector, nested=False)
    vision.save_pretrained(tmp_path / "cfg")
    out = convert_research_checkpoint(checkpoint, tmp_path / "out", text_tower=str(bge_siglip_model_dir / "text"), vision_config=str(tmp_path / "cfg"))
    with pytest.raises(ModelLoadError, match="16"):
        Vectorizer.from_pretrained(out)


def test_unreachable_hub_tower_is_a_clear_error(bge_siglip_model_dir, monkeypatch):
    # A repo id that exists nowhere and cannot be fetched: the user gets one clear error naming the tower. Offline
    # mode makes the hub answer at once instead of after its network timeouts.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    missing = "bge-siglip-tests/no-such-vision-tower"
    with pytest.raises(ModelLoadError, match=f"cannot load the vision tower '{missing}'"):
        Vectorizer.from_towers(
            bge_siglip_model_dir / "projector.safetensors", vision=missing, text=str(bge_siglip_model_dir / "text")
        )
