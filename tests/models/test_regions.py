"""Region-based outputs: the hierarchy's checks, its masks, the class scores' argmax (nnU-Net's
threshold rule), the losses, and a region U-Net through training loss and inference."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from contraseg.engine.config import InferConfig
from contraseg.engine.sliding_window import sliding_window_probabilities
from contraseg.errors import ConfigError
from contraseg.losses.segmentation import region_bce_loss, region_dice_loss
from contraseg.models.base import Batch
from contraseg.models.regions import BRAIN_REGION_CLASSES, RegionHierarchy
from contraseg.models.registry import build_method

BRAIN = RegionHierarchy(BRAIN_REGION_CLASSES, 4)


def threshold_rule(wt: float, tc: float, et: float) -> int:
    """nnU-Net's BraTS reading, written out: 0 background, 2 edema, 1 necrosis, 3 enhancing."""
    if wt <= 0.5:
        return 0
    if tc <= 0.5:
        return 2
    return 3 if et > 0.5 else 1


def test_brain_depths_follow_the_nesting():
    assert BRAIN.depth == (0, 2, 1, 3)  # necrosis in WT and TC, edema in WT only, ET in all


@pytest.mark.parametrize("regions, problem", [
    ([], "at least one region"),
    ([[1, 2]], "every foreground class"),
    ([[1, 2, 3], [1, 3], [2]], "smaller, non-empty part"),
    ([[1, 2, 3], [1, 2, 3]], "smaller, non-empty part"),
    ([[1, 2, 3], [3]], "cannot tell them apart"),  # necrosis and edema both only in WT
])
def test_a_hierarchy_that_cannot_be_read_back_is_refused(regions, problem):
    with pytest.raises(ConfigError, match=problem):
        RegionHierarchy(regions, 4)


def test_target_masks_are_the_regions_of_each_class():
    target = torch.tensor([[0, 1, 2, 3]])
    masks = BRAIN.target_masks(target)
    assert masks.shape == (1, 3, 4)
    expected = [[0, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1]]  # WT, TC, ET
    assert masks[0].tolist() == expected


def test_class_scores_argmax_is_the_threshold_rule_even_when_regions_disagree():
    grid = [0.05, 0.3, 0.49, 0.51, 0.7, 0.95]  # inconsistent triples included (ET > TC > WT)
    triples = list(itertools.product(grid, repeat=3))
    probs = torch.tensor(triples).T[None]  # (1, 3, N)
    predicted = BRAIN.class_scores(probs).argmax(1)[0].tolist()
    assert predicted == [threshold_rule(*t) for t in triples]


def test_single_region_is_a_threshold_at_one_half():
    one = RegionHierarchy([[1]], 2)
    probs = torch.tensor([[[0.2, 0.6]]])
    scores = one.class_scores(probs)
    torch.testing.assert_close(scores, torch.tensor([[[0.8, 0.4], [0.2, 0.6]]]))
    assert scores.argmax(1).tolist() == [[0, 1]]


def test_region_losses_match_hand_values():
    logits = torch.tensor([0.0, 2.0, -2.0]).view(1, 1, 3)
    masks = torch.tensor([1.0, 1.0, 0.0]).view(1, 1, 3)
    p = torch.sigmoid(logits).flatten()
    dice = 2 * (p[0] + p[1]) / (p.sum() + 2)
    torch.testing.assert_close(region_dice_loss(logits, masks), 1 - dice)
    bce = -(torch.log(p[0]) + torch.log(p[1]) + torch.log(1 - p[2])) / 3
    torch.testing.assert_close(region_bce_loss(logits, masks), bce)


def _region_unet():
    torch.manual_seed(0)
    return build_method("unet", ("t1", "t1c", "t2", "flair"), 4,
                        {"base_channels": 4, "depth": 3, "regions": [[1, 2, 3], [1, 3], [3]]})


def test_region_unet_has_one_output_per_region_and_trains_on_region_masks():
    method = _region_unet()
    images = torch.randn(2, 4, 16, 16, 16)
    available = torch.ones(2, 4, dtype=torch.bool)
    assert method(images, available).shape == (2, 3, 16, 16, 16)
    target = torch.randint(0, 4, (2, 16, 16, 16))
    terms = method.losses(Batch(images, available, target))
    logits = method(images, available)
    masks = BRAIN.target_masks(target)
    torch.testing.assert_close(terms["dice"], region_dice_loss(logits, masks))
    torch.testing.assert_close(terms["ce"], region_bce_loss(logits, masks))


@pytest.mark.parametrize("tta", [False, True])
def test_region_inference_gives_class_scores_of_the_averaged_sigmoids(tta):
    """The probabilities of inference are the class scores of the (flip-averaged) region
    sigmoids, so their argmax is the threshold rule applied to those sigmoids."""
    method = _region_unet().eval()
    image = torch.randn(1, 4, 16, 16, 16)
    rows = torch.ones(1, 4, dtype=torch.bool)
    cfg = replace(InferConfig(), tta_flips=tta)
    scores = sliding_window_probabilities(method, image, rows, cfg, (16, 16, 16))
    assert scores.shape == (1, 4, 16, 16, 16)
    flips = [()] + ([(2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)] if tta else [])
    with torch.no_grad():
        sig = sum(torch.sigmoid(method(image.flip(d) if d else image, rows)).flip(d) if d
                  else torch.sigmoid(method(image, rows)) for d in flips) / len(flips)
    torch.testing.assert_close(scores, BRAIN.class_scores(sig), atol=1e-5, rtol=1e-5)
    rule = np.vectorize(threshold_rule)(*sig[0].numpy())
    np.testing.assert_array_equal(scores[0].argmax(0).numpy(), rule)
