"""Inference backends: numpy batches in, L2-normalised float32 numpy vectors out.

The Vectorizer does batching, preprocessing and tokenisation; a backend only runs the two towers. Keeping the
boundary at numpy lets the ONNX Runtime backend (:mod:`.onnx`) share every other line with the torch one
(:mod:`.torch`). Each backend module imports its runtime itself, so ``onnxruntime`` is imported only by those who
ask for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:
    from ..loading import Components

__all__ = ["Backend", "BACKENDS", "TEXT_OUTPUTS", "make_backend"]

#: Names accepted by ``Vectorizer.from_pretrained(..., backend=...)``.
BACKENDS = ("torch", "onnx", "onnx-int8")

#: What one text forward can give (:meth:`Backend.run_text_outputs`), for a batch of ``B`` texts padded to ``L``:
#: ``"dense"`` (B, dim) unit vectors; ``"sparse"`` (B, L) float32 per-token weights ``relu(sparse_linear(h))``,
#: padding included; ``"multivector"`` (B, L - 1, d) unit vectors of the positions after CLS, zero where padded.
TEXT_OUTPUTS = ("dense", "sparse", "multivector")


class Backend(Protocol):
    name: str
    device: str
    dtype: str

    @property
    def text_outputs(self) -> tuple[str, ...]:
        """Which of :data:`TEXT_OUTPUTS` this backend computes (``"dense"`` always)."""
        ...

    def run_images(self, pixel_values: np.ndarray, mask: np.ndarray, spatial_shapes: np.ndarray) -> np.ndarray: ...

    def run_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...

    def run_text_outputs(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """``outputs`` (a subset of :attr:`text_outputs`) from one forward of the text tower."""
        ...


def needs_torch_weights(backend: str | Backend) -> bool:
    """Whether ``backend`` runs the towers' torch weights (the ONNX backends run exported graphs instead)."""
    return not isinstance(backend, str) or backend == "torch"


def make_backend(backend: str | Backend, components: "Components", device: str | None, dtype: str | None) -> Backend:
    """The backend a name stands for, built for ``components`` (an already built backend is returned as is)."""
    if not isinstance(backend, str):
        return backend
    if backend == "torch":
        from .torch import TorchBackend

        return TorchBackend(components, device=device, dtype=dtype)
    if backend in ("onnx", "onnx-int8"):
        from .onnx import onnx_backend_for

        return onnx_backend_for(components, backend, device=device, dtype=dtype)
    raise ValueError(f"unknown backend {backend!r}; available: {', '.join(map(repr, BACKENDS))}")
