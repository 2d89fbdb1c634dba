"""DCL-MANet: the RFB's attention weights, the wiring of its terms, ablations as overrides."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from contraseg.engine.config import load_config
from contraseg.errors import ConfigError
from contraseg.losses.contrastive import dense_info_nce, item_labels, same_label
from contraseg.losses.segmentation import one_hot, soft_dice_loss
from contraseg.models.base import Batch
from contraseg.models.dclmanet import DCLMANet
from contraseg.models.registry import build_method
from contraseg.models.rfb import (
    MPABlock,
    PairwiseModalityAttention,
    RecalibrationBlock,
    ReleasedRecalibrationBlock,
)
from tests.models.tiny_methods import build_tiny, mask
from tests.models.tiny_methods import random_inputs as inputs


def tiny(weights=None, **model) -> tuple[DCLMANet, list[int]]:
    return build_tiny("dcl-manet", weights=weights, **model)


def test_paper_preset_builds_the_released_network_and_objective():
    """Behaviour of the method built from the `paper` preset: encoders of 4 to 64 channels over
    5 levels (a 32^3 patch reaches a 2^3 bottleneck of 64), the released RFB on it, the
    cross-entropy on softmax outputs, classes weighted 0.01 / 0.33 x 3, Adam with amsgrad."""
    from contraseg.engine.optim import make_optimizer

    config = load_config("dcl-manet", "paper")
    assert config.data.patch_size == [128, 128, 128] and config.data.batch_size == 2
    torch.manual_seed(0)
    method = build_method("dcl-manet", ("t1", "t1c", "t2", "flair"), 4, config.model,
                          config.loss_weights)
    with torch.no_grad():
        encoded = method.encode(torch.randn(1, 4, 32, 32, 32))
    assert [f.shape[2] for f in encoded] == [4, 8, 16, 32, 64]
    assert encoded[-1].shape[-3:] == (2, 2, 2)
    assert isinstance(method.rfb, ReleasedRecalibrationBlock) and len(method.rfb.modalities) == 4
    logits = torch.randn(2, 4, 3, 3, 3)
    torch.testing.assert_close(method._ce_input(logits), logits.softmax(dim=1))
    assert method.class_weights.tolist() == pytest.approx([0.01, 0.33, 0.33, 0.33])
    optimizer = make_optimizer(method.param_groups(config.optim.lr), config.optim)
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.Adam) and not isinstance(optimizer, torch.optim.AdamW)
    assert (group["lr"], group["weight_decay"], group["amsgrad"]) == (1e-3, 2e-5, True)


def test_paper_plateau_is_the_released_schedule():
    """Behaviour, not the yaml: the paper preset's schedule watches the validation ET Dice
    (higher is better), multiplies the lr by 0.7 after 10 validations without a better one and
    never goes below 1e-5."""
    from contraseg.engine.optim import make_scheduler

    config = load_config("dcl-manet", "paper")
    assert config.data.val_fraction > 0 and config.val_every == 1
    assert not config.data.modality_dropout
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=config.optim.lr)
    schedule = make_scheduler(optimizer, config.optim, config.total_steps)
    for dice in [0.1, 0.2, 0.3] + [0.3] * 10:  # rising, then 10 flat validations
        schedule.end_epoch(dice)
    assert schedule.get_last_lr()[0] == pytest.approx(1e-3)
    schedule.end_epoch(0.3)  # the 11th without improvement
    assert schedule.get_last_lr()[0] == pytest.approx(7e-4)
    for _ in range(400):
        schedule.end_epoch(0.0)
    assert schedule.get_last_lr()[0] == pytest.approx(1e-5)


# --- RFB ----------------------------------------------------------------------------------------

def released_mpa(block: MPABlock, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The authors' MPABlock.forward transcribed (APAUNet.py): the radix stacked on a new
    axis, summed for the pooled descriptor, the split weights read as view(B, C, radix)."""
    w = block.embed(torch.cat([y, x], dim=1))
    v = block.value(x) * w
    v = F.silu(block.value_norm(v))
    b, c = v.shape[:2]
    both = torch.cat([x.view(b, c, 1, *x.shape[2:]), v.view(b, c, 1, *v.shape[2:])], dim=2)
    gap = both.sum(dim=2).mean((2, 3, 4))
    attn = block.split(gap).view(b, c, 2).softmax(dim=2)
    return (both * attn.view(b, c, 2, 1, 1, 1)).sum(dim=2)


def test_released_rfb_is_the_authors_modal_attention():
    """out_i = f_i + sum_j softmax(beta)_j MPA(P_0 f_i, P_j f_j), one MPA per primary shared
    by its pairs, computed pair by pair as the released Modal_Attention does."""
    torch.manual_seed(0)
    rfb = ReleasedRecalibrationBlock(channels=16, num_modalities=4, share_planes=8)
    with torch.no_grad():
        for attention in rfb.modalities:
            attention.beta.copy_(torch.randn(3))
    features = torch.randn(2, 4, 16, 4, 4, 4)
    everything = torch.ones(2, 4, dtype=torch.bool)
    with torch.no_grad():
        out = rfb(features, everything)
        for i, attention in enumerate(rfb.modalities):
            others = [j for j in range(4) if j != i]
            first = attention.project[0](features[:, i])
            beta = torch.softmax(attention.beta, 0)
            expected = features[:, i] + sum(
                beta[k] * released_mpa(attention.mpa, first, attention.project[k + 1](
                    features[:, j])) for k, j in enumerate(others))
            torch.testing.assert_close(out[:, i], expected, atol=1e-5, rtol=1e-5)
    # the released layers themselves, which the transcription above reuses
    mpa = rfb.modalities[0].mpa
    assert [type(m) for m in mpa.embed] == [torch.nn.Conv3d, torch.nn.InstanceNorm3d,
                                            torch.nn.ReLU, torch.nn.Conv3d, torch.nn.GroupNorm]
    assert mpa.embed[0].in_channels == 32 and mpa.embed[0].bias is None
    assert mpa.embed[-1].num_groups == 2 and mpa.embed[-1].num_channels == 16  # C / 8 groups
    assert [type(m) for m in mpa.split] == [torch.nn.Linear, torch.nn.LayerNorm, torch.nn.ReLU,
                                            torch.nn.Linear]
    assert mpa.split[-1].out_features == 32  # two weights per channel
    assert [type(m) for m in rfb.modalities[0].project[0]] == [
        torch.nn.Conv3d, torch.nn.InstanceNorm3d, torch.nn.ReLU]


def test_released_rfb_leaves_unavailable_modalities_out():
    torch.manual_seed(1)
    rfb = ReleasedRecalibrationBlock(channels=16, num_modalities=4)
    features = torch.randn(1, 4, 16, 4, 4, 4)
    available = mask([[1, 0, 1, 1]])
    features[:, 1] = 0
    changed = features.clone()
    changed[:, 1] = 5.0  # an unavailable modality's map (normally zeroed) must not matter
    with torch.no_grad():
        out, again = rfb(features, available), rfb(changed, available)
        torch.testing.assert_close(out[:, [0, 2, 3]], again[:, [0, 2, 3]])
        assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1]))
        alone = rfb(features, mask([[1, 0, 0, 0]]))
    torch.testing.assert_close(alone[:, 0], features[:, 0])  # no other: the primary itself


def test_rfb_keeps_the_shape_and_its_weights_sum_to_one():
    torch.manual_seed(0)
    rfb = RecalibrationBlock(channels=8, num_modalities=4, groups=4, hidden=8)
    with torch.no_grad():
        rfb.pair_logits.normal_()
    available = mask([[1, 1, 1, 1], [1, 0, 1, 1], [0, 1, 0, 0]])
    features = torch.randn(3, 4, 8, 3, 3, 3) * available[:, :, None, None, None, None]
    out = rfb(features, available)
    assert out.shape == features.shape
    beta = rfb.pair_weights(available)
    sums = beta.sum(2)
    # rows of available modalities with another available modality sum to 1, others to 0
    assert torch.allclose(sums[0], torch.ones(4))
    assert torch.allclose(sums[1], torch.tensor([1.0, 0.0, 1.0, 1.0]))
    assert torch.allclose(sums[2], torch.zeros(4))
    assert (beta[1, :, 1] == 0).all() and (beta.diagonal(dim1=1, dim2=2) == 0).all()
    # an unavailable modality's output stays 0; a lone modality keeps its feature (residual)
    assert (out[1, 1] == 0).all() and (out[2, [0, 2, 3]] == 0).all()
    assert torch.equal(out[2, 1], features[2, 1])


def test_pair_attention_split_weights_sum_to_one_per_channel():
    torch.manual_seed(0)
    pair = PairwiseModalityAttention(channels=8, groups=4, hidden=8)
    primary, other = torch.randn(2, 8, 4, 4, 4), torch.randn(2, 8, 4, 4, 4)
    assert pair(primary, other).shape == primary.shape
    a = pair.split_weights(primary, other)
    assert a.shape == (2, 8, 2) and torch.allclose(a.sum(2), torch.ones(2, 8))
    # the output is the split-weighted mixture of primary and attended
    with torch.no_grad():
        pair.split[-1].weight.zero_()
        pair.split[-1].bias.copy_(torch.cat((torch.full((8,), 50.0), torch.zeros(8))))
    assert torch.allclose(pair(primary, other), primary, atol=1e-6)  # radix 0 = primary


def test_rfb_recalibrates_with_the_other_modalities():
    torch.manual_seed(0)
    rfb = RecalibrationBlock(channels=8, num_modalities=2, groups=2, hidden=8)
    features = torch.randn(1, 2, 8, 3, 3, 3)
    both = mask([[1, 1]])
    out = rfb(features, both)
    expected = features[:, 0] + rfb.pairs[0](features[:, 0], features[:, 1])  # beta = 1
    assert torch.allclose(out[:, 0], expected, atol=1e-6)
    changed = features.clone()
    changed[:, 1] += 1.0
    assert not torch.allclose(rfb(changed, both)[:, 0], out[:, 0])


# --- the objective ------------------------------------------------------------------------------

def test_dcl_terms_are_the_dense_info_nce_on_the_channel_split():
    method, shape = tiny()
    images, target = inputs(shape)
    present = mask([[1, 1, 1, 1], [1, 1, 0, 1]])
    available = mask([[1, 0, 0, 1], [0, 1, 0, 0]])
    terms = method.losses(Batch(images, available, target, present=present))
    bottleneck = method.encode(images * present[:, :, None, None, None])[-1]
    items = bottleneck.flatten(0, 1)
    split = items.shape[1] // 2
    subjects, modalities = item_labels(2, 4)
    assert terms["dcl_specific"].item() == pytest.approx(dense_info_nce(
        items[:, :split], same_label(modalities), present.flatten(), 0.7).item(), abs=1e-6)
    assert terms["dcl_common"].item() == pytest.approx(dense_info_nce(
        items[:, split:], same_label(subjects), present.flatten(), 0.7).item(), abs=1e-6)


def weighted_ce_by_hand(scores: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> float:
    """sum_v w_y(v) (-log softmax(scores)_y(v)) / sum_v w_y(v), voxel by voxel in float64."""
    scores, target = scores.double(), target.flatten()
    flat = scores.movedim(1, -1).reshape(-1, scores.shape[1])
    total = weights = 0.0
    for row, y in zip(flat.tolist(), target.tolist(), strict=True):
        log_sum = math.log(sum(math.exp(v) for v in row))
        total += float(w[y]) * (log_sum - row[y])
        weights += float(w[y])
    return total / weights


def test_cross_entropy_on_probabilities_by_hand():
    """One voxel, logits (0, ln 3, 0, 0): p = (1/6, 1/2, 1/6, 1/6); on the probabilities the
    cross-entropy of class 1 is log(3 e^(1/6) + e^(1/2)) - 1/2, on the logits log 6 - log 3."""
    for on_probabilities, expected in ((True, math.log(3 * math.exp(1 / 6) + math.exp(0.5)) - 0.5),
                                       (False, math.log(2.0))):
        method, _ = tiny(ce_on_probabilities=on_probabilities)
        logits = torch.tensor([0.0, math.log(3.0), 0.0, 0.0]).view(1, 4, 1, 1, 1)
        scores = method._ce_input(logits)
        ce = F.cross_entropy(scores, torch.ones(1, 1, 1, 1, dtype=torch.long))
        assert ce.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("on_probabilities", [True, False])
def test_segmentation_terms_use_the_class_weights(on_probabilities):
    method, shape = tiny(ce_on_probabilities=on_probabilities)
    images, target = inputs(shape)
    available = mask([[1, 1, 1, 1], [1, 0, 1, 0]])
    terms = method.losses(Batch(images, available, target))
    logits = method(images, available)
    w = torch.tensor([0.01, 0.33, 0.33, 0.33])
    probs, truth = torch.softmax(logits, 1), one_hot(target, 4)
    dims = (0, 2, 3, 4)
    dice = 2 * (probs * truth).sum(dims) / (probs.sum(dims) + truth.sum(dims) + 1e-7)
    assert terms["dice"].item() == pytest.approx((w * (1 - dice)).sum().item() / w.sum().item(),
                                                 abs=1e-5)
    scores = probs if on_probabilities else logits  # the released code: CE on the softmax
    assert terms["ce"].item() == pytest.approx(weighted_ce_by_hand(scores, target, w), abs=1e-5)
    assert soft_dice_loss(logits, target, class_weights=torch.ones(4)).item() == pytest.approx(
        soft_dice_loss(logits, target).item(), abs=1e-6)


def test_weighted_total_is_the_sum_of_weighted_terms():
    method, shape = tiny(weights={"dcl_specific": 0.3, "dcl_common": 0.2, "ce": 0.5})
    images, target = inputs(shape)
    batch = Batch(images, torch.ones(2, 4, dtype=torch.bool), target)
    torch.manual_seed(0)
    total, terms = method.total_loss(batch)
    expected = (terms["dice"] + 0.5 * terms["ce"] + 0.3 * terms["dcl_specific"]
                + 0.2 * terms["dcl_common"])
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("ablation", ["no-dcl", "no-rfb", "neither"])
def test_ablations_are_overrides(ablation):
    weights = {"dcl_specific": 0.0, "dcl_common": 0.0} if ablation != "no-rfb" else {}
    model = {"rfb": False} if ablation != "no-dcl" else {}
    method, shape = tiny(weights=weights, **model)
    assert (method.rfb is None) == (ablation != "no-dcl")
    images, target = inputs(shape)
    total, terms = method.total_loss(Batch(images, torch.ones(2, 4, dtype=torch.bool), target))
    assert set(terms) == {"dice", "ce", "dcl_specific", "dcl_common"}
    if weights:
        assert terms["dcl_specific"] == 0 and terms["dcl_common"] == 0
        assert method.min_batch_size == 1
        assert total.item() == pytest.approx((terms["dice"] + terms["ce"]).item(), rel=1e-6)
    else:
        assert terms["dcl_specific"] > 0 and terms["dcl_common"] > 0


def test_batch_of_one_refused_while_dcl_is_on():
    method, shape = tiny()
    images, target = inputs(shape, batch=1)
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        method.total_loss(Batch(images, torch.ones(1, 4, dtype=torch.bool), target))
    DCLMANet.check_batch_size({"dcl_specific": 0, "dcl_common": 0}, 1)  # no error


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="class_weights"):
        tiny(class_weights=[0.5, 0.5])
    with pytest.raises(ConfigError, match="dcl_specific_fraction"):
        tiny(dcl_specific_fraction=1.0)
    with pytest.raises(ConfigError, match="do not divide"):  # tiny widths 2..16: 16 // 3 = 5
        tiny(rfb_variant="released", rfb_groups=3)
    with pytest.raises(ConfigError, match="pairwise only"):
        tiny(rfb_variant="released", rfb_hidden=16)


def test_two_modalities_and_one():
    config = load_config("dcl-manet", "tiny")
    two = build_method("dcl-manet", ("t1", "flair"), 4, config.model, config.loss_weights)
    shape = config.data.patch_size
    x, target = torch.randn(2, 2, *shape), torch.randint(0, 4, (2, *shape))
    total, _ = two.total_loss(Batch(x, torch.ones(2, 2, dtype=torch.bool), target))
    assert torch.isfinite(total)
    one = build_method("dcl-manet", ("t1",), 4, config.model, config.loss_weights)
    assert one.rfb is None  # no other modality to attend to
    assert one(x[:, :1], torch.ones(2, 1, dtype=torch.bool)).shape == (2, 4, *shape)
