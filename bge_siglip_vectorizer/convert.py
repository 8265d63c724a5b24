"""Converting the original research checkpoint (``model_checkpoint.pt``) into a BGE-SigLIP directory.

The checkpoint holds ``vision_model.*`` (a Siglip2VisionModel, possibly wrapped once more), ``projector.0.*``,
``projector.2.*``, ``logit_scale`` and ``logit_bias``; the frozen text tower is not in it and is referenced by hub id
or path. The converted model's vectors equal the research forward
``F.normalize(projector(vision_model(...).pooler_output))``. BGE-M3's sparse and multi-vector heads belong to the
text tower (``sparse_linear.pt``, ``colbert_linear.pt`` beside its weights) and load from the reference with it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from .errors import ModelLoadError, reraise_as
from .loading import (
    DEFAULT_TEXT_TOWER,
    PROJECTOR_NAME,
    ModelConfig,
    _absolute_reference,
    _tower_location,
    load_text_heads,
    quiet_transformers,
    write_processor_config,
)
from .model import ImageEncoder
from .preprocess import NaFlexConfig

__all__ = ["convert_research_checkpoint", "read_research_checkpoint", "infer_vision_config", "text_tower_outputs"]


# num_attention_heads cannot be read off weight shapes; these are the published SigLIP / SigLIP-2 towers.
_KNOWN_HEADS = {768: 12, 1024: 16, 1152: 16, 1536: 16}


def read_research_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load ``model_checkpoint.pt`` (a state dict, possibly wrapped in {"model_state_dict": ...})."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} not found")
    with reraise_as(ModelLoadError, f"cannot read checkpoint {path}"):
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not any(str(k).startswith("projector.") for k in state):
        raise ModelLoadError(f"{path} is not a BGE-SigLIP research checkpoint (no projector.* keys)")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def vision_state_from_research(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``vision_model.*`` keys in Siglip2VisionModel naming, whichever wrapper the research code used."""
    vision = {k[len("vision_model."):]: v for k, v in state.items() if k.startswith("vision_model.")}
    # A transformers-4 Siglip2VisionModel wrapped its transformer in `.vision_model`; transformers 5 does not.
    while vision and all(k.startswith("vision_model.") for k in vision):
        vision = {k[len("vision_model."):]: v for k, v in vision.items()}
    if not vision:
        raise ModelLoadError("checkpoint has no vision_model.* weights")
    return vision


def infer_vision_config(vision_state: dict[str, torch.Tensor]):
    """A Siglip2VisionConfig read off weight shapes (heads from the published tower sizes)."""
    from transformers import Siglip2VisionConfig

    try:
        hidden, patch_in = vision_state["embeddings.patch_embedding.weight"].shape
        num_patches = vision_state["embeddings.position_embedding.weight"].shape[0]
        intermediate = vision_state["encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as exc:
        raise ModelLoadError(f"checkpoint vision weights lack {exc}; pass the vision config explicitly") from None
    layers = 1 + max(int(k.split(".")[2]) for k in vision_state if k.startswith("encoder.layers."))
    if hidden not in _KNOWN_HEADS:
        raise ModelLoadError(
            f"cannot infer the number of attention heads for hidden size {hidden}; pass --vision-config "
            "(a hub id or directory with the tower's config.json)"
        )
    patch = int(round(math.sqrt(patch_in / 3)))
    return Siglip2VisionConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=_KNOWN_HEADS[hidden],
        patch_size=patch,
        num_patches=num_patches,
        vision_use_head="head.probe" in vision_state,
    )


def load_vision_config(reference: str):
    from transformers import AutoConfig, Siglip2VisionConfig

    with reraise_as(ModelLoadError, f"cannot load vision config {reference!r}"):
        config = AutoConfig.from_pretrained(_tower_location(reference, None))
    config = getattr(config, "vision_config", config)
    if not isinstance(config, Siglip2VisionConfig):
        raise ModelLoadError(f"{reference!r} is not a SigLIP-2 (NaFlex) model config ({type(config).__name__})")
    return config


def text_tower_outputs(text_tower: str) -> tuple[str, ...] | None:
    """The text outputs a local text tower gives: ``"dense"`` plus the BGE-M3 heads beside it (read, so a broken
    head file fails here); ``None`` for a hub id, whose heads are fetched with it when the model loads."""
    local = Path(text_tower).expanduser()
    return ("dense", *load_text_heads(str(local))) if local.is_dir() else None


def convert_research_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    text_tower: str = DEFAULT_TEXT_TOWER,
    vision_config: str | None = None,
    text_pooling: str = "cls",
    max_num_patches: int = 256,
) -> Path:
    """Convert the research ``model_checkpoint.pt`` into a BGE-SigLIP directory.

    The (possibly fine-tuned) vision tower and the projector are written into the directory; the frozen text tower
    is referenced (hub id or path), as the checkpoint does not contain it, and with it its BGE-M3 heads.
    """
    from transformers import Siglip2VisionModel

    state = read_research_checkpoint(checkpoint)
    text_tower_outputs(text_tower)  # a local tower's head files are checked before anything is written
    vision_state = vision_state_from_research(state)
    config = load_vision_config(vision_config) if vision_config else infer_vision_config(vision_state)
    vision = Siglip2VisionModel(config)
    missing, unexpected = vision.load_state_dict(vision_state, strict=False)
    if missing or unexpected:
        raise ModelLoadError(
            f"checkpoint vision weights do not fit the vision config: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    projector = {k: v for k, v in state.items() if k.startswith("projector.") or k in ("logit_scale", "logit_bias")}
    encoder = ImageEncoder(vision, int(projector["projector.2.weight"].shape[0]))
    with reraise_as(ModelLoadError, "checkpoint projector weights are malformed"):
        encoder.load_projector_state(projector)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        vision.save_pretrained(out / "vision")
    naflex = NaFlexConfig(patch_size=config.patch_size, max_num_patches=max_num_patches)
    write_processor_config(out / "vision", naflex)
    save_file(
        {k: v.detach().float().contiguous() for k, v in encoder.projector_state().items()},
        str(out / PROJECTOR_NAME),
        metadata={"format": "bge-siglip-projector"},
    )
    ModelConfig(
        vision_tower="vision",
        text_tower=_absolute_reference(text_tower, None) if Path(text_tower).expanduser().is_dir() else text_tower,
        dim=encoder.projector[2].out_features,
        text_pooling=text_pooling,
        preprocessing=naflex,
    ).write(out)
    return out
