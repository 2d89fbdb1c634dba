"""Swin-MoCo: transfer learning from timm / torchvision Swin state dicts, the pre-training
objective, the momentum update and the decoder copy on --init."""

from __future__ import annotations

import math
import re

import pytest
import torch

from contraseg.errors import ConfigError
from contraseg.models.base import Batch
from contraseg.models.registry import build_method
from contraseg.models.swin import SwinEncoder2d
from contraseg.models.swin_transfer import _torchvision_key, swin_encoder_state
from contraseg.models.swinmoco import ViewSettings, _random_blur, random_views, view_theta
from tests.models.tiny_methods import MODALITIES, build_tiny, mask

SWIN_T = {"embed_dim": 96, "depths": [2, 2, 2, 2], "heads": [3, 6, 12, 24], "window": 7,
          "patch": 4}


def timm_swin_t_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A timm >= 0.9 style Swin-T (depths 2, 2, 6, 2; 3 input channels) state dict, written
    here by renaming independently of the code under test: fc1/fc2 MLP names, patch merging
    at the START of the next stage, a 1000-class head."""
    torch.manual_seed(seed)
    source = SwinEncoder2d(3, 96, (2, 2, 6, 2), (3, 6, 12, 24), window=7)
    state = {}
    for key, value in source.state_dict().items():
        key = key.replace("mlp.linear1", "mlp.fc1").replace("mlp.linear2", "mlp.fc2")
        match = re.fullmatch(r"layers\.(\d)\.downsample\.(.+)", key)
        if match:
            key = f"layers.{int(match[1]) + 1}.downsample.{match[2]}"
        state[key] = value.clone()
    state["head.fc.weight"] = torch.randn(1000, 768)
    state["head.fc.bias"] = torch.zeros(1000)
    return state


def test_init_from_a_timm_swin_t_loads_matching_keys_and_reports_the_rest():
    timm = timm_swin_t_state()
    torch.manual_seed(1)
    method = build_method("swin-moco", MODALITIES, 4, SWIN_T)
    report = method.load_init(timm)
    own = method.encoder.state_dict()
    assert "layers.0.blocks.1.attn.qkv.weight" in report["loaded"]
    assert torch.equal(own["layers.0.blocks.1.attn.qkv.weight"],
                       timm["layers.0.blocks.1.attn.qkv.weight"])
    assert torch.equal(own["layers.1.blocks.0.mlp.linear1.weight"],
                       timm["layers.1.blocks.0.mlp.fc1.weight"])
    # timm's merging at the start of stage 1 is ours at the end of stage 0
    assert torch.equal(own["layers.0.downsample.reduction.weight"],
                       timm["layers.1.downsample.reduction.weight"])
    assert torch.equal(own["norm.weight"], timm["norm.weight"])
    skipped = dict(line.split(": ", 1) for line in report["skipped"])
    assert "patch_embed.proj.weight" in report["loaded"] and report["inflated"]
    assert skipped["layers.2.blocks.5.attn.qkv.weight"] == "not in the model"
    assert skipped["head.fc.weight"] == "not in the model"
    assert not any(k.startswith("layers.0.blocks.0.") for k in skipped)
    # the decoder starts from the mirrored encoder stages
    assert "decoder.layers.0.blocks.0 <- encoder.layers.2.blocks.0" in report["decoder_copied"]
    assert torch.equal(method.decoder.layers[0].blocks[0].attn.qkv.weight,
                       timm["layers.2.blocks.0.attn.qkv.weight"])


def test_old_timm_layout_and_torchvision_names():
    torch.manual_seed(0)
    ours = SwinEncoder2d(3, 8, (2, 2), (1, 2), window=4)
    old_timm = {k.replace("mlp.linear1", "mlp.fc1"): v for k, v in ours.state_dict().items()}
    assert swin_encoder_state(old_timm).keys() == ours.state_dict().keys()
    assert _torchvision_key("features.0.0.weight") == "patch_embed.proj.weight"
    assert _torchvision_key("features.0.2.bias") == "patch_embed.norm.bias"
    assert _torchvision_key("features.3.1.mlp.3.weight") == "layers.1.blocks.1.mlp.linear2.weight"
    assert _torchvision_key("features.4.reduction.weight") == "layers.1.downsample.reduction.weight"
    run_state = {f"encoder.{k}": v for k, v in ours.state_dict().items()} | {"head.weight": 0}
    assert swin_encoder_state(run_state).keys() == ours.state_dict().keys()


def pretrainer(**model):
    method, patch = build_tiny("swin-moco-pretrain", **model)
    return method, patch


def test_pretraining_objective_momentum_and_views():
    method, _ = pretrainer()
    images = torch.randn(4, 4, 16, 16, 1)
    available = mask([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 1, 1], [1, 1, 1, 0]])
    terms = method.losses(Batch(images, available))
    assert set(terms) == {"moco"} and torch.isfinite(terms["moco"])
    terms["moco"].backward()
    assert method.encoder.patch_embed.proj.weight.grad is not None
    assert all(p.grad is None for p in method.momentum_encoder.parameters())
    before = {k: v.clone() for k, v in method.momentum_encoder.state_dict().items()}
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(1.0)
    method.after_step(0.0)  # m = 0.99 at the start
    key = "layers.0.blocks.0.attn.qkv.weight"
    expected = 0.99 * before[key] + 0.01 * method.encoder.state_dict()[key]
    assert torch.allclose(method.momentum_encoder.state_dict()[key], expected, atol=1e-6)
    # the views keep absent channels at 0 and change the present ones
    slices = torch.randn(4, 4, 16, 16)
    views = random_views(slices, available, ViewSettings((0.3, 1.0), rotation=10.0, blur=0.5))
    assert (views[~available] == 0).all() and not torch.allclose(views[available],
                                                                 slices[available])
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        method.check_batch_size(method.loss_weights, 1)


def test_pretraining_starts_both_encoders_from_init_weights():
    method, _ = pretrainer()
    torch.manual_seed(4)
    other = SwinEncoder2d(4, 8, (2, 2), (1, 2), window=4)
    report = method.load_init({f"encoder.{k}": v for k, v in other.state_dict().items()})
    assert not report["skipped"]
    for name, value in other.state_dict().items():
        assert torch.equal(method.encoder.state_dict()[name], value)
        assert torch.equal(method.momentum_encoder.state_dict()[name], value)


def test_fine_tuning_loss_weights_are_the_papers():
    method, _ = build_tiny("swin-moco")
    assert method.loss_weights == {"ce": 0.4, "dice": 0.6}


def timm_swin_keys(embed: int = 16, depths=(2, 2), heads=(1, 2), window: int = 4,
                   channels: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with timm >= 0.9's Swin key names and shapes, spelled out here from timm's
    layout (not derived from contraseg's modules): patch merging (norm over 4C, reduction
    4C -> 2C) at the start of stages 1.., fc1/fc2 MLPs, a classification head."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen) * 0.05

    state = {"patch_embed.proj.weight": rand(embed, channels, 4, 4),
             "patch_embed.proj.bias": rand(embed), "patch_embed.norm.weight": 1 + rand(embed),
             "patch_embed.norm.bias": rand(embed)}
    for i, (depth, head) in enumerate(zip(depths, heads, strict=True)):
        c = embed * 2**i
        if i:
            state[f"layers.{i}.downsample.norm.weight"] = 1 + rand(2 * c)
            state[f"layers.{i}.downsample.norm.bias"] = rand(2 * c)
            state[f"layers.{i}.downsample.reduction.weight"] = rand(c, 2 * c)
        for j in range(depth):
            b = f"layers.{i}.blocks.{j}."
            state |= {b + "norm1.weight": 1 + rand(c), b + "norm1.bias": rand(c),
                      b + "attn.relative_position_bias_table": rand((2 * window - 1) ** 2, head),
                      b + "attn.qkv.weight": rand(3 * c, c), b + "attn.qkv.bias": rand(3 * c),
                      b + "attn.proj.weight": rand(c, c), b + "attn.proj.bias": rand(c),
                      b + "norm2.weight": 1 + rand(c), b + "norm2.bias": rand(c),
                      b + "mlp.fc1.weight": rand(4 * c, c), b + "mlp.fc1.bias": rand(4 * c),
                      b + "mlp.fc2.weight": rand(c, 4 * c), b + "mlp.fc2.bias": rand(c)}
    last = embed * 2 ** (len(depths) - 1)
    state |= {"norm.weight": 1 + rand(last), "norm.bias": rand(last),
              "head.fc.weight": rand(10, last), "head.fc.bias": rand(10)}
    return state


@pytest.mark.parametrize("modalities", [MODALITIES, ("stir", "t1", "t2")])
def test_imagenet_transfer_inflates_the_first_layer(modalities):
    """The RGB patch embedding becomes M channels: M identical channels give exactly what the
    RGB layer gives for a grey slice repeated to RGB (the authors' input), an independent
    conv2d on the file's own weights; every timm key but the head loads."""
    timm = timm_swin_keys()
    method = build_method("swin-moco-pretrain", modalities, 1,
                          {"embed_dim": 16, "depths": [2, 2], "heads": [1, 2], "window": 4,
                           "patch": 4, "projector_hidden": 32, "projection_dim": 16,
                           "predictor_hidden": 32})
    report = method.load_init(timm)
    assert sorted(line.split(":")[0] for line in report["skipped"]) == ["head.fc.bias",
                                                                        "head.fc.weight"]
    assert len(report["loaded"]) == len(timm) - 2 and len(report["inflated"]) == 1
    grey = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        ours = method.encoder.patch_embed.proj(grey.repeat(1, len(modalities), 1, 1))
        theirs = torch.nn.functional.conv2d(grey.repeat(1, 3, 1, 1),
                                            timm["patch_embed.proj.weight"],
                                            timm["patch_embed.proj.bias"], stride=4)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    # a contraseg run's own first layer is taken as it is
    own = {f"encoder.{k}": v for k, v in method.encoder.state_dict().items()}
    assert build_tiny("swin-moco-pretrain")[0].load_init(own)["inflated"] == []


def test_blur_is_a_gaussian_of_the_drawn_sigma():
    """sigma fixed at 1: an impulse spreads into the normalised outer product of
    exp(-k^2 / 2); probability 0 leaves the slice alone."""
    impulse = torch.zeros(1, 1, 15, 15)
    impulse[0, 0, 7, 7] = 1.0
    blurred = _random_blur(impulse, 1.0, (1.0, 1.0))
    taps = torch.exp(-0.5 * torch.arange(-3.0, 4.0) ** 2)
    taps = taps / taps.sum()
    torch.testing.assert_close(blurred[0, 0, 4:11, 4:11], taps[:, None] * taps[None, :])
    assert torch.equal(_random_blur(impulse, 0.0, (1.0, 1.0)), impulse)


def test_predictor_ends_in_a_batch_norm_as_released():
    method, _ = pretrainer(predictor_last_bn=True)
    last = method.predictor[-1]
    assert isinstance(last, torch.nn.BatchNorm1d) and not last.affine
    assert isinstance(pretrainer(predictor_last_bn=False)[0].predictor[-1], torch.nn.Linear)


def test_views_are_the_authors_in_the_presets_and_the_old_ones_by_default():
    """A run made before the view keys existed resumes with its own views (crop 0.3-1, no
    rotation, no blur); every preset that pre-trains for real sets the authors' views."""
    from contraseg.engine.config import load_config
    from contraseg.models.swinmoco import SwinMoCoConfig

    old = SwinMoCoConfig()
    assert (old.crop_scale, old.view_rotation, old.view_blur) == ([0.3, 1.0], 0.0, [0.0, 0.0])
    for preset in ("paper", "cpu", "fast"):
        model = load_config("swin-moco-pretrain", preset).model
        assert model["crop_scale"] == [0.08, 1.0] and model["view_rotation"] == 10.0
        assert model["view_blur"] == [1.0, 0.1] and model["predictor_last_bn"] is True
    with pytest.raises(ConfigError, match="view_blur_sigma"):
        SwinMoCoConfig(view_blur_sigma=[0.5])


def test_a_view_turns_a_non_square_slice_rigidly():
    """In pixels the view's map is a rotation (no shear) on a 16 x 48 slice: conjugating
    affine_grid's normalised matrix by the half-sizes gives an orthogonal matrix, and a
    quarter-turn moves the slice's long axis onto its short one."""
    height, width = 16, 48
    half = torch.diag(torch.tensor([width / 2, height / 2]))
    ones, zeros = torch.ones(2), torch.zeros(2)
    angle = torch.tensor([0.3, -math.pi / 2])
    theta = view_theta(angle, (ones, ones), (zeros, zeros), ones, height, width)
    for k in range(2):
        pixels = half @ theta[k, :, :2] @ torch.linalg.inv(half)
        assert torch.allclose(pixels.T @ pixels, torch.eye(2), atol=1e-6)
    quarter = half @ theta[1, :, :2] @ torch.linalg.inv(half)
    assert torch.allclose(quarter @ torch.tensor([1.0, 0.0]), torch.tensor([0.0, -1.0]),
                          atol=1e-6)


def test_the_views_intensity_jitter_is_a_setting_that_can_be_turned_off():
    """A constant slice stays constant under the geometric part of a view; the default jitter
    (x 1 +- 0.2, + -0.2..0.2 per channel) moves each channel, [0, 0] leaves it at 1."""
    from contraseg.models.swinmoco import SwinMoCoConfig, ViewSettings, random_views

    x, available = torch.ones(6, 3, 16, 16), torch.ones(6, 3, dtype=torch.bool)
    torch.manual_seed(0)
    plain = random_views(x, available, ViewSettings(scale=(0.5, 0.5), intensity=(0.0, 0.0)))
    assert torch.allclose(plain[..., 4:12, 4:12], torch.ones(()), atol=1e-5)
    jittered = random_views(x, available, ViewSettings(scale=(0.5, 0.5)))
    centre = jittered[..., 4:12, 4:12]
    per_channel = centre.mean(dim=(2, 3))
    assert torch.allclose(centre, per_channel[..., None, None], atol=1e-5)
    assert (per_channel - 1).abs().max() > 0.05 and (per_channel - 1).abs().max() <= 0.44 + 1e-5
    assert SwinMoCoConfig().view_intensity == [0.2, 0.2]
    with pytest.raises(ConfigError, match="view_intensity"):
        SwinMoCoConfig(view_intensity=[1.5, 0.2])
