"""The ONNX Runtime backend: runs the graphs written by :mod:`bge_siglip_vectorizer.export.onnx`.

A model directory with exported graphs holds::

    onnx/vision.onnx        pixel_values (B, N, p*p*3) float32, pixel_attention_mask (B, N) int64,
                            spatial_shapes (B, 2) int64  ->  embeddings (B, dim) float32
    onnx/text.onnx          input_ids (B, L) int64, attention_mask (B, L) int64  ->  embeddings (B, dim) float32
                            and, for a text tower with BGE-M3's heads, sparse_weights (B, L) float32 and
                            colbert_vectors (B, L - 1, d) float32 (see ``TEXT_OUTPUTS`` in ``backends``)
    onnx/*.int8.onnx        the same graphs with int8 dynamically quantised weights
    onnx/export_info.json   opset, library versions, and a digest of the projector the graphs were made from

Each graph holds a whole tower (encoder, pooling, projector, L2 normalisation), so its output is the final vector;
the text graph's head outputs are the per-token arrays the Vectorizer post-processes for either backend alike.
The backend sits behind the same :class:`~bge_siglip_vectorizer.backends.Backend` boundary as torch, so the
Vectorizer's preprocessing, tokenisation and batching are shared line for line. Loaded this way, the towers' torch
weights are never read (``load_components(..., weights=False)``).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ModelLoadError, reraise_as, require
from ..loading import PROJECTOR_NAME, Components, ModelConfig, text_head_digests

__all__ = ["OnnxBackend", "onnx_backend_for", "onnx_paths", "ONNX_BACKENDS"]

ONNX_DIR = "onnx"
VISION_FILE = "vision.onnx"
TEXT_FILE = "text.onnx"
INFO_FILE = "export_info.json"
VISION_INPUTS = ("pixel_values", "pixel_attention_mask", "spatial_shapes")
TEXT_INPUTS = ("input_ids", "attention_mask")
OUTPUT_NAME = "embeddings"
#: Text graph output names by the output they carry (``TEXT_OUTPUTS``).
TEXT_OUTPUT_NAMES = {"dense": OUTPUT_NAME, "sparse": "sparse_weights", "multivector": "colbert_vectors"}
ONNX_BACKENDS = ("onnx", "onnx-int8")
HOW_TO_EXPORT = "Run `bge-siglip export-onnx MODEL_DIR --out DIR [--int8]` and load DIR with backend='onnx'."


# ---------------------------------------------------------------------------------------------------- paths
def onnx_paths(model_dir: str | os.PathLike, quantized: bool = False) -> tuple[Path, Path]:
    """``(vision, text)`` graph paths inside a model directory (the int8 pair when ``quantized``)."""
    folder = Path(model_dir) / ONNX_DIR
    if quantized:
        return folder / VISION_FILE.replace(".onnx", ".int8.onnx"), folder / TEXT_FILE.replace(".onnx", ".int8.onnx")
    return folder / VISION_FILE, folder / TEXT_FILE


# ---------------------------------------------------------------------------------------------------- export info
def _projector_digest(model_dir: Path) -> str | None:
    config = ModelConfig.read(model_dir)
    path = Path(config.projector or PROJECTOR_NAME)
    path = path if path.is_absolute() else model_dir / path
    if not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_not_stale(model_dir: Path) -> None:
    """The graphs embed the projector; one retrained after the export would silently give other vectors."""
    info_path = model_dir / ONNX_DIR / INFO_FILE
    if not info_path.is_file():
        return
    try:
        recorded = json.loads(info_path.read_text()).get("projector_sha256")
        current = _projector_digest(model_dir)
    except (OSError, json.JSONDecodeError, ModelLoadError):
        return  # the info file is advisory; loading the graphs themselves reports real problems
    if recorded and current and recorded != current:
        raise ModelLoadError(
            f"the ONNX graphs in {model_dir / ONNX_DIR} were exported from a different projector than "
            f"{model_dir / PROJECTOR_NAME}; re-export them. {HOW_TO_EXPORT}"
        )


# ---------------------------------------------------------------------------------------------------- backend
class OnnxBackend:
    """Runs the exported towers with ONNX Runtime: numpy batches in, L2-normalised float32 vectors out.

    ``device``: ``"cpu"`` (default), ``"cuda"`` / ``"cuda:N"`` (CUDAExecutionProvider, falling back to CPU with a
    warning when onnxruntime has no CUDA support) or ``None`` (CUDA if available). ``num_threads`` caps the threads
    of each session (default: onnxruntime's, one per physical core). Sessions are thread-safe: no lock is needed.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        quantized: bool = False,
        device: str | None = "cpu",
        num_threads: int | None = None,
    ) -> None:
        model_dir = Path(model_dir)
        vision_path, text_path = onnx_paths(model_dir, quantized)
        _check_exists(model_dir, (vision_path, text_path), quantized)
        _check_not_stale(model_dir)
        ort = require("onnxruntime", "the ONNX backend (or onnxruntime-gpu for CUDA)", "onnx")
        providers, self.device = _providers(ort, device)
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        self._vision = _session(ort, vision_path, options, providers)
        self._text = _session(ort, text_path, options, providers)
        _check_io(self._vision, VISION_INPUTS, vision_path)
        _check_io(self._text, TEXT_INPUTS, text_path)
        names = {node.name for node in self._text.get_outputs()}
        self._text_outputs = tuple(output for output, name in TEXT_OUTPUT_NAMES.items() if name in names)
        self.quantized = quantized
        self.name = "onnx-int8" if quantized else "onnx"
        self.dtype = "int8" if quantized else "float32"
        self.model_dir = model_dir

    @property
    def dim(self) -> int | None:
        """Vector size declared by the graphs (``None`` if the graph leaves it symbolic)."""
        size = next(node for node in self._text.get_outputs() if node.name == OUTPUT_NAME).shape[-1]
        return size if isinstance(size, int) else None

    @property
    def text_outputs(self) -> tuple[str, ...]:
        """The outputs the text graph has: ``"dense"``, plus the heads it was exported with."""
        return self._text_outputs

    def run_images(self, pixel_values: np.ndarray, mask: np.ndarray, spatial_shapes: np.ndarray) -> np.ndarray:
        return _run(self._vision, (pixel_values, mask, spatial_shapes), [OUTPUT_NAME])[0]

    def run_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.run_text_outputs(input_ids, attention_mask, ("dense",))["dense"]

    def run_text_outputs(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        wanted = [output for output in self._text_outputs if output in outputs]
        arrays = _run(self._text, (input_ids, attention_mask), [TEXT_OUTPUT_NAMES[output] for output in wanted])
        return dict(zip(wanted, arrays))

    def __repr__(self) -> str:
        return f"OnnxBackend({str(self.model_dir)!r}, quantized={self.quantized}, device={self.device!r})"


def onnx_backend_for(
    components: Components,
    backend: str = "onnx",
    device: str | None = None,
    dtype: str | None = None,
    num_threads: int | None = None,
) -> OnnxBackend:
    """The backend ``Vectorizer(..., backend="onnx" | "onnx-int8")`` needs, for components loaded from a directory.

    ``dtype="int8"`` with ``backend="onnx"`` also selects the quantised graphs; float16/bfloat16 are torch-only.
    """
    if backend not in ONNX_BACKENDS:
        raise ValueError(f"backend must be one of {ONNX_BACKENDS}, got {backend!r}")
    if dtype not in (None, "float32", "fp32", "int8"):
        raise ValueError(f"the ONNX backend runs float32 or int8 graphs, not dtype={dtype!r}")
    if components.source is None:
        raise ModelLoadError(f"the ONNX backend needs a model directory with exported graphs. {HOW_TO_EXPORT}")
    quantized = backend == "onnx-int8" or dtype == "int8"
    runner = OnnxBackend(Path(components.source), quantized=quantized, device=device, num_threads=num_threads)
    if runner.dim is not None and components.config.dim is not None and runner.dim != int(components.config.dim):
        raise ModelLoadError(
            f"the ONNX graphs give {runner.dim}-d vectors but the model is {components.config.dim}-d; "
            f"re-export them. {HOW_TO_EXPORT}"
        )
    _check_heads_not_stale(runner.model_dir, components)
    return runner


def _check_heads_not_stale(model_dir: Path, components: Components) -> None:
    """The text graph embeds BGE-M3's heads; heads replaced after the export would give other sparse/multi-vectors."""
    try:
        recorded = json.loads((model_dir / ONNX_DIR / INFO_FILE).read_text()).get("text_heads_sha256") or {}
    except (OSError, json.JSONDecodeError):
        return  # advisory, as in _check_not_stale
    current = text_head_digests(components.text_encoder)
    changed = sorted(output for output, digest in recorded.items() if output in current and current[output] != digest)
    if changed:
        raise ModelLoadError(
            f"the ONNX text graph in {model_dir / ONNX_DIR} was exported with other {' and '.join(changed)} head "
            f"weights than the model's; re-export it. {HOW_TO_EXPORT}"
        )


def _check_exists(model_dir: Path, paths: Sequence[Path], quantized: bool) -> None:
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        flag = " --int8" if quantized else ""
        raise ModelLoadError(
            f"{model_dir} has no exported ONNX graphs ({', '.join(missing)} missing from {model_dir / ONNX_DIR}). "
            f"Run `bge-siglip export-onnx {model_dir} --out {model_dir}{flag}` first."
        )


def _providers(ort: Any, device: str | None) -> tuple[list[Any], str]:
    """Execution providers for ``device`` and the device actually used."""
    wanted = (device or ("cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu")).lower()
    if wanted == "cpu":
        return ["CPUExecutionProvider"], "cpu"
    if not wanted.startswith("cuda"):
        raise ValueError(f"the ONNX backend runs on 'cpu' or 'cuda[:N]', not {device!r}")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        warnings.warn(
            "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu); running the ONNX graphs on CPU",
            RuntimeWarning,
            stacklevel=3,
        )
        return ["CPUExecutionProvider"], "cpu"
    index = int(wanted.partition(":")[2] or 0)
    return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], f"cuda:{index}"


def _session(ort: Any, path: Path, options: Any, providers: list[Any]) -> Any:
    # A corrupt file, a wrong opset, a missing .data file: one clear error.
    with reraise_as(ModelLoadError, f"cannot load ONNX graph {path} ({HOW_TO_EXPORT})"):
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def _check_io(session: Any, expected: Sequence[str], path: Path) -> None:
    names = tuple(node.name for node in session.get_inputs())
    if names != tuple(expected):
        raise ModelLoadError(f"{path} has inputs {names}, expected {tuple(expected)}. {HOW_TO_EXPORT}")


_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def _run(session: Any, arrays: Sequence[np.ndarray], outputs: list[str]) -> list[np.ndarray]:
    # The Vectorizer's masks are int32; cast every input to the type the graph declares.
    feed = {
        node.name: np.ascontiguousarray(array, dtype=_NUMPY_TYPES.get(node.type, None))
        for node, array in zip(session.get_inputs(), arrays)
    }
    return [np.asarray(result, dtype=np.float32) for result in session.run(outputs, feed)]
