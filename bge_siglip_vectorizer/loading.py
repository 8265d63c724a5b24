"""The on-disk format, tower resolution (local dir or hub id), assembly of the modules, and the model fingerprint.

A BGE-SigLIP directory::

    bge_siglip_config.json   towers, dim, pooling, text max length, NaFlex preprocessing settings
    projector.safetensors    projector.0.*, projector.2.*, logit_scale, logit_bias
    vision/                  Siglip2VisionModel (config.json, model.safetensors, preprocessor_config.json)
    text/                    the text encoder + its tokenizer (config.json, model.safetensors, tokenizer.json, ...)
                             and, optionally, BGE-M3's heads: sparse_linear.pt, colbert_linear.pt

``vision_tower`` / ``text_tower`` in the config are either sub-directories of the model directory or references
to elsewhere (an absolute path or a hub id such as ``BAAI/bge-m3``), so a directory can hold just a trained
projector composed with the public towers. Converting the research checkpoint lives in :mod:`.convert`.

BGE-M3's two extra heads sit beside the text tower's weights, as in the ``BAAI/bge-m3`` hub repo:
``sparse_linear.pt`` (Linear(hidden, 1), lexical weights) and ``colbert_linear.pt`` (Linear(hidden, d), ColBERT
multi-vectors), each a ``torch.save``'d state dict with keys ``weight`` and ``bias``. A tower without them gives dense
vectors only. Unlike FlagEmbedding, which loads the heads only when both files exist (else it keeps random ones
silently), each head loads on its own and a missing one is never replaced by random weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from torch import nn
from safetensors.torch import load_file, save_file

from .errors import MissingProjectorError, ModelLoadError, reraise_as
from .model import TEXT_POOLINGS, ImageEncoder, TextEncoder
from .preprocess import NaFlexConfig

CONFIG_NAME = "bge_siglip_config.json"
PROJECTOR_NAME = "projector.safetensors"
FORMAT_VERSION = 1
DEFAULT_VISION_TOWER = "google/siglip2-so400m-patch16-naflex"
DEFAULT_TEXT_TOWER = "BAAI/bge-m3"
#: BGE-M3's extra heads by the output they give, under their hub file names.
HEAD_FILES = {"sparse": "sparse_linear.pt", "multivector": "colbert_linear.pt"}

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
    preprocessing: NaFlexConfig = field(default_factory=NaFlexConfig)
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
        known["preprocessing"] = NaFlexConfig.from_dict(known.get("preprocessing") or {})
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["preprocessing"] = self.preprocessing.to_dict()
        return data

    def write(self, directory: Path) -> None:
        (directory / CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")


@dataclass
class Components:
    """Everything a Vectorizer runs: both encoders, the tokenizer and the settings they were saved with.

    ``has_weights=False``: the towers were built from their configs without reading their weights (for a backend
    that runs exported graphs); their configs, the projector and the tokenizer are real.
    """

    image_encoder: ImageEncoder
    text_encoder: TextEncoder
    tokenizer: Any
    config: ModelConfig
    text_max_length: int
    source: str | None = None  # where it was loaded from, for describe()
    has_weights: bool = True

    @property
    def preprocessing(self) -> NaFlexConfig:
        return self.config.preprocessing


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
    from huggingface_hub import snapshot_download

    with reraise_as(ModelLoadError, f"{text!r} is neither a local directory nor a downloadable hub repo"):
        return Path(snapshot_download(text))


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


def load_vision_tower(reference: str, root: Path | None = None, weights: bool = True) -> torch.nn.Module:
    """The SigLIP-2 vision tower; with ``weights=False`` built from its config alone, on the meta device."""
    from transformers import AutoConfig, Siglip2VisionModel

    location = _tower_location(reference, root)
    with reraise_as(ModelLoadError, f"cannot load the vision tower {reference!r}"), quiet_transformers():
        if weights:
            return Siglip2VisionModel.from_pretrained(location, dtype=torch.float32).eval()
        config = AutoConfig.from_pretrained(location)
        with torch.device("meta"):
            return Siglip2VisionModel(getattr(config, "vision_config", config)).eval()


def load_text_tower(reference: str, root: Path | None = None, weights: bool = True) -> tuple[torch.nn.Module, Any]:
    """The text encoder and its tokenizer; with ``weights=False`` the encoder is built from its config alone."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    location = _tower_location(reference, root)
    with reraise_as(ModelLoadError, f"cannot load the text tower {reference!r}"), quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(location)
        if weights:
            return AutoModel.from_pretrained(location, dtype=torch.float32).eval(), tokenizer
        with torch.device("meta"):
            return AutoModel.from_config(AutoConfig.from_pretrained(location)).eval(), tokenizer


def load_text_heads(reference: str, root: Path | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """BGE-M3's heads found beside the text tower, as state dicts by output (``"sparse"``, ``"multivector"``);
    ``{}`` for a tower without them. Read with ``weights_only=True``: a ``.pt`` file cannot run code."""
    location = _tower_location(reference, root)
    heads = {}
    for output, name in HEAD_FILES.items():
        with reraise_as(ModelLoadError, f"cannot look for {name} of the text tower {reference!r}"):
            path = _tower_file(location, name)
        if path is None:
            continue
        with reraise_as(ModelLoadError, f"cannot read the {output} head {path}"):
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        if not (isinstance(state, dict) and set(state) == {"weight", "bias"}
                and all(isinstance(v, torch.Tensor) for v in state.values())):
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ModelLoadError(f"{path} is not a Linear layer's state dict (keys weight, bias): got {keys}")
        heads[output] = state
    return heads


def _tower_file(location: str, name: str) -> Path | None:
    """``name`` in a tower directory or hub repo, or ``None`` where the tower has no such file."""
    if Path(location).is_dir():
        path = Path(location) / name
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(location, name))
    except EntryNotFoundError:  # not in the repo, or (offline) not in the local cache
        return None


def _head_layer(output: str, state: Mapping[str, torch.Tensor], hidden: int) -> nn.Linear:
    weight, bias = state["weight"], state["bias"]
    name = HEAD_FILES[output]
    if weight.ndim != 2 or bias.shape != weight.shape[:1] or (output == "sparse" and weight.shape[0] != 1):
        wanted = "(1, hidden)" if output == "sparse" else "(d, hidden)"
        raise ModelLoadError(f"{name}: weight {tuple(weight.shape)} and bias {tuple(bias.shape)} are not a {wanted} Linear")
    if weight.shape[1] != hidden:
        raise ModelLoadError(f"{name} takes {weight.shape[1]}-d inputs but the text tower's hidden size is {hidden}")
    with torch.device("cpu"):  # small: real weights even when the tower itself is on "meta" (ONNX backend)
        layer = nn.Linear(weight.shape[1], weight.shape[0])
    layer.load_state_dict({"weight": weight, "bias": bias})
    return layer.eval()


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
    with reraise_as(ModelLoadError, f"cannot read projector weights {path}"):
        return load_file(str(path))


def load_components(
    name_or_path: str | os.PathLike, max_num_patches: int | None = None, weights: bool = True
) -> Components:
    """Load a BGE-SigLIP directory (or hub repo) into modules, validating every part.

    ``weights=False`` skips reading the towers' weights (a backend that runs exported graphs needs only their
    configs, the projector and the tokenizer)."""
    directory = resolve_model_dir(name_or_path)
    config = ModelConfig.read(directory)
    if config.text_pooling not in TEXT_POOLINGS:
        raise ModelLoadError(f"text_pooling must be one of {TEXT_POOLINGS}, got {config.text_pooling!r}")
    # Read the projector before loading gigabytes of towers: a missing one is the likeliest mistake.
    projector = read_projector(projector_path(directory, config))
    vision = load_vision_tower(config.vision_tower, directory, weights=weights)
    text_model, tokenizer = load_text_tower(config.text_tower, directory, weights=weights)
    heads = load_text_heads(config.text_tower, directory)  # small: read even for ONNX (fingerprints, capabilities)
    components = build_components(vision, text_model, tokenizer, config, projector, directory, max_num_patches, heads)
    components.has_weights = weights
    return components


def build_components(
    vision: torch.nn.Module,
    text_model: torch.nn.Module,
    tokenizer: Any,
    config: ModelConfig,
    projector_state: dict[str, torch.Tensor] | None,
    directory: Path | None = None,
    max_num_patches: int | None = None,
    text_heads: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> Components:
    """Assemble loaded towers. ``projector_state=None`` keeps a freshly initialised projector: only training
    passes it (loading paths always read trained weights, or fail with ``MissingProjectorError``).
    ``text_heads``: BGE-M3's head state dicts by output, as :func:`load_text_heads` returns them."""
    text_dim = int(text_model.config.hidden_size)
    if config.dim is not None and int(config.dim) != text_dim:
        raise ModelLoadError(f"config dim {config.dim} does not match the text tower's hidden size {text_dim}")
    # Built on the real device even when the towers are on "meta": the projector's trained weights load into it.
    with torch.device("cpu"):
        image_encoder = ImageEncoder(vision, text_dim)
    if projector_state is not None:
        fit = f"projector weights do not fit the towers (vision hidden {vision.config.hidden_size}, text dim {text_dim})"
        with reraise_as(ModelLoadError, fit):
            image_encoder.load_projector_state(projector_state)
    if max_num_patches is not None:
        config = dataclasses.replace(
            config, preprocessing=dataclasses.replace(config.preprocessing, max_num_patches=int(max_num_patches))
        )
    naflex = config.preprocessing
    vision_patch = vision.config.patch_size
    if naflex.patch_size != vision_patch:
        raise ModelLoadError(f"preprocessing patch_size {naflex.patch_size} != vision tower patch_size {vision_patch}")
    max_len = text_max_length_of(text_model, tokenizer)
    if config.text_max_length:
        max_len = min(max_len, int(config.text_max_length))
    config = dataclasses.replace(config, dim=text_dim)
    heads = {output: _head_layer(output, state, text_dim) for output, state in (text_heads or {}).items()}
    text_encoder = TextEncoder(
        text_model, config.text_pooling, sparse_linear=heads.get("sparse"), colbert_linear=heads.get("multivector")
    )
    return Components(
        image_encoder=image_encoder.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        config=config,
        text_max_length=max_len,
        source=str(directory) if directory is not None else None,
    )


def model_fingerprint(components: Components) -> str:
    """sha256 over what decides the dense vector space: projector weights, both towers' configs, pooling,
    preprocessing.

    Tower weights are not hashed (gigabytes); training that changes the vision tower also changes the projector.
    BGE-M3's sparse and multi-vector heads are not hashed either: dense vectors do not depend on them, so adding or
    dropping them leaves a model's dense collections readable. They have fingerprints of their own
    (:func:`text_head_fingerprints`).
    """
    digest = hashlib.sha256()
    _hash_state(digest, components.image_encoder.projector_state())
    facts = [
        _stable_config(components.image_encoder.vision.config),
        _stable_config(components.text_encoder.model.config),
        components.config.text_pooling,
        components.text_max_length,
        # max_num_patches only sets how much detail is kept; the vectors stay in the same space.
        {k: v for k, v in components.preprocessing.to_dict().items() if k != "max_num_patches"},
    ]
    digest.update(json.dumps(facts, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def text_head_fingerprints(components: Components) -> dict[str, str]:
    """A fingerprint per head the text tower has (``"sparse"``, ``"multivector"``): sha256 over the head's weights,
    the text tower's config and the text length limit; for sparse also the vocabulary and special tokens, since its
    coordinates are token ids. The projector and the vision tower do not enter: these are text-only spaces."""
    tokenizer = components.tokenizer
    shared = [_stable_config(components.text_encoder.model.config), components.text_max_length]
    fingerprints = {}
    for output, layer in components.text_encoder.heads().items():
        digest = hashlib.sha256(output.encode())
        _hash_state(digest, layer.state_dict())
        facts: list[Any] = [*shared]
        if output == "sparse":
            vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
            facts += [hashlib.sha256(json.dumps(vocabulary, ensure_ascii=False).encode()).hexdigest(),
                      tokenizer.special_tokens_map]
        digest.update(json.dumps(facts, sort_keys=True, default=str).encode())
        fingerprints[output] = digest.hexdigest()
    return fingerprints


def text_head_digests(encoder: TextEncoder) -> dict[str, str]:
    """sha256 of each head's weights alone (what exported ONNX graphs record, to notice heads changed since)."""
    digests = {}
    for output, layer in encoder.heads().items():
        digest = hashlib.sha256()
        _hash_state(digest, layer.state_dict())
        digests[output] = digest.hexdigest()
    return digests


def _hash_state(digest: Any, state: Mapping[str, torch.Tensor]) -> None:
    for key, tensor in sorted(state.items()):
        digest.update(key.encode() + tensor.detach().float().cpu().contiguous().numpy().tobytes())


def _stable_config(config: Any) -> dict[str, Any]:
    """A tower's config without what changes when the same tower is saved elsewhere or by another version."""
    data = config.to_dict()
    for volatile in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "architectures"):
        data.pop(volatile, None)
    return data


def save_components(
    components: Components,
    directory: str | os.PathLike,
    copy_towers: bool = True,
    copy_text: bool | None = None,
) -> Path:
    """Write a self-describing directory. With ``copy_towers=False`` tower references are kept as they are;
    ``copy_text`` overrides it for the (frozen, often large) text tower alone."""
    if not components.has_weights:
        raise ValueError(
            "this model was loaded without its towers' torch weights (backend='onnx'); save from "
            "Vectorizer.from_pretrained(..., backend='torch')"
        )
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = dataclasses.replace(components.config, text_max_length=components.text_max_length)
    copy_text = copy_towers if copy_text is None else copy_text
    with quiet_transformers():
        if copy_towers:
            components.image_encoder.vision.save_pretrained(out / "vision")
            write_processor_config(out / "vision", components.preprocessing)
            config.vision_tower = "vision"
        else:
            config.vision_tower = _absolute_reference(config.vision_tower, components.source)
        if copy_text:
            components.text_encoder.model.save_pretrained(out / "text")
            components.tokenizer.save_pretrained(out / "text")
            save_text_heads(components.text_encoder, out / "text")
            config.text_tower = "text"
        else:
            config.text_tower = _absolute_reference(config.text_tower, components.source)
    state = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in components.image_encoder.projector_state().items()}
    save_file(state, str(out / PROJECTOR_NAME), metadata={"format": "bge-siglip-projector"})
    config.projector = PROJECTOR_NAME
    config.write(out)
    return out


def save_text_heads(encoder: TextEncoder, directory: Path) -> None:
    """Write the encoder's heads as the hub's ``.pt`` state dicts; remove head files it does not have (a dense-only
    model saved over a directory that held heads must not pick up someone else's)."""
    heads = encoder.heads()
    for output, name in HEAD_FILES.items():
        path = directory / name
        if output in heads:
            state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in heads[output].state_dict().items()}
            torch.save(state, path)
        else:
            path.unlink(missing_ok=True)


def _absolute_reference(reference: str, source: str | None) -> str:
    """A tower reference that still resolves from another directory: local paths become absolute, hub ids stay."""
    if source is not None and (Path(source) / reference).is_dir():
        return str((Path(source) / reference).resolve())
    local = Path(reference).expanduser()
    return str(local.resolve()) if local.is_dir() else reference


def write_processor_config(vision_dir: Path, naflex: NaFlexConfig) -> None:
    """``preprocessor_config.json`` beside a saved vision tower (transformers' ``AutoImageProcessor`` reads it)."""
    (vision_dir / "preprocessor_config.json").write_text(json.dumps(naflex.to_processor_config(), indent=2) + "\n")
