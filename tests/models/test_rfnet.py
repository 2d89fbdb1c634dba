"""RFNet: fusion warm-up, the separate decoders' use of `present`, encode/decode, size."""

from __future__ import annotations

import pytest
import torch

from contraseg.models.base import Batch
from contraseg.models.rfnet import RFNet, RFNetConfig, ce_dice
from tests.models.tiny_methods import MODALITIES, build_tiny, mask
from tests.models.tiny_methods import random_inputs as inputs


def tiny(**model) -> tuple[RFNet, list[int]]:
    return build_tiny("rfnet", **model)


def test_fuse_term_is_off_during_the_warm_up_and_on_after():
    method, shape = tiny(fusion_warmup_epochs=3)
    method.loss_weights.update(fuse=0.7, sep=1.3, prm=0.5)
    images, target = inputs(shape)
    available = mask([[1, 0, 1, 1], [0, 1, 0, 0]])
    with torch.no_grad():
        before, t0 = method.total_loss(Batch(images, available, target, epoch=2))
        after, t1 = method.total_loss(Batch(images, available, target, epoch=3))
    assert t0["fuse"].item() == 0.0 and t1["fuse"].item() > 0.1
    without_fuse = 1.3 * t1["sep"] + 0.5 * t1["prm"]
    assert before.item() == pytest.approx(without_fuse.item(), rel=1e-6)
    assert after.item() == pytest.approx((without_fuse + 0.7 * t1["fuse"]).item(), rel=1e-6)


def test_separate_loss_never_reads_a_modality_that_is_not_present():
    method, shape = tiny()
    images, target = inputs(shape)
    present = mask([[1, 1, 0, 1], [0, 1, 1, 1]])
    available = mask([[1, 0, 0, 1], [0, 0, 1, 0]])
    changed = images.clone()
    changed[0, 2] = torch.nan
    changed[1, 0] = torch.randn(shape) * 100
    with torch.no_grad():
        reference = method.losses(Batch(images, available, target, present=present, epoch=99))
        other = method.losses(Batch(changed, available, target, present=present, epoch=99))
    for name in ("fuse", "sep", "prm"):
        assert torch.equal(reference[name], other[name]), name
    total, _ = method.total_loss(Batch(changed, available, target, present=present, epoch=99))
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in method.parameters() if p.grad is not None)


def test_separate_loss_is_the_sum_over_present_modalities():
    method, shape = tiny()
    images, target = inputs(shape)
    present = mask([[1, 1, 0, 1], [0, 1, 1, 1]])
    with torch.no_grad():
        loss = method.losses(Batch(images, present, target, present=present))["sep"]
        encoded = method.encode(images)
        expected = 0.0
        for m in range(len(MODALITIES)):  # one decoder call per modality, present samples only
            rows = present[:, m]
            logits = method.separate([f[rows, m] for f in encoded])
            expected += ce_dice(torch.softmax(logits, 1), target[rows]).item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_a_present_modality_does_change_the_separate_loss():
    method, shape = tiny()
    images, target = inputs(shape)
    present = mask([[1, 1, 0, 1], [0, 1, 1, 1]])
    available = mask([[1, 0, 0, 0], [0, 1, 0, 0]])
    changed = images.clone()
    changed[0, 3] = torch.randn(shape)  # present but not available: only `sep` sees it
    with torch.no_grad():
        a = method.losses(Batch(images, available, target, present=present, epoch=99))
        b = method.losses(Batch(changed, available, target, present=present, epoch=99))
    assert torch.equal(a["fuse"], b["fuse"]) and torch.equal(a["prm"], b["prm"])
    assert not torch.equal(a["sep"], b["sep"])


def test_decode_from_one_encode_equals_forward_for_each_pattern():
    method, shape = tiny()
    method.eval()
    images, _ = inputs(shape)
    patterns = [mask([[1, 0, 1, 0], [0, 0, 0, 1]]), mask([[0, 1, 1, 1], [1, 1, 0, 0]])]
    with torch.no_grad():
        encoded = method.encode(images)
        outputs = [method.decode(encoded, available) for available in patterns]
        for available, decoded in zip(patterns, outputs, strict=True):
            assert torch.equal(decoded, method(images, available))
    assert not torch.allclose(outputs[0], outputs[1])


def test_one_encoded_window_decodes_several_subsets_at_once():
    method, shape = tiny()
    images, _ = inputs(shape, batch=1)
    subsets = mask([[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]])
    with torch.no_grad():
        decoded = method.decode(method.encode(images), subsets)
        expected = method(images.expand(3, *images.shape[1:]), subsets)
    assert decoded.shape == (3, 4, *shape)
    torch.testing.assert_close(decoded, expected, rtol=1e-4, atol=1e-3)  # batch-size noise


def test_encode_gives_every_modality_at_every_stage():
    method, shape = tiny()
    with torch.no_grad():
        encoded = method.encode(inputs(shape)[0])
    base = method.config.base_channels
    assert [tuple(f.shape) for f in encoded] == [
        (2, 4, base * 2**s, *(n // 2**s for n in shape)) for s in range(4)]


def test_prm_supervision_by_downsampled_target_gives_a_different_finite_loss():
    values = []
    for mode in ("upsample", "downsample"):
        method, shape = tiny(prm_supervision=mode)
        images, target = inputs(shape)
        with torch.no_grad():
            prm = method.losses(Batch(images, torch.ones(2, 4, dtype=torch.bool), target))["prm"]
        values.append(prm.item())
    assert all(torch.isfinite(torch.tensor(values))) and values[0] != values[1]


def test_default_model_size():
    method = RFNet(MODALITIES, 4, RFNetConfig())
    count = sum(p.numel() for p in method.parameters())
    print(f"rfnet default (base 16, 4 modalities, 4 classes): {count} parameters")
    assert count == 8_979_784
