"""Exporting models to other runtimes (ONNX) and quantising them; apart from inference, which never imports it."""

from .onnx import DEFAULT_OPSET, export_onnx, quantize_int8

__all__ = ["export_onnx", "quantize_int8", "DEFAULT_OPSET"]
