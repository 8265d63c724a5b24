"""Alignment training: teach the projector (and the last vision layers) to land images on their captions' vectors.

The text tower is frozen, so caption vectors are computed once through the core ``encode_texts`` path and cached on
disk; each step then runs only the vision side. Images are preprocessed by the core's own decode/patchify path (once,
when they fit in memory). Loss: SigLIP's sigmoid loss with a learnable logit scale and bias.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import DataError
from ..loading import (
    DEFAULT_TEXT_TOWER,
    DEFAULT_VISION_TOWER,
    Components,
    ModelConfig,
    build_components,
    load_components,
    load_text_heads,
    load_text_tower,
    load_vision_tower,
    save_components,
)
from ..model import TEXT_POOLINGS
from ..options import check_options, option
from ..preprocess import PatchedImage, collate
from ..vectorizer import Vectorizer
from .data import Example, read_examples, split_examples
from .evaluate import RecallReport, recall_report, unique_captions
from .loss import LOSSES, pair_logits

STATE_FILE = "trainer_state.pt"
# Keep preprocessed training images in memory up to this size; beyond it they are decoded batch by batch.
IN_MEMORY_BUDGET_BYTES = 4 * 1024**3


def _layers(text: str) -> int:
    # "all" unfreezes the whole tower; any count above the tower's depth does the same.
    return 10**6 if text.strip().lower() == "all" else int(text)


@dataclass
class TrainConfig:
    """Every option of ``bge-siglip train`` (defaults suit a projector on the public towers); the command line and
    its help are derived from these fields."""

    train_data: str = option(help="training data: .jsonl, .csv/.tsv, or a folder with sidecar .txt captions",
                             metavar="DATA")
    out: str = option(help="output model directory (checkpoints go inside it)")
    model: str | None = option(None, help="a BGE-SigLIP directory to continue from (else --vision/--text towers "
                                          "with a new projector)")
    vision: str = option(DEFAULT_VISION_TOWER, help="vision tower when starting fresh (hub id or dir)")
    text: str = option(DEFAULT_TEXT_TOWER, help="frozen text tower when starting fresh (hub id or dir)")
    text_pooling: str = option("cls", choices=TEXT_POOLINGS, help="text vector: CLS token (BGE-M3) or masked mean")
    val_data: str | None = option(None, flag="--val", help="validation data (default: hold out --val-fraction)")
    val_fraction: float = option(0.1, min=0, max=0.9, help="share of the data held out when --val is not given")
    epochs: int = option(5, min=1, help="passes over the training data")
    batch_size: int = option(64, min=1, help="image-caption pairs per step")
    lr: float = option(1e-3, above=0, help="learning rate of the projector and logit scale/bias")
    vision_lr: float = option(2e-5, min=0, help="learning rate of the unfrozen vision layers")
    weight_decay: float = option(0.01, min=0, help="AdamW weight decay")
    warmup_fraction: float = option(0.05, min=0, max=1, help="share of the steps with a linear warm-up")
    trainable_vision_layers: int = option(2, min=0, parse=_layers, metavar="N|all",
                                          help="unfreeze the last N vision layers (0: projector only; all: the "
                                               "whole tower)")
    grad_clip: float = option(1.0, min=0, help="gradient norm clip (0: off)")
    loss: str = option("sigmoid", choices=tuple(LOSSES),
                       help="'research' reproduces the original script's broken loss, for comparison only")
    seed: int = option(0, help="seeds data order, initialisation and augmentation")
    eval_every: int = option(0, min=0, help="validate every N steps (0: after every epoch)")
    save_every: int = option(0, min=0, help="checkpoint every N steps (0: only the final model)")
    keep_checkpoints: int = option(2, min=1, help="newest checkpoints kept")
    device: str | None = option(None, help="torch device (default: cuda if available)")
    max_num_patches: int | None = option(None, min=1, help="image detail budget in 16px patches")
    cache_dir: str | None = option(None, help="caption-vector cache (default OUT/cache)")
    resume: str | None = option(None, help="a checkpoint directory, or 'latest' (newest under OUT)")
    copy_text_tower: bool = option(True, help="write the text tower into the output (self-contained model)")
    show_progress: bool | None = option(None, flag="--no-progress", help="hide progress bars")

    def __post_init__(self) -> None:
        check_options(self)


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    final: RecallReport | None = None


def train(config: TrainConfig) -> TrainResult:
    """Run a whole training job; returns where the model was written and the validation history."""
    return Trainer(config).run()


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        _seed_everything(config.seed)
        self.train_examples, self.val_examples = self._read_data()
        self.components, resume_state = self._resume()
        self.vectorizer = Vectorizer(self.components, device=config.device, dtype="float32")
        self.device = torch.device(self.vectorizer.backend.device)
        self.encoder = self.components.image_encoder
        self.trainable = self._unfreeze()
        self.captions, self.caption_vectors = self._caption_vectors()
        self.caption_index = {caption: i for i, caption in enumerate(self.captions)}
        self.steps_per_epoch = math.ceil(len(self.train_examples) / config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        if resume_state is not None:
            self._load_state(resume_state)
        # A frozen tower gives the same pooled features every epoch: compute them once and train only the head.
        self.frozen_vision = config.trainable_vision_layers == 0
        if self.frozen_vision:
            self.train_features = self._pooled_features([e.image for e in self.train_examples])
            self.val_features = self._pooled_features([e.image for e in self.val_examples])
        else:
            self.images = _ImageSource(self.vectorizer, [e.image for e in self.train_examples], config.show_progress)

    # ------------------------------------------------------------------------------------------------ setup
    def _read_data(self) -> tuple[list[Example], list[Example]]:
        config = self.config
        train = read_examples(config.train_data)
        if config.val_data:
            return train, read_examples(config.val_data)
        return split_examples(train, config.val_fraction, config.seed)

    def _resume(self) -> tuple[Components, dict[str, Any] | None]:
        """The components and trainer state of the checkpoint to continue from (state ``None``: a fresh start).

        ``--resume latest`` takes the newest checkpoint that loads, skipping (with a warning) any that does not: a
        run killed while writing leaves at most a temporary directory, but a disk can still truncate a file.
        """
        config = self.config
        if not config.resume:
            return self._load_components(None), None
        if config.resume == "latest":
            checkpoints = _checkpoints(self.out)
            if not checkpoints:
                raise DataError(f"--resume latest: no checkpoint-* directory under {self.out}")
            for directory in reversed(checkpoints):
                try:
                    return self._load_checkpoint(directory)
                except Exception as exc:  # noqa: BLE001 - any unreadable file: fall back to the one before
                    warnings.warn(f"skipping checkpoint {directory}: it does not load ({type(exc).__name__}: {exc})",
                                  RuntimeWarning, stacklevel=2)
            raise DataError(f"--resume latest: none of the {len(checkpoints)} checkpoints under {self.out} loads")
        path = Path(config.resume)
        if not (path / STATE_FILE).is_file():
            raise DataError(f"--resume {path}: not a training checkpoint (no {STATE_FILE})")
        try:
            return self._load_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - the one asked for: say which and why, do not pick another
            raise DataError(f"--resume {path}: the checkpoint does not load ({type(exc).__name__}: {exc})") from None

    def _load_checkpoint(self, directory: Path) -> tuple[Components, dict[str, Any]]:
        state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)  # never unpickle code
        return self._load_components(directory), state

    def _load_components(self, source: Path | None) -> Components:
        config = self.config
        source = source or config.model
        if source is not None:
            return load_components(source, max_num_patches=config.max_num_patches)
        model_config = ModelConfig(vision_tower=config.vision, text_tower=config.text, text_pooling=config.text_pooling)
        vision = load_vision_tower(config.vision)
        text, tokenizer = load_text_tower(config.text)
        # A new projector, initialised under the seed set above; BGE-M3's heads (if any) kept for the saved model.
        return build_components(vision, text, tokenizer, model_config, None, None, config.max_num_patches,
                                load_text_heads(config.text))

    def _unfreeze(self) -> list[torch.nn.Parameter]:
        encoder, n = self.encoder, self.config.trainable_vision_layers
        for parameter in self.components.text_encoder.parameters():
            parameter.requires_grad_(False)
        for parameter in encoder.vision.parameters():
            parameter.requires_grad_(False)
        vision_parts: list[torch.nn.Module] = []
        if n > 0:
            layers = encoder.vision.encoder.layers
            vision_parts = list(layers[max(0, len(layers) - n) :]) + [encoder.vision.post_layernorm]
            if getattr(encoder.vision, "head", None) is not None:
                vision_parts.append(encoder.vision.head)
            if n >= len(layers):  # every layer: the whole tower, patch and position embeddings included
                vision_parts.append(encoder.vision.embeddings)
        self.vision_parameters = [p for part in vision_parts for p in part.parameters()]
        for parameter in self.vision_parameters:
            parameter.requires_grad_(True)
        head = list(encoder.projector.parameters()) + [encoder.logit_scale, encoder.logit_bias]
        for parameter in head:
            parameter.requires_grad_(True)
        self.head_parameters = head
        return head + self.vision_parameters

    def _caption_vectors(self) -> tuple[list[str], torch.Tensor]:
        captions, _ = unique_captions(self.train_examples + self.val_examples)
        cache_dir = Path(self.config.cache_dir) if self.config.cache_dir else self.out / "cache"
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256()
        key.update(json.dumps([_tower_identity(self.components), self.components.config.text_pooling,
                               self.components.text_max_length]).encode())
        for caption in captions:
            key.update(caption.encode("utf-8") + b"\0")
        path = cache_dir / f"captions-{key.hexdigest()[:20]}.npy"
        vectors = _load_cache(path, len(captions))
        if vectors is None:
            vectors = self.vectorizer.encode_texts(captions, batch_size=64, show_progress=self.config.show_progress)
            _atomic_write(path, lambda temporary: np.save(temporary, vectors))
        return captions, torch.from_numpy(vectors).to(self.device)

    def _optimizer(self) -> torch.optim.Optimizer:
        def groups(parameters, lr):
            decay = [p for p in parameters if p.ndim >= 2]
            no_decay = [p for p in parameters if p.ndim < 2]  # biases, norms, logit scale/bias
            return [
                {"params": decay, "lr": lr, "weight_decay": self.config.weight_decay},
                {"params": no_decay, "lr": lr, "weight_decay": 0.0},
            ]

        param_groups = groups(self.head_parameters, self.config.lr)
        if self.vision_parameters:
            param_groups += groups(self.vision_parameters, self.config.vision_lr)
        return torch.optim.AdamW([g for g in param_groups if g["params"]])

    def _lr_factor(self, step: int) -> float:
        warmup = max(1, int(self.total_steps * self.config.warmup_fraction))
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, self.total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    # ------------------------------------------------------------------------------------------------ training
    def run(self) -> TrainResult:
        config = self.config
        bar = tqdm(total=self.total_steps, initial=self.step, desc="training", unit="step", disable=_no_bar(config.show_progress))
        keys = np.asarray([e.key for e in self.train_examples], dtype=object)
        caption_ids = torch.tensor([self.caption_index[e.caption] for e in self.train_examples], device=self.device)
        loss_fn = LOSSES[config.loss]
        try:
            while self.step < self.total_steps:
                epoch, offset = divmod(self.step, self.steps_per_epoch)
                # One permutation per epoch from (seed, epoch): a resumed run sees the same batches.
                order = torch.randperm(len(self.train_examples), generator=torch.Generator().manual_seed(config.seed + epoch))
                batch = order[offset * config.batch_size : (offset + 1) * config.batch_size].tolist()
                loss = self._train_step(batch, keys, caption_ids, loss_fn)
                self.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", epoch=epoch + 1)
                end_of_epoch = self.step % self.steps_per_epoch == 0
                if self.val_examples and ((config.eval_every and self.step % config.eval_every == 0) or (not config.eval_every and end_of_epoch)):
                    report = self.validate()
                    self.history.append({"step": self.step, "epoch": epoch + 1, "loss": loss, **report.to_dict()})
                    bar.write(f"step {self.step}: text->image R@1 {report.text_to_image[1]:.3f}, "
                              f"image->text R@1 {report.image_to_text[1]:.3f}, loss {loss:.4f}")
                if config.save_every and self.step % config.save_every == 0 and self.step < self.total_steps:
                    self._save_checkpoint()
        finally:
            bar.close()
        final = self.validate() if self.val_examples else None
        save_components(self.components, self.out, copy_towers=True, copy_text=config.copy_text_tower)
        summary = {"steps": self.step, "config": asdict(config), "history": self.history,
                   "final": final.to_dict() if final else None}
        (self.out / "training_log.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        return TrainResult(self.out, self.step, self.history, final)

    def _inputs(self, images: list[PatchedImage]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pixel_values, mask, shapes = collate(images, self.components.preprocessing)
        return (torch.from_numpy(pixel_values).to(self.device), torch.from_numpy(mask).to(self.device),
                torch.from_numpy(shapes).to(self.device))

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def _pooled_features(self, images: list[str], chunk: int = 1024) -> torch.Tensor:
        """Pooled vision features of every image: decoded a chunk at a time, batched by similar patch count."""
        features = torch.empty((len(images), self.encoder.vision.config.hidden_size), device=self.device)
        self.encoder.eval()
        # no_grad, not inference_mode: the features are later inputs of the projector's backward pass.
        with torch.no_grad(), self._autocast(), tqdm(total=len(images), desc="vision features", unit="img",
                                                     disable=_no_bar(self.config.show_progress)) as bar:
            for offset in range(0, len(images), chunk):
                prepared = self.vectorizer.prepare_images(images[offset : offset + chunk], show_progress=False)
                order = sorted(range(len(prepared)), key=lambda i: prepared[i].num_patches)
                for start in range(0, len(order), self.config.batch_size):
                    rows = order[start : start + self.config.batch_size]
                    pooled = self.encoder.pool(*self._inputs([prepared[i] for i in rows]))
                    features[[offset + i for i in rows]] = pooled.float()
                    bar.update(len(rows))
        return features

    def _train_step(self, batch: list[int], keys: np.ndarray, caption_ids: torch.Tensor, loss_fn) -> float:
        self.encoder.train()
        with self._autocast():
            if self.frozen_vision:
                image_vectors = self.encoder.project(self.train_features[batch])
            else:
                image_vectors = self.encoder(*self._inputs(self.images.get(batch)))
        text_vectors = self.caption_vectors[caption_ids[batch]]
        logits = pair_logits(image_vectors.float(), text_vectors, self.encoder.logit_scale, self.encoder.logit_bias)
        positives = torch.from_numpy(keys[batch][:, None] == keys[batch][None, :]).to(self.device)
        loss = loss_fn(logits, positives)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def validate(self) -> RecallReport:
        """Recall@k on the validation examples with the current weights, through the core encode path."""
        self.encoder.eval()
        if self.frozen_vision:
            with torch.inference_mode():
                image_vectors = self.encoder.project(self.val_features).cpu().numpy()
        else:
            image_vectors = self.vectorizer.encode_images([e.image for e in self.val_examples], show_progress=False)
        captions, _ = unique_captions(self.val_examples)
        caption_vectors = self.caption_vectors[[self.caption_index[c] for c in captions]].cpu().numpy()
        return recall_report(image_vectors, caption_vectors, self.val_examples)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self) -> Path:
        # Written into a temporary directory and renamed when complete: a run killed mid-write leaves no
        # checkpoint-* directory that --resume would take (the rename is atomic on one filesystem).
        directory = self.out / f"checkpoint-{self.step:07d}"
        temporary = self.out / f".{directory.name}.tmp-{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        try:
            save_components(self.components, temporary, copy_towers=True, copy_text=False)
            torch.save(
                {
                    "step": self.step,
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "history": self.history,
                    "torch_rng": torch.get_rng_state(),
                },
                temporary / STATE_FILE,
            )
            shutil.rmtree(directory, ignore_errors=True)  # a checkpoint of the same step from an earlier run
            os.replace(temporary, directory)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        for old in _checkpoints(self.out)[: -self.config.keep_checkpoints or None]:
            shutil.rmtree(old, ignore_errors=True)
        return directory

    def _load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        torch.set_rng_state(state["torch_rng"])


def _atomic_write(path: Path, write: Any) -> None:
    """``write(temporary_path)``, then rename onto ``path``: readers see the old file or the whole new one."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _load_cache(path: Path, rows: int) -> np.ndarray | None:
    """The cached caption vectors, or ``None`` (with a warning for a file that does not load) to recompute them."""
    if not path.is_file():
        return None
    try:
        vectors = np.load(path)
        if vectors.ndim != 2 or len(vectors) != rows:
            raise ValueError(f"shape {vectors.shape}, expected {rows} rows")
        return vectors
    except Exception as exc:  # noqa: BLE001 - a damaged cache is recomputed, never trusted
        warnings.warn(f"recomputing caption cache {path}: it does not load ({type(exc).__name__}: {exc})",
                      RuntimeWarning, stacklevel=3)
        return None


class _ImageSource:
    """Preprocessed training images: all in memory when they fit, else decoded per batch (same core path)."""

    def __init__(self, vectorizer: Vectorizer, images: Sequence[str], show_progress: bool | None) -> None:
        self.vectorizer = vectorizer
        self.images = list(images)
        max_bytes = len(self.images) * vectorizer.max_num_patches * vectorizer.preprocessing.patch_dim
        self.cached: list[PatchedImage] | None = None
        if max_bytes <= IN_MEMORY_BUDGET_BYTES:
            self.cached = vectorizer.prepare_images(self.images, show_progress=show_progress)

    def get(self, indices: list[int]) -> list[PatchedImage]:
        if self.cached is not None:
            return [self.cached[i] for i in indices]
        return self.vectorizer.prepare_images([self.images[i] for i in indices], show_progress=False)


def _no_bar(show_progress: bool | None) -> bool | None:
    # tqdm's disable=None hides the bar when stderr is not a terminal (logs, CI), as show_progress=None means.
    return None if show_progress is None else not show_progress


def _checkpoints(out: Path) -> list[Path]:
    return sorted(p for p in out.glob("checkpoint-*") if (p / STATE_FILE).is_file())


def _tower_identity(components: Components) -> str:
    """Identifies the text tower for the caption cache: its config plus a digest of its first and last weights
    (cheap, yet two differently initialised or trained towers never share a cache entry)."""
    model = components.text_encoder.model
    parameters = list(model.parameters())
    digest = hashlib.sha256()
    for tensor in (parameters[0], parameters[-1]):
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return json.dumps([model.config.to_dict(), digest.hexdigest()], sort_keys=True, default=str)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
