"""``Vectorizer``: the one public way to turn images and texts into vectors.

Images stream through a thread pool (decode -> RGB -> NaFlex resize -> uint8 patches) one window ahead of the
model, so decoding overlaps the forward pass. URLs are downloaded first on threads of their own call (at most
``fetch_workers`` at once), so a slow server holds no decode thread and delays no other call's images; large
decodes share a budget of pixels in flight (``decode_budget_pixels``), so memory is bounded whatever the batch.
Within a window, items are de-duplicated by content (identical inputs get bit-identical vectors and are computed
once) and sorted by patch count, so each batch pads little. Texts are tokenised in one call, de-duplicated, sorted
by length and batched the same way; BGE-M3's sparse and multi-vector outputs come from that same loop and the same
forward pass as the dense vectors. Every item is validated on the way;
the first bad one in input order raises a typed error naming its index, and no vectors are returned.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import math
import os
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Sequence

import numpy as np
from tqdm.auto import tqdm

from ._version import __version__
from .backends import BACKENDS, Backend, make_backend, needs_torch_weights
from .errors import InvalidImageError, InvalidInputError, MissingHeadError
from .fetch import fetch_url, is_url, normalize_private_allowance, parse_private_allowance
from .inputs import (
    DEFAULT_LIMITS,
    TRIM_PIXELS,
    FetchedImage,
    ImageInput,
    ImageLimits,
    PixelBudget,
    open_image,
    release_freed_memory,
    validate_text,
)
from .loading import (
    DEFAULT_TEXT_TOWER,
    DEFAULT_VISION_TOWER,
    HEAD_FILES,
    Components,
    ModelConfig,
    build_components,
    load_components,
    load_text_heads,
    load_text_tower,
    load_vision_tower,
    model_fingerprint,
    read_projector,
    resolve_model_dir,
    save_components,
    text_head_fingerprints,
)
from .options import check_options, option
from .preprocess import NaFlexConfig, PatchedImage, collate, patchify, reduced_decode_size
from .text_outputs import SparseEmbedding, TextEncodings, multivector_rows, sparse_embedding, sparse_excluded_ids

Kind = Literal["text", "image"]
#: The model name adapters answer to by default (e.g. ``models.Image(..., model=MODEL_NAME)`` in Qdrant).
MODEL_NAME = "bge-siglip"
#: Default decode threads are the usable CPUs, at most this many.
MAX_DEFAULT_WORKERS = 32
DEFAULT_FETCH_WORKERS = 8
#: Pixels all decodes of one Vectorizer hold at once by default: ~0.5 GB of decoded RGB(X) pixels, e.g. one image at
#: the default pixel limit beside a few photos, or ten 12 MP photos decoded at full size (exact mode).
DEFAULT_DECODE_BUDGET = 128_000_000


def available_cpus(cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """The CPUs this process may really use: its CPU affinity, lowered by a cgroup CPU quota (containers, CI
    runners), which ``os.cpu_count()`` alone ignores."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota(Path(cgroup_root))
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_cpu_quota(root: Path) -> float | None:
    """The tightest CPU quota (in CPUs) on this process's cgroup and its ancestors, v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us``; None when there is none or it cannot be read."""
    quotas: list[float] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    own = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), "/")
    folder = root / own.lstrip("/")
    while True:  # v2: every level from ours up to the root may set cpu.max ("max 100000" or "150000 100000")
        try:
            limit, period = (folder / "cpu.max").read_text().split()[:2]
            if limit != "max":
                quotas.append(int(limit) / int(period))
        except (OSError, ValueError):
            pass
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    for v1 in ("cpu", "cpu,cpuacct"):
        try:
            limit_us = int((root / v1 / "cpu.cfs_quota_us").read_text())
            period_us = int((root / v1 / "cpu.cfs_period_us").read_text())
            if limit_us > 0 and period_us > 0:
                quotas.append(limit_us / period_us)
        except (OSError, ValueError):
            pass
    return min(quotas) if quotas else None


@dataclass(frozen=True, kw_only=True)
class VectorizerOptions:
    """How a model is loaded and run, and the limits on what it accepts: the keyword arguments of
    :meth:`Vectorizer.from_pretrained`, the CLI's model options, and the adapters' and servers' options."""

    device: str | None = option(None, help="torch device: cpu, cuda, cuda:1, mps (default: cuda if available)")
    dtype: str | None = option(None, help="float32, float16 or bfloat16 (default: float16 on GPU, else float32)")
    backend: str = option("torch", choices=BACKENDS,
                          help="inference backend (onnx and onnx-int8 need `bge-siglip export-onnx` first)")
    max_num_patches: int | None = option(None, min=1, vectors=True,
                                         help="image detail budget in 16px patches: 64, 256, 1024 ... (default: "
                                              "the saved value, 256)")
    max_image_pixels: int | None = option(None, min=1,
                                          help="refuse images with more pixels, checked before decoding "
                                               f"(default {DEFAULT_LIMITS.max_pixels:,})")
    allow_urls: bool = option(True, help="fetch http(s) image URLs (off: file:// URIs are refused too)")
    url_timeout_s: float | None = option(None, above=0,
                                         help="seconds per URL, in all: DNS, connect, every redirect and the body "
                                              f"(default {DEFAULT_LIMITS.url_timeout_s:g})")
    num_workers: int | None = option(None, min=1,
                                     help="image decode threads (default: the CPUs this process may use, from its "
                                          f"affinity and cgroup quota, at most {MAX_DEFAULT_WORKERS})")
    allow_private_urls: bool | tuple[str, ...] = option(
        False, parse=parse_private_allowance, metavar="true|HOSTS",
        help="fetch URLs whose address is loopback, private, link-local, ... (refused by default: SSRF): true for "
             "all, or a comma-separated list of allowed hosts and networks, e.g. images.internal,10.0.0.0/8")
    allow_local_files: bool = option(True, help="read local image files and file:// URIs (servers and adapters "
                                                "that take untrusted input turn this off)")
    exact_preprocessing: bool = option(False, vectors=True, help="decode every image at full size before resizing, bit-identical "
                                                   "to transformers' Siglip2 processor (default: JPEGs decode "
                                                   "reduced, ~4x faster, cosine >= 0.9999 to exact)")
    max_download_bytes: int | None = option(None, min=1, help="largest URL download in bytes (default "
                                                              f"{DEFAULT_LIMITS.max_download_bytes:,})")
    max_file_bytes: int | None = option(None, min=1, help="largest local image file in bytes (default "
                                                          f"{DEFAULT_LIMITS.max_file_bytes:,})")
    decode_budget_pixels: int | None = option(None, min=1,
                                              help="pixels all concurrent decodes may hold at once; an image "
                                                   "larger than that decodes alone "
                                                   f"(default {DEFAULT_DECODE_BUDGET:,})")
    fetch_workers: int | None = option(None, min=1, help="URL downloads at once per encode call, on threads apart "
                                                         f"from the decode threads (default {DEFAULT_FETCH_WORKERS})")

    def __post_init__(self) -> None:
        check_options(self)
        # One hashable form (shared_vectorizer keys its cache on these options): lists become tuples.
        object.__setattr__(self, "allow_private_urls", normalize_private_allowance(self.allow_private_urls))

    def limits(self) -> ImageLimits:
        """The per-item limits these options set (unset ones at their defaults)."""
        return ImageLimits(
            max_pixels=self.max_image_pixels or DEFAULT_LIMITS.max_pixels,
            url_timeout_s=self.url_timeout_s or DEFAULT_LIMITS.url_timeout_s,
            max_download_bytes=self.max_download_bytes or DEFAULT_LIMITS.max_download_bytes,
            max_file_bytes=self.max_file_bytes or DEFAULT_LIMITS.max_file_bytes,
            allow_urls=self.allow_urls,
            allow_local_files=self.allow_local_files,
            allow_private_urls=self.allow_private_urls,
        )


@dataclass(frozen=True)
class ImagePreparer:
    """Decodes, validates and patchifies one image exactly as :meth:`Vectorizer.encode_images` does, without the
    model: the NaFlex settings and the input limits are all it holds.

    Light and picklable, so a decode stage can run apart from the model (another thread, process or machine, e.g.
    the CPU tasks of a Ray Data pipeline) and hand the small ``uint8`` :class:`PatchedImage` to
    :meth:`Vectorizer.encode_prepared`. Build it from a model directory with :meth:`from_pretrained` (reads the
    directory's config, no weights) or take a loaded Vectorizer's :attr:`Vectorizer.preparer`.
    """

    preprocessing: NaFlexConfig
    limits: ImageLimits = DEFAULT_LIMITS
    exact_preprocessing: bool = False
    #: Pixels all decodes of this process with the same budget hold at once (a plain number, so the preparer
    #: pickles; the budget object itself is per process, see :func:`_decode_budget`).
    decode_budget_pixels: int = DEFAULT_DECODE_BUDGET

    @classmethod
    def from_options(cls, preprocessing: NaFlexConfig, settings: "VectorizerOptions") -> "ImagePreparer":
        return cls(
            preprocessing,
            settings.limits(),
            exact_preprocessing=settings.exact_preprocessing,
            decode_budget_pixels=settings.decode_budget_pixels or DEFAULT_DECODE_BUDGET,
        )

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **options: Any) -> "ImagePreparer":
        """The preparer of the Vectorizer that ``Vectorizer.from_pretrained(name_or_path, **options)`` would load
        (the same ``max_num_patches``, decoding and image limits); only ``bge_siglip_config.json`` is read."""
        settings = VectorizerOptions(**options)
        preprocessing = ModelConfig.read(resolve_model_dir(name_or_path)).preprocessing
        if settings.max_num_patches is not None:
            preprocessing = dataclasses.replace(preprocessing, max_num_patches=settings.max_num_patches)
        return cls.from_options(preprocessing, settings)

    def prepare(self, item: ImageInput, index: int | None = None) -> PatchedImage:
        """One image input (any kind ``encode_images`` takes) -> its patches, or the typed ``InvalidImageError``
        naming ``index`` and, where known, the item's path or URL.

        Decoded reduced (JPEG DCT scaling to at least the NaFlex target) unless ``exact_preprocessing``, within
        the process's pixel budget for decodes in flight."""
        try:
            with open_image(item, index, self.limits) as opened:
                if not self.exact_preprocessing:
                    opened.reduce_for(self._reduced_size)
                pixels = opened.pixels
                # Held from decode to the small patches: the decoded pixels live only inside this block.
                with _decode_budget(self.decode_budget_pixels).reserve(pixels):
                    patched = patchify(opened.decode(), self.preprocessing)
                    if pixels >= TRIM_PIXELS:
                        release_freed_memory()
            return patched
        except InvalidInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever PIL/numpy/httpx raise, the caller learns which item
            raise InvalidImageError(f"cannot decode image ({type(exc).__name__}: {exc})", index=index) from None

    def _reduced_size(self, width: int, height: int) -> tuple[int, int]:
        return reduced_decode_size(width, height, self.preprocessing)


_BUDGETS: dict[int, PixelBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def _decode_budget(pixels: int) -> PixelBudget:
    """The process's budget of decoded pixels in flight for this limit: every Vectorizer and preparer with the same
    ``decode_budget_pixels`` shares it, so several models in one process do not multiply the memory bound."""
    with _BUDGETS_LOCK:
        budget = _BUDGETS.get(pixels)
        if budget is None:
            budget = _BUDGETS[pixels] = PixelBudget(pixels)
        return budget


@dataclass
class EncodeStats:
    """Counters of work done (read by the server's /meta and by tests that check batching)."""

    images: int = 0
    texts: int = 0
    image_batches: int = 0
    text_batches: int = 0


class Vectorizer:
    """BGE-SigLIP encoder: ``encode_images`` and ``encode_texts`` return L2-normalised float32 ``(n, dim)`` arrays
    in one shared space, so text finds images and images find images.

    Build one with :meth:`from_pretrained` (a saved directory or hub repo) or :meth:`from_towers` (the public
    towers plus a projector file you trained). ``Vectorizer(components, options)`` wraps loaded components;
    ``backend`` may also be an already built :class:`~bge_siglip_vectorizer.backends.Backend`.
    """

    def __init__(
        self,
        components: Components,
        options: VectorizerOptions | None = None,
        *,
        backend: str | Backend | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(backend, str):
            kwargs["backend"] = backend
        options = dataclasses.replace(options or VectorizerOptions(), **kwargs)
        if options.max_num_patches is not None and options.max_num_patches != components.preprocessing.max_num_patches:
            preprocessing = dataclasses.replace(components.preprocessing, max_num_patches=options.max_num_patches)
            components = dataclasses.replace(
                components, config=dataclasses.replace(components.config, preprocessing=preprocessing)
            )
        self.options = options
        self.components = components
        self.preprocessing: NaFlexConfig = components.preprocessing
        self.text_max_length: int = components.text_max_length
        self.tokenizer = components.tokenizer
        self.limits = options.limits()
        #: Decoding and patchifying, the first half of encode_images; usable apart from the model.
        self.preparer = ImagePreparer.from_options(self.preprocessing, options)
        chosen = backend if backend is not None and not isinstance(backend, str) else options.backend
        self.backend: Backend = make_backend(chosen, components, options.device, options.dtype)
        self.num_workers = options.num_workers or min(MAX_DEFAULT_WORKERS, available_cpus())
        self.fetch_workers = options.fetch_workers or DEFAULT_FETCH_WORKERS
        self.stats = EncodeStats()
        self._stats_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        pad_id = getattr(self.tokenizer, "pad_token_id", None)
        self._pad_id = int(pad_id) if pad_id is not None else 0

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **options: Any) -> "Vectorizer":
        """Load a BGE-SigLIP directory (see :mod:`bge_siglip_vectorizer.loading`) or hub repo.

        Keyword arguments are the fields of :class:`VectorizerOptions`: ``device``, ``dtype``, ``backend``
        (``"torch"``, or ``"onnx"`` / ``"onnx-int8"`` for graphs written by ``bge-siglip export-onnx``),
        ``max_num_patches`` (default: the saved value, 256; trades image detail for speed), ``exact_preprocessing``
        (full decodes, tensors bit-identical to transformers' processor; default: JPEGs decode reduced), the limits
        ``max_image_pixels``, ``allow_urls``, ``url_timeout_s``, ``allow_private_urls`` (URLs to internal addresses
        are refused unless allowed), ``allow_local_files``, ``max_download_bytes``, ``max_file_bytes``,
        ``decode_budget_pixels``, and the threads ``num_workers`` (decoding), ``fetch_workers`` (URL downloads).
        """
        settings = VectorizerOptions(**options)
        components = load_components(
            name_or_path, max_num_patches=settings.max_num_patches, weights=needs_torch_weights(settings.backend)
        )
        return cls(components, settings)

    @classmethod
    def from_towers(
        cls,
        projector: str | os.PathLike,
        *,
        vision: str = DEFAULT_VISION_TOWER,
        text: str = DEFAULT_TEXT_TOWER,
        text_pooling: str = "cls",
        **options: Any,
    ) -> "Vectorizer":
        """Compose the public towers (hub ids or local dirs) with a trained ``projector.safetensors``.

        Keyword arguments: the fields of :class:`VectorizerOptions` (torch backend only).
        """
        settings = VectorizerOptions(**options)
        state = read_projector(Path(projector))
        config = ModelConfig(vision_tower=vision, text_tower=text, text_pooling=text_pooling)
        vision_model = load_vision_tower(vision)
        text_model, tokenizer = load_text_tower(text)
        components = build_components(
            vision_model, text_model, tokenizer, config, state, None, settings.max_num_patches, load_text_heads(text)
        )
        return cls(components, settings)

    def save_pretrained(self, directory: str | os.PathLike, copy_towers: bool = True) -> Path:
        """Write a self-describing directory that :meth:`from_pretrained` loads (towers copied by default)."""
        return save_components(self.components, directory, copy_towers=copy_towers)

    # ------------------------------------------------------------------------------------------------ facts
    @property
    def dim(self) -> int:
        return int(self.components.config.dim)

    @property
    def max_num_patches(self) -> int:
        return self.preprocessing.max_num_patches

    @property
    def text_outputs(self) -> tuple[str, ...]:
        """The text granularities this model gives with this backend: ``"dense"``, and ``"sparse"`` /
        ``"multivector"`` where the text tower has BGE-M3's heads and the backend runs them."""
        heads = self.components.text_encoder.heads()
        return tuple(output for output in self.backend.text_outputs if output == "dense" or output in heads)

    @property
    def sparse_dim(self) -> int | None:
        """The size of the sparse vectors' space (the tokenizer's vocabulary), or ``None`` without a sparse head."""
        return len(self.tokenizer) if "sparse" in self.components.text_encoder.heads() else None

    @property
    def multivector_dim(self) -> int | None:
        """The size of each multi-vector row, or ``None`` without a multi-vector (ColBERT) head."""
        head = self.components.text_encoder.heads().get("multivector")
        return None if head is None else int(head.out_features)

    def describe(self) -> dict[str, Any]:
        """JSON-able description of the model (for ``bge-siglip info`` and the server's ``/meta``)."""
        config = self.components.config
        return {
            "model": MODEL_NAME,
            "version": __version__,
            "source": self.components.source,
            "vision_tower": config.vision_tower,
            "text_tower": config.text_tower,
            "dim": self.dim,
            "text_pooling": config.text_pooling,
            "text_max_length": self.text_max_length,
            "max_num_patches": self.max_num_patches,
            "patch_size": self.preprocessing.patch_size,
            "vision_hidden_size": int(self.components.image_encoder.vision.config.hidden_size),
            "vision_layers": int(self.components.image_encoder.vision.config.num_hidden_layers),
            "text_layers": int(getattr(self.components.text_encoder.model.config, "num_hidden_layers", 0)),
            "text_outputs": list(self.text_outputs),
            "sparse_dim": self.sparse_dim,
            "multivector_dim": self.multivector_dim,
            "backend": self.backend.name,
            "device": self.backend.device,
            "dtype": self.backend.dtype,
        }

    def __repr__(self) -> str:
        return (
            f"Vectorizer(dim={self.dim}, source={self.components.source!r}, max_num_patches={self.max_num_patches}, "
            f"backend={self.backend.name!r}, device={self.backend.device!r})"
        )

    # ------------------------------------------------------------------------------------------------ encoding
    def encode_images(
        self, images: Iterable[ImageInput], batch_size: int = 32, show_progress: bool | None = None
    ) -> np.ndarray:
        """Encode images (paths, URLs, bytes, base64, data URIs, PIL images, uint8 HWC arrays) to ``(n, dim)``."""
        items = _as_list(images, "images")
        with self._progress(len(items), batch_size, show_progress, "images") as progress:
            return self._encode_images(items, list(range(len(items))), batch_size, progress)

    def encode_texts(
        self,
        texts: Iterable[str],
        batch_size: int = 32,
        show_progress: bool | None = None,
        allow_empty: bool = False,
    ) -> np.ndarray:
        """Encode texts (any language; truncated at the text tower's maximum length) to ``(n, dim)``.

        Empty or blank texts are an error unless ``allow_empty`` (e.g. a server mirroring a reference that embeds
        ``""`` like any other string).
        """
        items = _as_list(texts, "texts")
        with self._progress(len(items), batch_size, show_progress, "texts") as progress:
            return self._encode_texts(items, list(range(len(items))), batch_size, progress, allow_empty)

    def encode_texts_sparse(
        self,
        texts: Iterable[str],
        batch_size: int = 32,
        show_progress: bool | None = None,
        allow_empty: bool = False,
    ) -> list[SparseEmbedding]:
        """BGE-M3's lexical weights per text: token ids (``.indices``, int64, ascending) and their weights
        (``.values``, float32 > 0), as FlagEmbedding's ``BGEM3FlagModel.encode(return_sparse=True)`` computes them.

        Needs the text tower's ``sparse_linear.pt`` (else :class:`MissingHeadError`); arguments as :meth:`encode_texts`.
        """
        return self.encode_texts_all(texts, batch_size, show_progress, allow_empty, multivector=False).sparse

    def encode_texts_multivector(
        self,
        texts: Iterable[str],
        batch_size: int = 32,
        show_progress: bool | None = None,
        allow_empty: bool = False,
    ) -> list[np.ndarray]:
        """BGE-M3's ColBERT vectors per text: float32 ``(tokens - 1, multivector_dim)``, unit rows (every token but
        CLS, the final ``</s>`` included), as FlagEmbedding's ``encode(return_colbert_vecs=True)`` computes them.

        Needs the text tower's ``colbert_linear.pt`` (else :class:`MissingHeadError`); arguments as
        :meth:`encode_texts`.
        """
        return self.encode_texts_all(texts, batch_size, show_progress, allow_empty, sparse=False).multivector

    def encode_texts_all(
        self,
        texts: Iterable[str],
        batch_size: int = 32,
        show_progress: bool | None = None,
        allow_empty: bool = False,
        *,
        sparse: bool = True,
        multivector: bool = True,
    ) -> TextEncodings:
        """Dense vectors and, from the same forward pass, sparse and multi-vector outputs (``sparse=False`` /
        ``multivector=False`` leave one out: ``None`` in the result). ``.dense`` equals :meth:`encode_texts`."""
        items = _as_list(texts, "texts")
        with self._progress(len(items), batch_size, show_progress, "texts") as progress:
            return self._text_encodings(
                items, list(range(len(items))), batch_size, progress, allow_empty, sparse=sparse, multivector=multivector
            )

    def sparse_tokens(self, embedding: SparseEmbedding) -> list[str]:
        """The vocabulary pieces of a sparse embedding's token ids, in its order (e.g. Chroma's ``SparseVector``
        ``labels``; FlagEmbedding's ``convert_id_to_token``)."""
        return list(self.tokenizer.convert_ids_to_tokens(embedding.indices.tolist()))

    def encode_query(
        self,
        text: str | None = None,
        image: ImageInput | None = None,
        weights: tuple[float, float] = (1.0, 1.0),
    ) -> np.ndarray:
        """One float32 ``(dim,)`` unit query vector: the normalised weighted sum of the text's and the image's vectors
        (``weights = (text_weight, image_weight)``), e.g. a photo plus "but in red" to find images.

        Either alone gives its own vector. Errors: neither given, or weights that are not two finite numbers >= 0
        with a positive one for a given input (``ValueError``); a bad text or image (``InvalidTextError`` /
        ``InvalidImageError``, named ``text`` / ``image``).
        """
        if text is None and image is None:
            raise InvalidInputError("encode_query needs text=, image= or both", index=None)
        text_weight, image_weight = _query_weights(weights, text is not None, image is not None)
        # The text first: it is validated without decoding anything.
        total = np.zeros(self.dim, dtype=np.float64)
        if text is not None:
            total += text_weight * self._encode_texts([text], [None], 1, None)[0]
        if image is not None:
            total += image_weight * self._encode_images([image], [None], 1, None)[0]
        norm = float(np.linalg.norm(total))
        if not norm > 1e-6:
            # Only possible for an image and a text with opposite vectors and proportionate weights.
            raise ValueError("the weighted text and image vectors cancel out; change the weights")
        return (total / norm).astype(np.float32)

    def count_tokens(self, texts: Iterable[str]) -> list[int]:
        """How many tokens each text is encoded with: special tokens included, after truncation at
        ``text_max_length`` (the ``usage`` an embeddings API reports; what a server sorts texts into length
        buckets by). Any string is counted, ``""`` included; a non-string raises ``InvalidTextError``."""
        items = [validate_text(item, i, allow_empty=True) for i, item in enumerate(_as_list(texts, "texts"))]
        return [len(ids) for ids in self._token_ids(items)] if items else []

    def encode_prepared(self, images: Sequence[PatchedImage], batch_size: int = 32) -> np.ndarray:
        """Encode images already decoded and patchified by :meth:`prepare_images` or an :class:`ImagePreparer`
        (servers prepare in request threads, and Ray pipelines in CPU tasks, and pass on the small uint8 patches
        instead of full-size images). The vectors equal ``encode_images`` of the same inputs."""
        _check_batch_size(batch_size)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        if images:
            self._forward_images([(item, _digest(item)) for item in images], out, batch_size, None)
        return out

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identifies the dense vector space (projector, towers' configs, pooling, preprocessing): stores refuse to
        mix vectors of models with different fingerprints. Computed once per instance. BGE-M3's heads do not enter
        (dense vectors do not depend on them); see :attr:`fingerprints` for theirs."""
        return model_fingerprint(self.components)

    @functools.cached_property
    def fingerprints(self) -> dict[str, str]:
        """A fingerprint per text granularity the model has: ``"dense"`` (= :attr:`fingerprint`, images included),
        ``"sparse"`` and ``"multivector"`` (their head's weights, the text tower, the vocabulary for sparse). A store
        keeping several granularities guards each with its own."""
        return {"dense": self.fingerprint, **text_head_fingerprints(self.components)}

    def encode_mixed(
        self,
        items: Sequence[Any],
        kinds: Sequence[Kind],
        batch_size: int = 32,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Encode a list mixing texts and images (``kinds[i]`` says which), in order; errors name the mixed index."""
        if len(items) != len(kinds):
            raise ValueError(f"items and kinds differ in length ({len(items)} vs {len(kinds)})")
        out = np.empty((len(items), self.dim), dtype=np.float32)
        text_pos = [i for i, kind in enumerate(kinds) if kind == "text"]
        image_pos = [i for i, kind in enumerate(kinds) if kind == "image"]
        unknown = [i for i, kind in enumerate(kinds) if kind not in ("text", "image")]
        if unknown:
            raise ValueError(f"kinds[{unknown[0]}] = {kinds[unknown[0]]!r}; expected 'text' or 'image'")
        with self._progress(len(items), batch_size, show_progress, "items") as progress:
            # Texts first: they are validated without decoding, so a bad text fails before any image work.
            if text_pos:
                out[text_pos] = self._encode_texts([items[i] for i in text_pos], text_pos, batch_size, progress)
            if image_pos:
                out[image_pos] = self._encode_images([items[i] for i in image_pos], image_pos, batch_size, progress)
        return out

    def prepare_images(self, images: Iterable[ImageInput], show_progress: bool | None = None) -> list[PatchedImage]:
        """Decode, validate and patchify images (in the decode thread pool) without running the model.

        Training uses this to preprocess a dataset once, through exactly the path ``encode_images`` takes.
        """
        items = _as_list(images, "images")
        with self._progress(len(items), 64, show_progress, "images") as progress, _ImageJobs(self) as jobs:
            futures = [jobs.submit(item, i) for i, item in enumerate(items)]
            prepared = []
            for future in futures:
                prepared.append(future.result()[0])
                if progress is not None:
                    progress.update(1)
        return prepared

    # ------------------------------------------------------------------------------------------------ internals
    def _progress(self, total: int, batch_size: int, show: bool | None, unit: str):
        if show is None:
            show = total > batch_size and sys.stderr.isatty()
        if not show:
            return contextlib.nullcontext()
        return tqdm(total=total, unit=unit[:-1] if unit.endswith("s") else unit, desc=f"encoding {unit}", leave=False)

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="bge-siglip-decode")
            return self._pool

    def _prepare_image(self, item: Any, position: int) -> tuple[PatchedImage, bytes]:
        patched = self.preparer.prepare(item, position)
        return patched, _digest(patched)

    def _encode_images(self, items: list[Any], positions: list[int], batch_size: int, progress) -> np.ndarray:
        _check_batch_size(batch_size)
        n = len(items)
        out = np.empty((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        window = max(4 * batch_size, 64)
        computed: dict[bytes, np.ndarray] = {}  # content digest -> its vector, across windows
        with _ImageJobs(self) as jobs:

            def submit(start: int) -> list[Future]:
                return [jobs.submit(items[i], positions[i]) for i in range(start, min(start + window, n))]

            pending = submit(0)
            for start in range(0, n, window):
                prepared = [future.result() for future in pending]  # in order: the first bad item raises
                pending = submit(start + window) if start + window < n else []
                self._forward_images(prepared, out[start : start + len(prepared)], batch_size, progress, computed)
        return out

    def _forward_images(
        self,
        prepared: list[tuple[PatchedImage, bytes]],
        out: np.ndarray,
        batch_size: int,
        progress,
        computed: dict[bytes, np.ndarray] | None = None,
    ) -> None:
        """Encode prepared images into ``out``; identical content (also seen in ``computed``) runs once."""
        computed = {} if computed is None else computed
        first_of: dict[bytes, int] = {}
        duplicates: list[tuple[int, int]] = []
        unique: list[int] = []
        for i, (_, digest) in enumerate(prepared):
            if digest in computed:
                out[i] = computed[digest]
                duplicates.append((i, i))
            elif digest in first_of:
                duplicates.append((i, first_of[digest]))
            else:
                first_of[digest] = i
                unique.append(i)
        unique.sort(key=lambda i: prepared[i][0].num_patches, reverse=True)
        for start in range(0, len(unique), batch_size):
            rows = unique[start : start + batch_size]
            pixel_values, mask, shapes = collate([prepared[i][0] for i in rows], self.preprocessing)
            out[rows] = self.backend.run_images(pixel_values, mask, shapes)
            self._count(images=len(rows))
            if progress is not None:
                progress.update(len(rows))
        for row, source in duplicates:
            out[row] = out[source]
        for digest, row in first_of.items():
            computed[digest] = out[row]
        if progress is not None and duplicates:
            progress.update(len(duplicates))

    def _encode_texts(
        self, items: list[Any], positions: list[Any], batch_size: int, progress, allow_empty: bool = False
    ) -> np.ndarray:
        return self._text_encodings(items, positions, batch_size, progress, allow_empty).dense

    def _text_encodings(
        self,
        items: list[Any],
        positions: list[Any],
        batch_size: int,
        progress,
        allow_empty: bool = False,
        sparse: bool = False,
        multivector: bool = False,
    ) -> TextEncodings:
        """The one text loop: validate, de-duplicate, tokenise, sort by length, batch; each batch is one forward
        that gives the dense vectors and, as asked, the heads' per-token outputs, cut per text here."""
        _check_batch_size(batch_size)
        outputs = self._check_text_outputs(sparse, multivector)
        texts = [validate_text(item, position, allow_empty) for item, position in zip(items, positions)]
        unique = list(dict.fromkeys(texts))
        token_ids = self._token_ids(unique) if unique else []
        order = sorted(range(len(unique)), key=lambda i: len(token_ids[i]), reverse=True)
        vectors = np.empty((len(unique), self.dim), dtype=np.float32)
        lexical: list[SparseEmbedding] = [None] * len(unique)  # type: ignore[list-item]
        colbert: list[np.ndarray] = [None] * len(unique)  # type: ignore[list-item]
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            length = max(len(token_ids[i]) for i in rows)
            ids = np.full((len(rows), length), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), length), dtype=np.int64)
            for r, i in enumerate(rows):
                ids[r, : len(token_ids[i])] = token_ids[i]
                mask[r, : len(token_ids[i])] = 1
            result = self.backend.run_text_outputs(ids, mask, outputs)
            vectors[rows] = result["dense"]
            for r, i in enumerate(rows):
                n = len(token_ids[i])
                if sparse:
                    lexical[i] = sparse_embedding(ids[r, :n], result["sparse"][r, :n], self._sparse_excluded)
                if multivector:
                    colbert[i] = multivector_rows(result["multivector"][r], n)
            self._count(texts=len(rows))
            if progress is not None:
                progress.update(len(rows))
        index_of = {text: i for i, text in enumerate(unique)}
        index = [index_of[text] for text in texts]
        if progress is not None:
            progress.update(len(texts) - len(unique))
        return TextEncodings(
            dense=vectors[index],
            sparse=_expand(lexical, index, _copy_sparse) if sparse else None,
            multivector=_expand(colbert, index, np.copy) if multivector else None,
        )

    def _check_text_outputs(self, sparse: bool, multivector: bool) -> tuple[str, ...]:
        """The backend outputs a call needs, or :class:`MissingHeadError` saying which head is missing where."""
        wanted = ("dense", *(["sparse"] if sparse else []), *(["multivector"] if multivector else []))
        heads = self.components.text_encoder.heads()
        for output in wanted[1:]:
            if output not in heads:
                raise MissingHeadError(
                    f"the text tower {self.components.config.text_tower!r} has no {HEAD_FILES[output]} (BGE-M3's "
                    f"{'sparse' if output == 'sparse' else 'multi-vector (ColBERT)'} head), so this model gives no "
                    f"{output} text outputs; it gives {', '.join(self.text_outputs)}. Put the BAAI/bge-m3 repo's "
                    f"{HEAD_FILES[output]} beside the tower's weights to add them."
                )
            if output not in self.backend.text_outputs:
                raise MissingHeadError(
                    f"the {self.backend.name!r} backend does not run the {output} head the model has (ONNX graphs "
                    "exported before this version lack it): re-export with `bge-siglip export-onnx`"
                )
        return wanted

    @functools.cached_property
    def _sparse_excluded(self) -> np.ndarray:
        return sparse_excluded_ids(self.tokenizer)

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        # Cut absurdly long strings before tokenising: tokenisers process the whole string before truncating, and
        # no real text needs more than ~32 characters per token to reach the limit.
        char_limit = self.text_max_length * 32
        return self.tokenizer(
            [text[:char_limit] for text in texts],
            truncation=True,
            max_length=self.text_max_length,
            return_attention_mask=False,
        )["input_ids"]

    def _count(self, images: int = 0, texts: int = 0) -> None:
        with self._stats_lock:  # one Vectorizer may encode from several threads (e.g. a web server's pool)
            self.stats.images += images
            self.stats.texts += texts
            self.stats.image_batches += bool(images)
            self.stats.text_batches += bool(texts)

    def close(self) -> None:
        """Stop the decode threads; a later encode call starts them again."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


class _ImageJobs:
    """One call's image work. Items go to the Vectorizer's decode pool; URLs are first downloaded on this call's own
    threads (at most ``fetch_workers``), so a slow server holds no decode thread, and one call's slow URLs never wait
    in front of another call's images. Leaving the block cancels what has not started; downloads in progress end at
    their deadline, and nothing is decoded for a call that has ended."""

    def __init__(self, vectorizer: Vectorizer) -> None:
        self._vectorizer = vectorizer
        self._fetch_pool: ThreadPoolExecutor | None = None
        self._pending: set[Future] = set()  # only unfinished ones: results are not kept past the caller's use
        self._closed = False

    def submit(self, item: Any, position: int) -> Future:
        vectorizer = self._vectorizer
        if is_url(item):
            if self._fetch_pool is None:
                self._fetch_pool = ThreadPoolExecutor(vectorizer.fetch_workers, thread_name_prefix="bge-siglip-fetch")
            future = self._fetch_pool.submit(self._fetch_then_prepare, item, position)
        else:
            future = vectorizer._executor().submit(vectorizer._prepare_image, item, position)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return future

    def _fetch_then_prepare(self, url: str, position: int) -> tuple[PatchedImage, bytes]:
        vectorizer = self._vectorizer
        try:
            fetched = FetchedImage(fetch_url(url, position, vectorizer.limits), url.strip())
        except InvalidInputError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the HTTP stack raises, the caller learns which item
            raise InvalidImageError(f"download failed ({type(exc).__name__}: {exc})", index=position,
                                    source=url.strip()) from None
        if self._closed:
            raise InvalidImageError("the call ended before this download finished", index=position)
        return vectorizer._executor().submit(vectorizer._prepare_image, fetched, position).result()

    def __enter__(self) -> "_ImageJobs":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closed = True
        for future in list(self._pending):
            future.cancel()
        if self._fetch_pool is not None:
            self._fetch_pool.shutdown(wait=False, cancel_futures=True)


def _digest(patched: PatchedImage) -> bytes:
    digest = hashlib.blake2b(patched.patches.data, digest_size=16)
    digest.update(np.asarray(patched.grid, dtype=np.int64).tobytes())
    return digest.digest()


def _as_list(items: Any, what: str) -> list[Any]:
    if isinstance(items, (str, bytes, os.PathLike)) or (isinstance(items, np.ndarray) and items.ndim == 3 and what == "images" and items.dtype == np.uint8 and items.shape[-1] in (1, 3, 4)):
        raise InvalidInputError(
            f"expected a list of {what}, got a single {type(items).__name__}; wrap it in a list", index=None
        )
    try:
        return list(items)
    except TypeError:
        raise InvalidInputError(f"expected a list of {what}, got {type(items).__name__}") from None


def _expand(values: list[Any], index: list[int], copy: Callable[[Any], Any]) -> list[Any]:
    """``values[j] for j in index``, a duplicate getting its own copy (a caller may modify one array in place)."""
    seen: set[int] = set()
    out = []
    for j in index:
        out.append(copy(values[j]) if j in seen else values[j])
        seen.add(j)
    return out


def _copy_sparse(embedding: SparseEmbedding) -> SparseEmbedding:
    return SparseEmbedding(embedding.indices.copy(), embedding.values.copy())


def _query_weights(weights: Any, has_text: bool, has_image: bool) -> tuple[float, float]:
    try:
        text_weight, image_weight = (float(w) for w in weights)
    except (TypeError, ValueError):
        raise ValueError(f"weights must be two numbers (text_weight, image_weight), got {weights!r}") from None
    if not all(np.isfinite(w) and w >= 0 for w in (text_weight, image_weight)):
        raise ValueError(f"weights must be finite and >= 0, got {weights!r}")
    if not (has_text and text_weight > 0) and not (has_image and image_weight > 0):
        raise ValueError(f"weights {weights!r} give every given input weight 0")
    return text_weight, image_weight


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


# ---------------------------------------------------------------------------------------------------- sharing
_SHARED: dict[tuple, Vectorizer] = {}
_SHARED_LOCK = threading.Lock()


def shared_vectorizer(model: str | os.PathLike, **options: Any) -> Vectorizer:
    """One Vectorizer per (model, options) per process: adapters call this so N collections load one model.

    Options left at ``None`` mean "the default" and do not split the cache.
    """
    from .backends.torch import resolve_device

    options = {k: v for k, v in options.items() if v is not None}
    options["device"] = str(resolve_device(options.get("device")))  # "cpu" and the default on a CPU box are one
    settings = VectorizerOptions(**options)
    path = Path(model).expanduser()
    key = (str(path.resolve()) if path.exists() else str(model), settings)
    with _SHARED_LOCK:
        vectorizer = _SHARED.get(key)
        if vectorizer is None:
            vectorizer = _SHARED[key] = Vectorizer.from_pretrained(model, **dataclasses.asdict(settings))
        return vectorizer
