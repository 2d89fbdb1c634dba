"""Segmentation losses on logits (B, C, *S) and canonical targets (B, *S)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def one_hot(target: Tensor, num_classes: int) -> Tensor:
    """(B, *S) long -> (B, C, *S) float."""
    return F.one_hot(target.long(), num_classes).movedim(-1, 1).float()


def soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """1 - mean over classes (background included) of the soft Dice of softmax probabilities.

    Sums run over the whole batch and space per class (the "batch Dice" of RFNet's code and
    nnU-Net), computed in float32 whatever the autocast dtype.
    """
    probs = torch.softmax(logits.float(), dim=1)
    truth = one_hot(target, logits.shape[1])
    dims = (0, *range(2, logits.ndim))
    intersection = (probs * truth).sum(dims)
    denominator = probs.sum(dims) + truth.sum(dims)
    return 1.0 - (2.0 * intersection / (denominator + eps)).mean()
