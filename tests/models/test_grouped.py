"""The per-modality paths run as one grouped network: the same function as M separate modules
(to 1e-5), and checkpoints of the loop layout load into it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contraseg.models.blocks import GroupedModalityEncoders, ModalityEncoder
from contraseg.models.registry import build_method

MODALITIES = ("t1", "t1c", "t2", "flair")


def loop_layout(fused: GroupedModalityEncoders, make) -> nn.ModuleList:
    """M separate modules holding the grouped network's weights (the old `encoders` layout)."""
    loop = nn.ModuleList(make() for _ in range(fused.num_modalities))
    for name, weight in fused.net.state_dict().items():
        for m, part in enumerate(weight.chunk(fused.num_modalities)):
            loop[m].state_dict()[name].copy_(part.reshape(loop[m].state_dict()[name].shape))
    return loop


def test_grouped_encoders_equal_separate_encoders():
    torch.manual_seed(0)
    fused = GroupedModalityEncoders(ModalityEncoder(1, 4, 3, groups=4), 4)
    loop = loop_layout(fused, lambda: ModalityEncoder(1, 4, 3))
    images = torch.randn(2, 4, 16, 16, 16)
    out = fused(images)
    for m, encoder in enumerate(loop):
        for stage, expected in enumerate(encoder(images[:, m:m + 1])):
            torch.testing.assert_close(out[stage][:, m], expected, atol=1e-5, rtol=1e-5)


def test_an_rfnet_checkpoint_of_the_loop_layout_loads_and_gives_the_same_logits():
    torch.manual_seed(0)
    model = build_method("rfnet", MODALITIES, 4, {"base_channels": 4, "fusion_hidden": 8,
                                                   "prm_hidden": 8})
    loop = loop_layout(model.encoder, lambda: ModalityEncoder(1, 4, 4))
    legacy = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    legacy |= {f"encoders.{k}": v for k, v in loop.state_dict().items()}
    fresh = build_method("rfnet", MODALITIES, 4, {"base_channels": 4, "fusion_hidden": 8,
                                                   "prm_hidden": 8})
    fresh.load_state_dict(legacy)  # strict: every key converted, none left over
    images, available = torch.randn(1, 4, 16, 16, 16), torch.tensor([[1, 0, 1, 1]]).bool()
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(images, available), model(images, available))
    assert not any(k.startswith("encoders.") for k in fresh.state_dict())


def test_grouped_plain_encoders_equal_separate_ones_and_dcl_manet_loads_the_loop_layout():
    from contraseg.models.dclmanet import PlainModalityEncoder

    torch.manual_seed(0)
    settings = {"modality_channels": 2, "depth": 3, "rfb_groups": 2}
    model = build_method("dcl-manet", MODALITIES, 4, settings)
    loop = loop_layout(model.encoder, lambda: PlainModalityEncoder([2, 4, 8]))
    images = torch.randn(2, 4, 16, 16, 16)
    out = model.encode(images)
    for m, encoder in enumerate(loop):
        for level, expected in enumerate(encoder(images[:, m:m + 1])):
            torch.testing.assert_close(out[level][:, m], expected, atol=1e-5, rtol=1e-5)
    legacy = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.")}
    legacy |= {f"encoders.{k}": v for k, v in loop.state_dict().items()}
    fresh = build_method("dcl-manet", MODALITIES, 4, settings)
    fresh.load_state_dict(legacy)
    torch.testing.assert_close(fresh.encode(images)[-1], out[-1])


def test_dc_seg_loads_the_loop_layout_of_its_code_encoders_and_decoders():
    """Old DC-Seg checkpoints (M code encoders, M reconstruction decoders, Linear layers) load
    into the grouped layout and give the same codes and reconstruction loss."""
    from contraseg.models.base import Batch
    from contraseg.models.dcseg import ModalityCodeEncoder, ReconstructionDecoder

    torch.manual_seed(0)
    settings = {"base_channels": 4, "fusion_hidden": 8, "prm_hidden": 8, "modality_channels": 4,
                "modality_downsamples": 2, "rec_hidden": 8, "ssim_window": 3}
    model = build_method("dc-seg", MODALITIES, 4, settings).eval()
    codes = loop_layout(model.modality_encoder, lambda: ModalityCodeEncoder(8, 4, 2))
    decoders = loop_layout(model.reconstructor, lambda: ReconstructionDecoder(4, 4, 8, 8))
    legacy = {k: v for k, v in model.state_dict().items()
              if not k.startswith(("modality_encoder.", "reconstructor."))}
    for name, modules in (("modality_encoders", codes), ("reconstructors", decoders)):
        for key, value in modules.state_dict().items():  # the old Linear layers: 2-D weights
            legacy[f"{name}.{key}"] = value.squeeze(-1) if value.ndim == 3 else value
    fresh = build_method("dc-seg", MODALITIES, 4, settings).eval()
    fresh.load_state_dict(legacy)
    images = torch.randn(2, 4, 16, 16, 16)
    expected = torch.stack([codes[m](images[:, m:m + 1]) for m in range(4)], dim=1)
    torch.testing.assert_close(fresh.modality_codes(images), expected, atol=1e-5, rtol=1e-5)
    # in float64: instance norm of a small map amplifies float32 rounding past 1e-5
    z, code = torch.randn(2, 32, 2, 2, 2, dtype=torch.float64), expected.double()
    rebuilt = fresh.reconstructor.net.double()(z, code.flatten(1))
    for m in range(4):
        torch.testing.assert_close(rebuilt[:, m:m + 1], decoders[m].double()(z, code[:, m]),
                                   atol=1e-5, rtol=1e-5)
    fresh.reconstructor.net.float()
    batch = Batch(images, torch.ones(2, 4, dtype=torch.bool), torch.zeros(2, 16, 16, 16).long())
    with torch.no_grad():
        torch.testing.assert_close(fresh.losses(batch)["rec"], model.losses(batch)["rec"])


@pytest.mark.parametrize("name,settings", [
    ("rfnet", {"base_channels": 4, "fusion_hidden": 8, "prm_hidden": 8}),
    ("dc-seg", {"base_channels": 4, "fusion_hidden": 8, "prm_hidden": 8, "modality_channels": 4,
                "modality_downsamples": 2, "rec_hidden": 8, "ssim_window": 3}),
    ("dcl-manet", {"modality_channels": 2, "depth": 3, "rfb_groups": 2}),
])
def test_checkpointing_gives_the_same_losses_and_gradients(name, settings):
    """`model.checkpointing` trades memory for time only: same terms, same gradients."""
    from contraseg.models.base import Batch

    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        method = build_method(name, MODALITIES, 4, {**settings, "checkpointing": checkpointing})
        gen = torch.Generator().manual_seed(1)
        batch = Batch(torch.randn(2, 4, 16, 16, 16, generator=gen),
                      torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1]]).bool(),
                      torch.randint(0, 4, (2, 16, 16, 16), generator=gen), epoch=100)
        total, terms = method.total_loss(batch)
        total.backward()
        results.append((terms, {k: p.grad for k, p in method.named_parameters()}))
    (terms, grads), (terms_cp, grads_cp) = results
    for key in terms:
        torch.testing.assert_close(terms_cp[key], terms[key])
    for key, grad in grads.items():
        assert (grad is None) == (grads_cp[key] is None), key
        if grad is not None:
            torch.testing.assert_close(grads_cp[key], grad, atol=1e-5, rtol=1e-4)
