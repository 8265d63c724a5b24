"""The SigLIP sigmoid loss, and the research script's loss kept only to show why it fails."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pair_logits(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor) -> torch.Tensor:
    """``logits[i, j]`` for image ``i`` and text ``j`` (both L2-normalised)."""
    return image @ text.T * logit_scale.exp() + logit_bias


def sigmoid_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """SigLIP: every pair is a binary problem, label +1 for matching pairs and -1 for all others.

    ``positives`` is a boolean ``(B, B)`` matrix; it is the identity unless captions repeat within a batch (then
    pairs with the same caption/label are positives too, instead of being pushed apart).
    """
    labels = positives.to(logits.dtype) * 2 - 1
    return -F.logsigmoid(labels * logits).sum() / logits.shape[0]


def research_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """The original research script's ``-logsigmoid(eye * logits)``: off-diagonal terms are ``logsigmoid(0)``, a
    constant, so negatives contribute no gradient and nothing pushes non-matching pairs apart."""
    eye = torch.eye(logits.shape[0], device=logits.device, dtype=logits.dtype)
    return -F.logsigmoid(eye * logits).sum() / logits.shape[0]


LOSSES = {"sigmoid": sigmoid_loss, "research": research_loss}
