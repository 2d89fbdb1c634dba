"""DC-Seg: the wiring of its terms, ablations as overrides, batch and modality limits."""

from __future__ import annotations

import math

import pytest
import torch

from contraseg.engine.config import load_config
from contraseg.errors import ConfigError
from contraseg.losses.contrastive import item_labels, pairwise_ssim, same_label
from contraseg.models.base import Batch
from contraseg.models.dcseg import DCSeg
from tests.models.tiny_methods import MODALITIES, build_tiny, mask
from tests.models.tiny_methods import random_inputs as inputs


def tiny(modalities=MODALITIES, weights=None, **model) -> tuple[DCSeg, list[int]]:
    return build_tiny("dc-seg", modalities, weights, **model)


def test_paper_preset_builds_the_papers_model_and_objective():
    """Behaviour of the method built from the `paper` preset, not the yaml's values: it takes
    112^3 patches, codes each modality in 8 numbers, weighs Eq. 9's terms (alpha = 0.4) and its
    learning rate decays from 2e-4 by (1 - t)^0.9 over 500 epochs."""
    from contraseg.engine.optim import make_optimizer, make_scheduler
    from contraseg.models.registry import build_method

    config = load_config("dc-seg", "paper")
    torch.manual_seed(0)
    method = build_method("dc-seg", MODALITIES, 4, config.model, config.loss_weights)
    method.check_patch(config.data.patch_size)
    assert config.data.patch_size == [112] * 3 and config.data.batch_size == 2
    assert method.modality_codes(torch.randn(2, 4, 32, 32, 32)).shape == (2, 4, 8)
    weights = method.loss_weights
    assert {t: weights[t] for t in ("seg", "reg", "ana", "mod", "rec")} == {
        "seg": 1.0, "reg": 1.0, "ana": 0.4, "mod": 0.4, "rec": 0.4}
    optimizer = make_optimizer(method.parameters(), config.optim)
    schedule = make_scheduler(optimizer, config.optim, config.total_steps)
    assert config.epochs == 500 and schedule.get_last_lr()[0] == pytest.approx(2e-4)
    optimizer.step()  # no gradients: nothing moves; the schedule may then step
    for _ in range(config.total_steps // 2):
        schedule.step()
    assert schedule.get_last_lr()[0] == pytest.approx(2e-4 * 0.5**0.9, rel=1e-3)
    assert config.infer.et_min_voxels == 500


def test_anatomical_term_is_the_sigmoid_loss_of_ssim_between_present_items():
    method, shape = tiny()
    images, target = inputs(shape)
    present = mask([[1, 1, 0, 1], [1, 1, 1, 1]])
    with torch.no_grad():
        terms = method.losses(Batch(images, present, target, present=present, epoch=9))
        anatomy = method.encode(images * present[:, :, None, None, None])[-1]
        items = present.flatten()
        subjects, _ = item_labels(2, 4)
        ssim = pairwise_ssim(anatomy.flatten(0, 1)[items], window=3)
        sign = same_label(subjects[items]).float() * 2 - 1
        t = method.log_temperature["ana"].exp()
        expected = torch.nn.functional.softplus(-sign * t * ssim).mean()
    assert ssim.shape == (7, 7)
    assert terms["ana"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_every_term_is_named_and_weighted():
    method, shape = tiny(weights=dict(seg=1.0, reg=0.5, prm=0.25, ana=0.4, mod=0.3, rec=0.2))
    images, target = inputs(shape)
    available = mask([[1, 0, 1, 1], [1, 1, 1, 1]])
    with torch.no_grad():
        total, terms = method.total_loss(Batch(images, available, target,
                                               present=torch.ones_like(available), epoch=9))
    assert set(terms) == {"seg", "reg", "prm", "ana", "mod", "rec"}
    assert all(terms[name].item() > 0 for name in terms)
    weighted = sum(method.loss_weights[name] * terms[name] for name in terms)
    assert total.item() == pytest.approx(weighted.item(), rel=1e-6)


def test_ablations_drop_their_terms_and_modules():
    method, shape = tiny(weights=dict(ana=0.0, mod=0.0, rec=0.0))
    assert not hasattr(method, "modality_encoders") and not hasattr(method, "reconstructors")
    assert len(method.log_temperature) == 0 and method.min_batch_size == 1
    assert DCSeg.batch_size_needed({"ana": 0.0, "mod": 0.0}) == 1
    assert DCSeg.batch_size_needed({"ana": 0.0}) == 2  # mod weighs 1 when not given
    images, target = inputs(shape, batch=1)
    available = mask([[1, 1, 0, 1]])
    terms = method.losses(Batch(images, available, target, epoch=9))
    assert set(terms) == {"seg", "reg", "prm"}
    only_rec, _ = tiny(weights=dict(ana=0.0, mod=0.0))
    assert hasattr(only_rec, "modality_encoders") and hasattr(only_rec, "reconstructors")


def test_a_batch_of_one_is_refused_while_a_contrastive_term_is_on():
    method, shape = tiny()
    assert method.min_batch_size == 2
    images, target = inputs(shape, batch=1)
    available = mask([[1, 1, 1, 1]])
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        method.total_loss(Batch(images, available, target))


def test_reconstruction_never_reads_an_absent_modality():
    method, shape = tiny()
    images, target = inputs(shape)
    present = mask([[1, 1, 0, 1], [0, 1, 1, 1]])
    available = mask([[1, 0, 0, 1], [0, 1, 1, 0]])
    changed = images.clone()
    changed[0, 2] = torch.nan
    changed[1, 0] = 1e30
    with torch.no_grad():
        a = method.losses(Batch(images, available, target, present=present, epoch=9))
        b = method.losses(Batch(changed, available, target, present=present, epoch=9))
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_two_modalities_work_and_one_is_refused():
    method, shape = tiny(("flair", "t1"))
    images, target = inputs(shape, m=2)
    available = mask([[1, 0], [1, 1]])
    total, terms = method.total_loss(Batch(images, available, target, present=torch.ones_like(
        available), epoch=9))
    total.backward()
    assert torch.isfinite(total) and terms["mod"].item() > 0
    with torch.no_grad():
        assert method(images, mask([[0, 1], [1, 0]])).shape == (2, 4, *shape)
    with pytest.raises(ConfigError, match="at least two modalities"):
        tiny(("flair",))


def test_representations_have_one_row_per_modality():
    method, shape = tiny()
    images, _ = inputs(shape)
    out = method.representations(images, torch.ones(2, 4, dtype=torch.bool))
    assert out["anatomical"].shape[:2] == (2, 4) and out["modality"].shape == (2, 4, 8)


def test_optional_siglip_bias_and_fixed_temperature():
    method, shape = tiny(bias_init=-2.0, learn_temperature=False, temperature_init=3.0)
    assert set(method.bias) == {"ana", "mod"} and method.bias["ana"].requires_grad
    assert not method.log_temperature["mod"].requires_grad
    images, target = inputs(shape)
    present = torch.ones(2, 4, dtype=torch.bool)
    with torch.no_grad():
        terms = method.losses(Batch(images, present, target, epoch=9))
        codes = method.modality_codes(images).flatten(0, 1)
        cosine = torch.nn.functional.cosine_similarity(codes[:, None], codes[None], dim=-1)
        sign = same_label(item_labels(2, 4)[1]).float() * 2 - 1
        expected = torch.nn.functional.softplus(-sign * (3.0 * cosine - 2.0)).mean()
    assert terms["mod"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_modality_absent_from_the_whole_batch_still_reaches_its_decoder():
    """DDP (without find_unused_parameters) needs every parameter in the graph of every step,
    also when no sample of a process's batch has some modality (mixed datasets)."""
    method, shape = tiny()
    images, target = inputs(shape)
    present = mask([[1, 1, 0, 1], [1, 0, 0, 1]])  # nobody has t2
    total, terms = method.total_loss(Batch(images, present, target, present=present, epoch=9))
    total.backward()
    grads = [p.grad for p in method.reconstructors[2].parameters()]
    assert all(g is not None and torch.equal(g, torch.zeros_like(g)) for g in grads)
    assert all(p.grad is not None for p in method.reconstructors[0].parameters())
    assert any(p.grad.abs().sum() > 0 for p in method.reconstructors[0].parameters())


def _encoder_grad_norm(method, term_weights: dict[str, float], batch: Batch) -> float:
    """Norm of the gradient on the shared anatomical encoders of the weighted terms given."""
    method.zero_grad()
    terms = method.losses(batch)
    sum(w * terms[t] for t, w in term_weights.items()).backward()
    grads = [p.grad.flatten() for p in method.encoders.parameters() if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0


@pytest.mark.parametrize("zero_init", [True, False])
def test_reconstruction_starts_at_predicting_the_mean(zero_init):
    """At step 0 a zero head predicts 0 (the mean of z-scored images): `rec` is the sum over
    modalities of mean |x_j| and sends no gradient into the shared encoders; a random head sends
    a gradient comparable with the segmentation objective's (the reviewer measured 1.6x)."""
    method, shape = tiny(rec_zero_init=zero_init)
    images, target = inputs(shape)
    present = torch.ones(2, 4, dtype=torch.bool)
    batch = Batch(images, present, target, present=present, epoch=9)
    rec = _encoder_grad_norm(method, {"rec": 0.4}, batch)
    seg = _encoder_grad_norm(method, {"seg": 1.0, "reg": 1.0, "prm": 1.0}, batch)
    with torch.no_grad():
        value = method.losses(batch)["rec"]
    mean_abs = images.abs().mean(dim=(0, 2, 3, 4)).sum()
    if zero_init:
        assert value.item() == pytest.approx(mean_abs.item(), rel=1e-5)
        assert rec == 0.0 and seg > 0
    else:
        assert value.item() != pytest.approx(mean_abs.item(), rel=1e-3)
        assert rec > 0.05 * seg


def test_reconstruction_with_missing_modalities_by_hand():
    """`rec` is a SUM over modalities of the mean |rebuilt - x_j| over the samples that have
    modality j (not a mean over modalities, not over all samples). At step 0 the zero head
    rebuilds 0, so with constant images a (sample 0) and b (sample 1) and t2 missing from
    sample 0, t1 from sample 1: |1| + (|-2| + |4|) / 2 + |-1| + (|3| + |-6|) / 2 = 9.5."""
    method, shape = tiny(rec_zero_init=True)
    _, target = inputs(shape)
    a, b = [1.0, -2.0, 7.0, 3.0], [5.0, 4.0, -1.0, -6.0]
    images = torch.tensor([a, b]).view(2, 4, 1, 1, 1).expand(2, 4, *shape).contiguous()
    present = mask([[1, 1, 0, 1], [0, 1, 1, 1]])
    with torch.no_grad():
        rec = method.losses(Batch(images, present, target, present=present, epoch=9))["rec"]
    assert rec.item() == pytest.approx(9.5, rel=1e-6)


def test_temperatures_are_clamped_and_monitored():
    method, _ = tiny(temperature_init=10.0, max_temperature=100.0)
    assert method.monitored() == pytest.approx({"t_ana": 10.0, "t_mod": 10.0})
    with torch.no_grad():
        method.log_temperature["ana"].fill_(math.log(250.0))
        method.log_temperature["mod"].fill_(math.log(50.0))
    method.after_step(0.5)
    assert method.monitored() == pytest.approx({"t_ana": 100.0, "t_mod": 50.0})
    ablated, _ = tiny(weights={"ana": 0.0})
    assert set(ablated.monitored()) == {"t_mod"}
    with pytest.raises(ConfigError, match="max_temperature"):
        tiny(temperature_init=10.0, max_temperature=5.0)
