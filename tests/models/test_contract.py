"""The method contract, run over every registered method (ARCHITECTURE.md).

- any modality subset gives finite logits of the right shape;
- values in missing channels (noise, NaN) do not change the output, nor the training loss;
- every trainable parameter receives a finite, non-zero gradient from the weighted loss.
Methods are built from their `tiny` preset so the whole contract runs in seconds.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from contraseg.models.base import Batch
from contraseg.models.registry import list_methods
from tests.models.tiny_methods import MODALITIES, NUM_CLASSES, build_tiny
from tests.models.tiny_methods import random_inputs as inputs


def all_subsets(m: int) -> torch.Tensor:
    rows = [bits for bits in itertools.product([False, True], repeat=m) if any(bits)]
    return torch.tensor(rows)


@pytest.fixture(params=list_methods(kind="segmentation"))
def method_and_shape(request):
    return build_tiny(request.param)


def test_registry_lists_the_baselines():
    assert {"unet"} <= set(list_methods())


def test_every_subset_gives_finite_logits_of_the_right_shape(method_and_shape):
    method, shape = method_and_shape
    method.eval()
    subsets = all_subsets(len(MODALITIES))
    assert len(subsets) == 15
    images, _ = inputs(shape, len(subsets))
    with torch.no_grad():
        logits = method(images, subsets)
    assert logits.shape == (len(subsets), NUM_CLASSES, *shape)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("filler", ["noise", "nan", "huge"])
def test_missing_channels_are_never_read(method_and_shape, filler):
    method, shape = method_and_shape
    method.eval()
    subsets = all_subsets(len(MODALITIES))[:-1]  # every subset that misses something
    images, _ = inputs(shape, len(subsets))
    zeroed = images * subsets[:, :, None, None, None]
    fill = {"noise": torch.randn_like(images) * 5, "nan": torch.full_like(images, float("nan")),
            "huge": torch.full_like(images, 1e30)}[filler]
    filled = torch.where(subsets[:, :, None, None, None], images, fill)
    with torch.no_grad():
        assert torch.equal(method(zeroed, subsets), method(filled, subsets))
        encoded = method.encode(filled)
        assert torch.equal(method.decode(encoded, subsets), method(zeroed, subsets))


def test_training_loss_ignores_missing_channels(method_and_shape):
    method, shape = method_and_shape
    method.train()
    available = torch.tensor([[True, False, True, False], [False, True, False, False]])
    images, target = inputs(shape, 2)
    filled = torch.where(available[:, :, None, None, None], images, torch.nan)
    zeroed = images * available[:, :, None, None, None]
    losses = []
    for x in (zeroed, filled):
        torch.manual_seed(1)
        total, terms = method.total_loss(
            Batch(x, available, target, present=available, epoch=10_000))
        assert torch.isfinite(total)
        losses.append(total.item())
    assert losses[0] == losses[1]


def test_every_parameter_gets_a_gradient(method_and_shape):
    """After one optimiser step: a zero-initialised head (DC-Seg's reconstruction) passes no
    gradient to the layers before it at step 0, by design, and does from the next step on."""
    method, shape = method_and_shape
    method.train()
    images, target = inputs(shape, 2)
    available = torch.ones(2, len(MODALITIES), dtype=torch.bool)
    # a late epoch, so that terms switched on after a warm-up (RFNet's fusion loss) count
    batch = Batch(images, available, target, epoch=10_000)
    optimiser = torch.optim.SGD(method.parameters(), lr=0.01)
    for step in range(2):
        optimiser.zero_grad()
        total, terms = method.total_loss(batch)
        total.backward()
        if step == 0:
            optimiser.step()
    assert set(terms) == set(method.loss_weights)
    for name, param in method.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"{name} gets no gradient"
            assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
            assert param.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_the_unet_offers_monais_unet_strided_from_the_first_layer():
    from monai.networks.nets import UNet as MonaiUNet

    from contraseg.errors import ConfigError
    from contraseg.models.registry import build_method

    method = build_method("unet", MODALITIES, NUM_CLASSES,
                          {"network": "monai", "base_channels": 4, "depth": 3})
    assert isinstance(method.net, MonaiUNet) and method.size_divisor == 4
    first = next(m for m in method.net.modules() if isinstance(m, torch.nn.Conv3d))
    assert first.stride == (2, 2, 2)  # nothing but the last layer at full resolution
    images = torch.randn(2, len(MODALITIES), 16, 16, 16)
    available = torch.tensor([[True] * len(MODALITIES), [True] + [False] * (len(MODALITIES) - 1)])
    assert method(images, available).shape == (2, NUM_CLASSES, 16, 16, 16)
    with pytest.raises(ConfigError, match="model.network 'resnet'"):
        build_method("unet", MODALITIES, NUM_CLASSES, {"network": "resnet"})


def test_a_training_step_and_a_prediction_run_under_bf16_autocast(method_and_shape):
    """`amp: bf16` / `auto` (the `cpu` presets): every method trains and predicts under
    bfloat16 autocast on the CPU, with finite values (CLFC's pseudo-normal once failed here)."""
    method, shape = method_and_shape
    images, target = inputs(shape, 2)
    available = torch.tensor([[True, True, True, True], [True, False, True, False]])
    method.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, _ = method.total_loss(Batch(images, available, target, epoch=10_000))
    total.backward()
    assert torch.isfinite(total)
    method.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = method.decode(method.encode(images), available)
    assert logits.shape == (2, NUM_CLASSES, *shape) and torch.isfinite(logits.float()).all()
