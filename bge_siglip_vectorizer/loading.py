"""The on-disk format, tower resolution (local dir or hub id), and research-checkpoint conversion.

A BGE-SigLIP directory::

    bge_siglip_config.json   towers, dim, pooling, text max length, NaFlex preprocessing settings
    projector.safetensors    projector.0.*, projector.2.*, logit_scale, logit_bias
    vision/                  Siglip2VisionModel (config.json, model.safetensors, preprocessor_config.json)
    text/                    the text encoder + its tokenizer (config.json, model.safetensors, tokenizer.json, ...)

``vision_tower`` / ``text_tower`` in the config are either sub-directories of the model directory or references
to elsewhere (an absolute path or a hub id such as ``BAAI/bge-m3``), so a directory can hold just a trained
projector composed with the public towers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from .errors import MissingProjectorError, ModelLoadError
from .model import TEXT_POOLINGS, ImageEncoder, TextEncoder
from .preprocess import NaFlexConfig

CONFIG_NAME = "bge_siglip_config.json"
PROJECTOR_NAME = "projector.safetensors"
FORMAT_VERSION = 1
DEFAULT_VISION_TOWER = "google/siglip2-so400m-patch16-naflex"
DEFAULT_TEXT_TOWER = "BAAI/bge-m3"

HOW_TO_GET_PROJECTOR = (
    "No BGE-SigLIP projector weights are published. Make them with `bge-siglip train` on your image-caption data, "
    "or convert the research checkpoint with `bge-siglip convert model_checkpoint.pt --out DIR`."
)


@dataclass
class ModelConfig:
    """Contents of ``bge_siglip_config.json``."""

    vision_tower: str = DEFAULT_VISION_TOWER
    text_tower: str = DEFAULT_TEXT_TOWER
    projector: str | None = PROJECTOR_NAME
    dim: int | None = None
    text_pooling: str = "cls"
    text_max_length: int | None = None
    preprocessing: dict[str, Any] = field(default_factory=lambda: NaFlexConfig().to_dict())
    format: str = "bge-siglip"
    format_version: int = FORMAT_VERSION

    @classmethod
    def read(cls, directory: Path) -> "ModelConfig":
        path = directory / CONFIG_NAME
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"cannot read {path}: {exc}") from None
        if data.get("format") != "bge-siglip":
            raise ModelLoadError(f"{path} is not a BGE-SigLIP config (format={data.get('format')!r})")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise ModelLoadError(
                f"{path} has format_version {data['format_version']}; this version of bge-siglip-vectorizer reads "
                f"up to {FORMAT_VERSION}. Upgrade the package."
            )
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def write(self, directory: Path) -> None:
        (directory / CONFIG_NAME).write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n")


@dataclass
class Components:
    """Everything a Vectorizer runs: both encoders, the tokenizer and the settings they were saved with."""

    image_encoder: ImageEncoder
    text_encoder: TextEncoder
    tokenizer: Any
    config: ModelConfig
    preprocessing: NaFlexConfig
    text_max_length: int
    source: str | None = None  # where it was loaded from, for describe()


def is_model_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_NAME).is_file()


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    """A local BGE-SigLIP directory, or a hub repo id downloaded with ``huggingface_hub``."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not is_model_dir(path):
            raise ModelLoadError(
                f"{path} is not a BGE-SigLIP model directory (no {CONFIG_NAME}). Create one with "
                "`bge-siglip train`, `bge-siglip convert`, `Vectorizer.from_towers(...).save_pretrained(dir)` or, "
                "for tests, `bge-siglip make-tiny DIR`."
            )
        return path
    if path.is_file():
        hint = " Convert it first: `bge-siglip convert CHECKPOINT --out DIR`." if path.suffix in (".pt", ".pth", ".bin") else ""
        raise ModelLoadError(f"{path} is a file, not a BGE-SigLIP model directory.{hint}")
    text = str(name_or_path)
    if text.count("/") != 1 or text.startswith((".", "/", "~")):
        raise ModelLoadError(f"no such model directory: {text}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text))
    except Exception as exc:  # noqa: BLE001 - any hub failure becomes one clear error
        raise ModelLoadError(
            f"{text!r} is neither a local directory nor a downloadable hub repo ({type(exc).__name__}: {exc})"
        ) from None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-load progress bars, load reports and warnings; our errors say what matters."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _tower_location(reference: str, root: Path | None) -> str:
    if root is not None and (root / reference).is_dir():
        return str(root / reference)
    local = Path(reference).expanduser()
    return str(local) if local.is_dir() else reference


def load_vision_tower(reference: str, root: Path | None = None) -> torch.nn.Module:
    from transformers import Siglip2VisionModel

    location = _tower_location(reference, root)
    try:
        with quiet_transformers():
            model = Siglip2VisionModel.from_pretrained(location, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot load the vision tower {reference!r}: {type(exc).__name__}: {exc}") from None
    return model.eval()


def load_text_tower(reference: str, root: Path | None = None) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModel, AutoTokenizer

    location = _tower_location(reference, root)
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(location)
            model = AutoModel.from_pretrained(location, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot load the text tower {reference!r}: {type(exc).__name__}: {exc}") from None
    return model.eval(), tokenizer


def text_max_length_of(model: torch.nn.Module, tokenizer: Any) -> int:
    """The longest input the text tower accepts (8192 for BGE-M3)."""
    config = model.config
    positions = getattr(config, "max_position_embeddings", None)
    if positions and getattr(config, "model_type", "") in ("xlm-roberta", "roberta", "camembert", "xlm-roberta-xl"):
        # RoBERTa-style position ids start after the padding index.
        positions -= (getattr(config, "pad_token_id", 1) or 1) + 1
    limit = getattr(tokenizer, "model_max_length", None)
    candidates = [v for v in (positions, limit) if isinstance(v, int) and 0 < v < 10**7]
    return min(candidates) if candidates else 512


def projector_path(directory: Path, config: ModelConfig) -> Path:
    """The projector file a directory names, or ``MissingProjectorError`` saying how to make one."""
    if not config.projector:
        raise MissingProjectorError(f"{directory / CONFIG_NAME} names no projector file. {HOW_TO_GET_PROJECTOR}")
    path = Path(config.projector)
    path = path if path.is_absolute() else directory / path
    if not path.is_file():
        raise MissingProjectorError(f"projector weights {path} not found. {HOW_TO_GET_PROJECTOR}")
    return path


def read_projector(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot read projector weights {path}: {type(exc).__name__}: {exc}") from None


def load_components(name_or_path: str | os.PathLike, max_num_patches: int | None = None) -> Components:
    """Load a BGE-SigLIP directory (or hub repo) into modules, validating every part."""
    directory = resolve_model_dir(name_or_path)
    config = ModelConfig.read(directory)
    if config.text_pooling not in TEXT_POOLINGS:
        raise ModelLoadError(f"text_pooling must be one of {TEXT_POOLINGS}, got {config.text_pooling!r}")
    # Read the projector before loading gigabytes of towers: a missing one is the likeliest mistake.
    projector = read_projector(projector_path(directory, config))
    vision = load_vision_tower(config.vision_tower, directory)
    text_model, tokenizer = load_text_tower(config.text_tower, directory)
    return build_components(vision, text_model, tokenizer, config, projector, directory, max_num_patches)


def build_components(
    vision: torch.nn.Module,
    text_model: torch.nn.Module,
    tokenizer: Any,
    config: ModelConfig,
    projector_state: dict[str, torch.Tensor] | None,
    directory: Path | None = None,
    max_num_patches: int | None = None,
) -> Components:
    """Assemble loaded towers. ``projector_state=None`` keeps a freshly initialised projector: only training
    passes it (loading paths always read trained weights, or fail with ``MissingProjectorError``)."""
    text_dim = int(text_model.config.hidden_size)
    if config.dim is not None and int(config.dim) != text_dim:
        raise ModelLoadError(f"config dim {config.dim} does not match the text tower's hidden size {text_dim}")
    image_encoder = ImageEncoder(vision, text_dim)
    try:
        if projector_state is not None:
            image_encoder.load_projector_state(projector_state)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"projector weights do not fit the towers (vision hidden {vision.config.hidden_size}, text dim {text_dim}): {exc}"
        ) from None
    preprocessing = dict(config.preprocessing)
    if max_num_patches is not None:
        preprocessing["max_num_patches"] = int(max_num_patches)
    naflex = NaFlexConfig.from_dict(preprocessing)
    vision_patch = vision.config.patch_size
    if naflex.patch_size != vision_patch:
        raise ModelLoadError(f"preprocessing patch_size {naflex.patch_size} != vision tower patch_size {vision_patch}")
    max_len = text_max_length_of(text_model, tokenizer)
    if config.text_max_length:
        max_len = min(max_len, int(config.text_max_length))
    config.dim = text_dim
    return Components(
        image_encoder=image_encoder.eval(),
        text_encoder=TextEncoder(text_model, config.text_pooling).eval(),
        tokenizer=tokenizer,
        config=config,
        preprocessing=naflex,
        text_max_length=max_len,
        source=str(directory) if directory is not None else None,
    )


def model_fingerprint(components: Components) -> str:
    """sha256 over what decides the vector space: projector weights, both towers' configs, pooling, preprocessing.

    Tower weights are not hashed (gigabytes); training that changes the vision tower also changes the projector.
    """
    digest = hashlib.sha256()
    for key, tensor in sorted(components.image_encoder.projector_state().items()):
        digest.update(key.encode() + tensor.detach().float().cpu().contiguous().numpy().tobytes())
    facts = [
        components.image_encoder.vision.config.to_dict(),
        components.text_encoder.model.config.to_dict(),
        components.config.text_pooling,
        components.text_max_length,
        # max_num_patches only sets how much detail is kept; the vectors stay in the same space.
        {k: v for k, v in components.preprocessing.to_dict().items() if k != "max_num_patches"},
    ]
    for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures"):
        for config in facts[:2]:
            config.pop(volatile, None)  # type: ignore[union-attr]
    digest.update(json.dumps(facts, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def save_components(
    components: Components,
    directory: str | os.PathLike,
    copy_towers: bool = True,
    copy_text: bool | None = None,
) -> Path:
    """Write a self-describing directory. With ``copy_towers=False`` tower references are kept as they are;
    ``copy_text`` overrides it for the (frozen, often large) text tower alone."""
    if any(p.is_meta for p in components.image_encoder.vision.parameters()):
        raise ModelLoadError(
            "this model runs as ONNX graphs and holds no torch weights; save from Vectorizer.from_pretrained(..., "
            "backend='torch')"
        )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = ModelConfig(**asdict(components.config))
    config.preprocessing = {**components.preprocessing.to_dict()}
    config.text_max_length = components.text_max_length
    copy_text = copy_towers if copy_text is None else copy_text
    with quiet_transformers():
        if copy_towers:
            components.image_encoder.vision.save_pretrained(out / "vision")
            (out / "vision" / "preprocessor_config.json").write_text(
                json.dumps(_processor_config(components.preprocessing), indent=2) + "\n"
            )
            config.vision_tower = "vision"
        else:
            config.vision_tower = _absolute_reference(config.vision_tower, components.source)
        if copy_text:
            components.text_encoder.model.save_pretrained(out / "text")
            components.tokenizer.save_pretrained(out / "text")
            config.text_tower = "text"
        else:
            config.text_tower = _absolute_reference(config.text_tower, components.source)
    state = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in components.image_encoder.projector_state().items()}
    save_file(state, str(out / PROJECTOR_NAME), metadata={"format": "bge-siglip-projector"})
    config.projector = PROJECTOR_NAME
    config.write(out)
    return out


def _absolute_reference(reference: str, source: str | None) -> str:
    """A tower reference that still resolves from another directory: local paths become absolute, hub ids stay."""
    if source is not None and (Path(source) / reference).is_dir():
        return str((Path(source) / reference).resolve())
    local = Path(reference).expanduser()
    return str(local.resolve()) if local.is_dir() else reference


def _processor_config(naflex: NaFlexConfig) -> dict[str, Any]:
    # Lets transformers' own AutoImageProcessor reproduce our preprocessing from the vision folder.
    return {
        "image_processor_type": "Siglip2ImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "image_mean": list(naflex.image_mean),
        "image_std": list(naflex.image_std),
        "rescale_factor": naflex.rescale_factor,
        "resample": 2 if naflex.resample == "bilinear" else 3,
        "patch_size": naflex.patch_size,
        "max_num_patches": naflex.max_num_patches,
    }


# ----------------------------------------------------------------------------------------------------------------
# Research checkpoint conversion
# ----------------------------------------------------------------------------------------------------------------

# num_attention_heads cannot be read off weight shapes; these are the published SigLIP / SigLIP-2 towers.
_KNOWN_HEADS = {768: 12, 1024: 16, 1152: 16, 1536: 16}


def read_research_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load ``model_checkpoint.pt`` (a state dict, possibly wrapped in {"model_state_dict": ...})."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} not found")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None
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

    try:
        config = AutoConfig.from_pretrained(_tower_location(reference, None))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot load vision config {reference!r}: {type(exc).__name__}: {exc}") from None
    config = getattr(config, "vision_config", config)
    if not isinstance(config, Siglip2VisionConfig):
        raise ModelLoadError(f"{reference!r} is not a SigLIP-2 (NaFlex) model config ({type(config).__name__})")
    return config


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
    is referenced (hub id or path), as the checkpoint does not contain it.
    """
    from transformers import Siglip2VisionModel

    state = read_research_checkpoint(checkpoint)
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
    try:
        encoder.load_projector_state(projector)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"checkpoint projector weights are malformed: {exc}") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        vision.save_pretrained(out / "vision")
    naflex = NaFlexConfig(patch_size=config.patch_size, max_num_patches=max_num_patches)
    (out / "vision" / "preprocessor_config.json").write_text(json.dumps(_processor_config(naflex), indent=2) + "\n")
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
        preprocessing=naflex.to_dict(),
    ).write(out)
    return out
