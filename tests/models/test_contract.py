"""The method contract (contraseg.testing.MethodContract, the class a plugin's suite
subclasses) run over every built-in method, and what only some built-in methods promise."""

from __future__ import annotations

import pytest
import torch

from contraseg.models.base import Batch, MethodKind
from contraseg.models.registry import get_entry, list_methods
from contraseg.testing import MethodContract
from tests.models.tiny_methods import MODALITIES, NUM_CLASSES, build_tiny
from tests.models.tiny_methods import random_inputs as inputs

BUILTIN = [name for name in list_methods() if get_entry(name).source.builtin]


def _contract_class(name: str) -> type:
    title = "".join(part.capitalize() for part in name.replace("-", "_").split("_"))
    settings = {"method": name}
    if get_entry(name).cls.kind is MethodKind.GENERATOR:  # IntroVAE models healthy T1 alone
        settings |= {"modalities": ("t1",), "num_classes": 1}
    return type(f"TestContract{title}", (MethodContract,), settings)


for _name in BUILTIN:  # one test class per built-in method: TestContractUnet, ...
    _cls = _contract_class(_name)
    globals()[_cls.__name__] = _cls


def test_registry_lists_the_builtin_methods():
    assert set(BUILTIN) == {"unet", "rfnet", "dc-seg", "dcl-manet", "introvae", "clfc",
                            "swin-moco", "swin-moco-pretrain"}


@pytest.fixture(params=list_methods(kind="segmentation"))
def method_and_shape(request):
    return build_tiny(request.param)


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
