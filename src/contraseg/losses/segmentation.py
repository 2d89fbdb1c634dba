"""Segmentation losses on logits (B, C, *S) and canonical targets (B, *S)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MONAI_SMOOTH = 1e-5  # MONAI DiceLoss's smooth_nr = smooth_dr


def one_hot(target: Tensor, num_classes: int) -> Tensor:
    """(B, *S) long -> (B, C, *S) float."""
    return F.one_hot(target.long(), num_classes).movedim(-1, 1).float()


def soft_dice_loss(logits: Tensor, target: Tensor, eps: float = 1e-7,
                   class_weights: Tensor | None = None, per_sample: bool = False) -> Tensor:
    """1 - mean over classes (background included) of the soft Dice of softmax probabilities.

    Sums run over the whole batch and space per class (the "batch Dice" of RFNet's code and
    nnU-Net), computed in float32 whatever the autocast dtype. `per_sample`: sums over space
    only, one Dice per sample and class, then the mean (MONAI's DiceLoss default, with its
    1e-5 added to both sides, so an absent class predicted absent scores 1): each patch's
    small lesion weighs as much as another's large one. `class_weights` (C,) turns the mean
    over classes into sum_c w_c (1 - Dice_c) / sum_c w_c (DCL-MANet weighs background 0.01,
    each tumour class 0.33).
    """
    probs = torch.softmax(logits.float(), dim=1)
    truth = one_hot(target, logits.shape[1])
    dims = tuple(range(2, logits.ndim)) if per_sample else (0, *range(2, logits.ndim))
    intersection = (probs * truth).sum(dims)
    denominator = probs.sum(dims) + truth.sum(dims)
    if per_sample:
        dice = (2.0 * intersection + MONAI_SMOOTH) / (denominator + MONAI_SMOOTH)
    else:
        dice = 2.0 * intersection / (denominator + eps)
    if class_weights is None:
        return 1.0 - dice.mean()
    weights = class_weights.to(dice)
    return ((1.0 - dice) * weights).sum(-1).mean() / weights.sum()


def weighted_cross_entropy(probs: Tensor, target: Tensor, min_prob: float = 0.005) -> Tensor:
    """RFNet's class-weighted cross-entropy on probabilities (B, C, *S).

    loss = -1/(B V) sum_b sum_v sum_c w_bc y_bcv log(clamp(p_bcv, min_prob, 1)), with per-sample
    weights w_bc = 1 - (voxels of class c in sample b) / V and V the voxels per sample. As in the
    authors' `softmax_weighted_loss`, the sum is divided by the voxel count B V (a plain mean),
    not by the summed weights as `F.cross_entropy(weight=...)` does. The weights depend on the
    target only (no gradient); clamped probabilities get no gradient.
    """
    probs = probs.float()
    truth = one_hot(target, probs.shape[1])
    dims = tuple(range(2, probs.ndim))
    weights = 1.0 - truth.sum(dims, keepdim=True) / truth.sum((1, *dims), keepdim=True)
    log_probs = torch.log(probs.clamp(min=min_prob, max=1.0))
    return -(weights * truth * log_probs).sum(1).mean()


def soft_dice_loss_from_probs(probs: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """`soft_dice_loss` on probabilities instead of logits (RFNet's `dice_loss`): needed where
    the prediction is not a softmax of logits, e.g. RFNet's upsampled region probability maps.

    1 - mean over classes (background included) of 2 sum(p y) / (sum p + sum y + eps), the sums
    running over the whole batch and space per class.
    """
    probs = probs.float()
    truth = one_hot(target, probs.shape[1])
    dims = (0, *range(2, probs.ndim))
    intersection = (probs * truth).sum(dims)
    denominator = probs.sum(dims) + truth.sum(dims)
    return 1.0 - (2.0 * intersection / (denominator + eps)).mean()


def region_dice_loss(logits: Tensor, masks: Tensor, eps: float = 1e-7) -> Tensor:
    """1 - mean over regions of the soft Dice of sigmoid probabilities (B, R, *S) against region
    masks (B, R, *S): nnU-Net's region-based Dice, sums over the whole batch and space per
    region (batch Dice), in float32."""
    probs = torch.sigmoid(logits.float())
    dims = (0, *range(2, logits.ndim))
    intersection = (probs * masks).sum(dims)
    denominator = probs.sum(dims) + masks.sum(dims)
    return 1.0 - (2.0 * intersection / (denominator + eps)).mean()


def region_bce_loss(logits: Tensor, masks: Tensor) -> Tensor:
    """Binary cross-entropy of each region's logit against its mask, averaged over voxels and
    regions (the BCE half of nnU-Net's region-based DC_and_BCE)."""
    return F.binary_cross_entropy_with_logits(logits.float(), masks)
