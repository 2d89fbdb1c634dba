"""Segmentation losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from contraseg.losses.segmentation import (
    soft_dice_loss,
    soft_dice_loss_from_probs,
    weighted_cross_entropy,
)


def two_class(p0: list[list[float]]) -> torch.Tensor:
    """(B, 2, V) probabilities from class-0 probabilities."""
    first = torch.tensor(p0, dtype=torch.float64)
    return torch.stack((first, 1.0 - first), dim=1)


def test_weighted_cross_entropy_matches_a_hand_value():
    probs = two_class([[0.9, 0.5, 0.001, 0.2], [0.3, 0.002, 0.6, 0.5]])
    target = torch.tensor([[0, 0, 0, 1], [1, 1, 0, 1]])
    # sample 0: 3 voxels of class 0, 1 of class 1 -> w = (1/4, 3/4); sample 1 -> w = (3/4, 1/4).
    # Sample 0, voxel 2: p = 0.001 is clamped to 0.005. Mean over all 8 voxels.
    terms = [
        0.25 * -math.log(0.9), 0.25 * -math.log(0.5), 0.25 * -math.log(0.005),
        0.75 * -math.log(0.8),
        0.25 * -math.log(0.7), 0.25 * -math.log(0.998), 0.75 * -math.log(0.6),
        0.25 * -math.log(0.5),
    ]
    expected = sum(terms) / 8
    assert weighted_cross_entropy(probs, target).item() == pytest.approx(expected, rel=1e-6)
    # the clamp is active: any probability under 0.005 gives the same loss
    lower = two_class([[0.9, 0.5, 0.0001, 0.2], [0.3, 0.002, 0.6, 0.5]])
    assert weighted_cross_entropy(lower, target).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_cross_entropy_ignores_a_class_that_fills_its_sample():
    probs = two_class([[0.3, 0.6]])
    target = torch.tensor([[0, 0]])  # w_0 = 1 - 2/2 = 0
    assert weighted_cross_entropy(probs, target).item() == 0.0


def test_weighted_cross_entropy_works_on_3d_volumes():
    probs = torch.full((1, 4, 2, 2, 2), 0.25)
    target = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    target[0, 0, 0, 0] = 3  # class 0: 7 voxels (w = 1/8), class 3: 1 voxel (w = 7/8)
    expected = (7 * 0.125 + 0.875) * -math.log(0.25) / 8
    assert weighted_cross_entropy(probs, target).item() == pytest.approx(expected, rel=1e-6)


def test_soft_dice_from_probs_matches_a_hand_value():
    # batch Dice: sums over both samples per class, background included
    probs = two_class([[0.8, 0.4], [1.0, 0.5]])
    target = torch.tensor([[0, 1], [0, 0]])
    # class 0: intersection 0.8 + 1.0 + 0.5 = 2.3; sum p = 2.7; sum y = 3
    # class 1: intersection 0.6; sum p = 0.2 + 0.6 + 0 + 0.5 = 1.3; sum y = 1
    expected = 1 - (2 * 2.3 / 5.7 + 2 * 0.6 / 2.3) / 2
    assert soft_dice_loss_from_probs(probs, target).item() == pytest.approx(expected, rel=1e-6)


def test_soft_dice_from_probs_agrees_with_soft_dice_on_logits():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 3, 3, 3, generator=gen)
    target = torch.randint(0, 4, (2, 3, 3, 3), generator=gen)
    from_probs = soft_dice_loss_from_probs(torch.softmax(logits, 1), target)
    assert from_probs.item() == pytest.approx(soft_dice_loss(logits, target).item(), rel=1e-6)


def test_per_sample_soft_dice_is_monais_dice_loss_and_differs_from_batch_dice():
    """per_sample=True is MONAI's DiceLoss(softmax, one-hot targets, background included): one
    Dice per patch and class. A patch with a small lesion beside one with a large lesion
    weighs as much as it under per-sample Dice, not under batch Dice."""
    from monai.losses import DiceLoss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, 8, generator=generator)
    target = torch.zeros(2, 8, 8, 8, dtype=torch.long)
    target[0, 1:7, 1:7, 1:7] = 3  # large
    target[1, 3:5, 3:5, 3:5] = 3  # small
    target[1, 0, 0, :4] = 1
    monai = DiceLoss(softmax=True, to_onehot_y=True)(logits, target[:, None])
    assert soft_dice_loss(logits, target, per_sample=True).item() == pytest.approx(
        monai.item(), rel=1e-6)
    assert abs(soft_dice_loss(logits, target).item() - monai.item()) > 1e-3
