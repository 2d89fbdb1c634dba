"""CLFC: the SimSiam loss, normal-position masking, the attention formula (Eq. 3), the choice of
the pseudo-normal, the 2.5D objective and the paper's ablations as overrides."""

from __future__ import annotations

import math

import pytest
import torch

from contraseg.engine.config import load_config
from contraseg.errors import ConfigError
from contraseg.losses.contrastive import simsiam_loss
from contraseg.models.base import Batch
from contraseg.models.clfc import FeatureComparison, normal_positions
from contraseg.models.registry import build_method
from tests.models.tiny_methods import MODALITIES, build_tiny, mask, random_inputs


def test_simsiam_loss_identical_is_minus_one_and_orthogonal_is_zero():
    a = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])
    assert simsiam_loss(a, a, a, a).item() == pytest.approx(-1.0, abs=1e-6)
    assert simsiam_loss(a, a, 5 * a, 0.5 * a).item() == pytest.approx(-1.0, abs=1e-6)
    e1, e2 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    # arguments p1, p2, v1, v2: p1 is compared with v2, p2 with v1
    assert simsiam_loss(e1, e2, e1, e2).item() == pytest.approx(0.0, abs=1e-7)
    # mixed: cos(p1, v2) = 1, cos(p2, v1) = 0 -> -1/2
    assert simsiam_loss(e1, e2, e1, 2 * e1).item() == pytest.approx(-0.5, abs=1e-6)


def test_simsiam_stops_the_gradient_of_the_targets():
    p = torch.randn(4, 3, requires_grad=True)
    v = torch.randn(4, 3, requires_grad=True)
    simsiam_loss(p, p, v, v).backward()
    assert p.grad is not None and p.grad.abs().sum() > 0
    assert v.grad is None


def test_attention_formula_on_a_tiny_tensor():
    module = FeatureComparison(2)  # zeta, g: 2 -> 1 channel; psi: 1 -> 1
    with torch.no_grad():
        module.zeta.weight.copy_(torch.tensor([[[[1.0]], [[2.0]]]]))
        module.zeta.bias.fill_(0.5)
        module.g.weight.copy_(torch.tensor([[[[-1.0]], [[1.0]]]]))
        module.g.bias.zero_()
        module.psi.weight.fill_(3.0)
        module.psi.bias.fill_(-1.0)
    f_t = torch.tensor([1.0, 0.0, -1.0, 2.0]).view(1, 2, 1, 2)  # two positions
    f_r = torch.tensor([2.0, 1.0, 0.0, 1.0]).view(1, 2, 1, 2)
    expected = []
    for x in range(2):
        t0, t1 = f_t[0, 0, 0, x].item(), f_t[0, 1, 0, x].item()
        r0, r1 = f_r[0, 0, 0, x].item(), f_r[0, 1, 0, x].item()
        zeta, g = t0 + 2 * t1 + 0.5, -r0 + r1
        expected.append(1 / (1 + math.exp(-(3 * max(0.0, -zeta * g) - 1))))
    attention = module.attention(f_t, f_r)
    assert attention.flatten().tolist() == pytest.approx(expected, rel=1e-6)
    # position 0: zeta = 1.5, g = -1 -> ReLU(1.5) = 1.5; position 1: zeta = -1.5, g = -2 -> 0
    assert expected[1] == pytest.approx(1 / (1 + math.e))


def test_gate_init_opens_the_gates_where_the_features_agree():
    """gate_init 0.95: psi's bias is logit(0.95), so wherever ReLU(-zeta g) is 0 (features that
    agree) A is exactly 0.95; the default leaves PyTorch's init (A near 0.5)."""
    torch.manual_seed(0)
    module = FeatureComparison(8, gate_init=0.95)
    assert module.psi.bias.item() == pytest.approx(math.log(0.95 / 0.05))
    with torch.no_grad():
        module.zeta.weight.zero_()
        module.zeta.bias.fill_(1.0)  # zeta = 1, g = its bias (> 0 below): -zeta g < 0
        module.g.weight.zero_()
        module.g.bias.fill_(0.5)
        attention = module.attention(torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3))
    torch.testing.assert_close(attention, torch.full_like(attention, 0.95))
    assert abs(FeatureComparison(8).psi.bias.item()) < 0.6  # U(+-1/sqrt(4)) by default
    with pytest.raises(ConfigError, match="gate_init"):
        build_tiny("clfc", MODALITIES, None, gate_init=1.0, normal_network=False)


def test_stop_gradient_before_zeta_in_the_simsiam_branch():
    module = FeatureComparison(4)
    f_t = torch.randn(2, 4, 3, 3, requires_grad=True)
    f_r = torch.randn(2, 4, 3, 3, requires_grad=True)
    z_t, g_r = module.embeddings(f_t, f_r)
    (z_t.sum() + g_r.sum()).backward()
    assert f_t.grad is None and f_r.grad is not None and module.zeta.weight.grad is not None


def test_normal_positions_exclude_every_cell_that_holds_tumour():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0, 0] = 2  # one tumour voxel in the top-left 2x2 cell
    assert normal_positions(target, (4, 4)).sum() == 15
    coarse = normal_positions(target, (2, 2))
    assert coarse.tolist() == [[[False, True], [True, True]]]


def tiny(**model):
    return build_tiny("clfc", **model)


def batch_with_tumour(method, patch, seed=0, available=None):
    images, _ = random_inputs(patch, seed=seed)
    target = torch.zeros(2, *patch, dtype=torch.long)
    target[:, 4:10, 4:10, :] = 2
    target[:, 6:8, 6:8, :] = 3
    return Batch(images, available if available is not None else mask([[1] * 4] * 2), target)


def test_simsiam_term_ignores_features_at_tumour_positions():
    method, patch = tiny(simsiam_positions=None)
    b = batch_with_tumour(method, patch)
    modal, pseudo = method._split(b.images, b.available)
    _, pairs = method._logits(modal, pseudo, b.available, slice(1, 3), b.target)
    assert all((~where).any() and where.any() for _, _, where in pairs)
    torch.manual_seed(0)
    before = method._simsiam(pairs)
    changed = []
    for z_t, g_r, where in pairs:
        tumour = ~where[:, None].expand_as(z_t)
        z2 = torch.where(tumour, torch.randn_like(z_t) * 100, z_t)
        g2 = torch.where(tumour, torch.randn_like(g_r) * 100, g_r)
        changed.append((z2, g2, where))
    torch.manual_seed(0)
    assert method._simsiam(changed).item() == pytest.approx(before.item(), rel=1e-6, abs=1e-7)
    # and a change at a normal position does change it
    z_t, g_r, where = pairs[-1]
    first = where.nonzero()[0]
    z_t = z_t.clone()
    z_t[first[0], :, first[1], first[2]] += 50
    torch.manual_seed(0)
    assert method._simsiam([*pairs[:-1], (z_t, g_r, where)]).item() != pytest.approx(
        before.item(), rel=1e-4)


def test_appended_case_inputs_equal_the_ones_computed_on_the_fly():
    method, patch = tiny()
    method.eval()
    images, _ = random_inputs(patch)
    available = mask([[1, 1, 1, 1], [0, 1, 1, 0]])
    pseudo = method.case_inputs(images, available)
    assert pseudo.shape == (2, 2, *patch)
    assert pseudo[1, 0].abs().sum() == 0 and pseudo[1, 1].abs().sum() > 0  # no T1: T1c only
    with torch.no_grad():
        a = method(images, available)
        b = method(torch.cat([images, pseudo], dim=1), available)
    assert torch.allclose(a, b, atol=1e-6)


def test_the_pseudo_normal_comes_from_t1_then_t1c_and_none_switches_the_comparison_off():
    method, patch = tiny()
    method.eval()
    images, _ = random_inputs(patch)
    pseudo = torch.randn(2, 2, *patch)

    def out(available, pseudo_values):
        with torch.no_grad():
            return method(torch.cat([images, pseudo_values], dim=1), mask(available))

    t1_changed = pseudo.clone()
    t1_changed[:, 0] += 5
    t1c_changed = pseudo.clone()
    t1c_changed[:, 1] += 5
    with_t1 = [[1, 1, 0, 1]] * 2
    assert not torch.allclose(out(with_t1, pseudo), out(with_t1, t1_changed))
    assert torch.allclose(out(with_t1, pseudo), out(with_t1, t1c_changed))
    only_t1c = [[0, 1, 1, 1]] * 2
    assert torch.allclose(out(only_t1c, pseudo), out(only_t1c, t1_changed))
    assert not torch.allclose(out(only_t1c, pseudo), out(only_t1c, t1c_changed))
    neither = [[0, 0, 1, 1]] * 2
    assert torch.allclose(out(neither, pseudo), out(neither, pseudo + torch.randn_like(pseudo)))


def test_the_objective_uses_the_centre_slices_and_leaves_dice_background_out():
    from contraseg.losses.segmentation import soft_dice_loss

    method, patch = tiny()  # K = 1, depth 4: slices 1 and 2 are segmented
    b = batch_with_tumour(method, patch)
    torch.manual_seed(0)
    terms = method.losses(b)
    edited = b.target.clone()
    edited[..., 0] = 1
    edited[..., 3] = 3
    torch.manual_seed(0)
    again = method.losses(Batch(b.images, b.available, edited))
    for name in ("dice", "ce"):
        assert again[name].item() == pytest.approx(terms[name].item(), rel=1e-6)
    modal, pseudo = method._split(b.images, b.available)
    logits, _ = method._logits(modal, pseudo, b.available, slice(1, 3))
    target = b.target[..., 1:3].permute(0, 3, 1, 2).flatten(0, 1)
    weights = torch.tensor([0.0, 1.0, 1.0, 1.0])
    assert terms["dice"].item() == pytest.approx(
        soft_dice_loss(logits, target, class_weights=weights).item(), rel=1e-5)
    assert set(terms) == {"dice", "ce", "simsiam"}


def test_the_papers_ablations_are_overrides():
    baseline1, patch = tiny(normal_network=False, generator=None)
    assert baseline1.generator is None and not hasattr(baseline1, "normal_net")
    b = batch_with_tumour(baseline1, patch)
    assert set(baseline1.losses(b)) == {"dice", "ce"}
    assert baseline1.case_inputs(b.images, b.available) is None
    baseline2, _ = build_tiny("clfc", weights={"simsiam": 0.0})
    assert set(baseline2.losses(b)) == {"dice", "ce"}
    full, _ = tiny()
    assert set(full.losses(b)) == {"dice", "ce", "simsiam"}


def test_the_generator_is_frozen_and_needed():
    method, _ = tiny()
    method.train()
    assert not method.generator.training
    assert all(not p.requires_grad for p in method.generator.parameters())
    groups = method.param_groups(1e-2)
    ids = {id(p) for g in groups for p in g["params"]}
    assert not ids & {id(p) for p in method.generator.parameters()}
    for preset in ("paper", "fast"):
        config = load_config("clfc", preset)
        with pytest.raises(ConfigError, match="normal_run"):
            build_method("clfc", MODALITIES, 4, config.model, config.loss_weights)
    with pytest.raises(ConfigError, match="pseudo-normal T1"):
        build_tiny("clfc", modalities=("t2", "flair"))


def test_training_patches_the_network_cannot_take_are_refused():
    method, patch = tiny()  # divisor 4, K = 1
    method.check_patch(patch)
    with pytest.raises(ConfigError, match="multiples of 4 in-plane"):
        method.check_patch([18, 16, 4])
    with pytest.raises(ConfigError, match=">= 3"):
        method.check_patch([16, 16, 2])
    method.check_patch([16, 16, 3])


def test_an_untrained_generator_is_recognised_for_the_training_warning():
    """clfc `tiny` carries a random generator for tests: training warns; a normal_run, or
    Baseline-1 (no normal network), does not."""
    from dataclasses import replace

    from contraseg.engine.normal_run import untrained_generator

    tiny = load_config("clfc", "tiny")
    assert untrained_generator(tiny)
    assert not untrained_generator(replace(tiny, normal_run="runs/introvae"))
    assert not untrained_generator(replace(tiny, model={**tiny.model, "normal_network": False}))
    assert not untrained_generator(load_config("unet", "tiny"))
