"""The PyTorch backend: both towers on one device, in one dtype."""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np
import torch

from ..loading import Components
from . import TEXT_OUTPUTS

__all__ = ["TorchBackend", "resolve_device", "resolve_dtype"]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        # Half precision is the norm on GPUs; on CPUs float32 is both exact and usually fastest.
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}") from None


class TorchBackend:
    """Runs the towers with PyTorch on one device. Calls are serialised: one forward at a time per model."""

    name = "torch"

    def __init__(self, components: Components, device: str | torch.device | None = None, dtype=None) -> None:
        if not components.has_weights:
            raise ValueError("these components were loaded without torch weights (for an ONNX backend)")
        self._device = resolve_device(device)
        self._dtype = resolve_dtype(dtype, self._device)
        self.image_encoder = components.image_encoder.to(device=self._device, dtype=self._dtype).eval()
        self.text_encoder = components.text_encoder.to(device=self._device, dtype=self._dtype).eval()
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def dtype(self) -> str:
        return str(self._dtype).removeprefix("torch.")

    def run_images(self, pixel_values: np.ndarray, mask: np.ndarray, spatial_shapes: np.ndarray) -> np.ndarray:
        with self._lock, torch.inference_mode():
            vectors = self.image_encoder(
                torch.from_numpy(pixel_values).to(self._device, self._dtype),
                torch.from_numpy(mask).to(self._device),
                torch.from_numpy(spatial_shapes).to(self._device),
            )
            return vectors.float().cpu().numpy()

    @property
    def text_outputs(self) -> tuple[str, ...]:
        return ("dense", *self.text_encoder.heads())

    def run_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.run_text_outputs(input_ids, attention_mask, ("dense",))["dense"]

    def run_text_outputs(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        with self._lock, torch.inference_mode():
            results = self.text_encoder.encode_all(
                torch.from_numpy(input_ids).to(self._device),
                torch.from_numpy(attention_mask).to(self._device),
                sparse="sparse" in outputs,
                multivector="multivector" in outputs,
            )
            return {name: result.float().cpu().numpy() for name, result in zip(TEXT_OUTPUTS, results) if name in outputs}
