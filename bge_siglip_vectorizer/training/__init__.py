"""Making the model: alignment training, evaluation, synthetic data. Separate from the inference code."""

from .data import Example, read_examples, split_examples
from .evaluate import RecallReport, evaluate
from .shapes import make_shapes
from .trainer import TrainConfig, TrainResult, train

__all__ = [
    "Example",
    "RecallReport",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "make_shapes",
    "read_examples",
    "split_examples",
    "train",
]
