"""Reusable 3D building blocks: conv units, a per-modality encoder and a U-Net decoder.

They follow RFNet's backbone (Ding et al., ICCV 2021), which later methods (DC-Seg, ...) reuse:
every convolution is followed by InstanceNorm and LeakyReLU(0.2), padding is `reflect` by default,
the encoder has one residual pair of convolutions per stage and halves the resolution with a
stride-2 convolution, the decoder upsamples trilinearly. Channels double per stage from `base`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def maybe_checkpoint(enabled: bool, fn, *args):
    """fn(*args), recomputed in the backward pass instead of keeping its activations when
    `enabled` and gradients are on (activation checkpointing: memory for time)."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def stage_channels(base_channels: int, depth: int) -> list[int]:
    """Channels of each stage, shallow to deep: base, 2 base, 4 base, ..."""
    return [base_channels * 2**stage for stage in range(depth)]


class ConvNormAct(nn.Sequential):
    """Conv3d -> InstanceNorm3d -> LeakyReLU.

    The convolution has no bias: InstanceNorm (without affine parameters, as in RFNet's code)
    subtracts the per-channel mean, which cancels a bias exactly, so a bias would be a dead
    parameter. A side effect: an all-zero input gives an all-zero output.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding_mode: str = "reflect", negative_slope: float = 0.2):
        super().__init__(
            nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride,
                      padding=kernel_size // 2, padding_mode=padding_mode, bias=False),
            nn.InstanceNorm3d(out_channels),
            nn.LeakyReLU(negative_slope),
        )


def conv_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> ConvNormAct:
    """conv3^3 (zero padding) + InstanceNorm + ReLU: DCL-MANet's authors' unit."""
    return ConvNormAct(in_channels, out_channels, kernel_size, padding_mode="zeros",
                       negative_slope=0.0)


class ResidualStage(nn.Module):
    """One encoder stage: an entry conv (stride 1 or 2), then x + conv(conv(x))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 padding_mode: str = "reflect"):
        super().__init__()
        self.entry = ConvNormAct(in_channels, out_channels, stride=stride,
                                 padding_mode=padding_mode)
        self.residual = nn.Sequential(
            ConvNormAct(out_channels, out_channels, padding_mode=padding_mode),
            ConvNormAct(out_channels, out_channels, padding_mode=padding_mode),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.entry(x)
        return x + self.residual(x)


class ModalityEncoder(nn.Module):
    """The encoder of one modality: `depth` residual stages, each halving the resolution but
    the first. Returns the feature map of every stage, shallow to deep."""

    def __init__(self, in_channels: int = 1, base_channels: int = 16, depth: int = 4,
                 padding_mode: str = "reflect"):
        super().__init__()
        channels = stage_channels(base_channels, depth)
        inputs = [in_channels, *channels[:-1]]
        self.stages = nn.ModuleList(
            ResidualStage(c_in, c_out, stride=1 if i == 0 else 2, padding_mode=padding_mode)
            for i, (c_in, c_out) in enumerate(zip(inputs, channels, strict=True)))
        self.checkpointing = False  # `model.checkpointing`: recompute each stage in backward

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            x = maybe_checkpoint(self.checkpointing, stage, x)
            features.append(x)
        return features


def conv_bottleneck(in_channels: int, mid_channels: int, out_channels: int,
                    padding_mode: str = "reflect") -> nn.Sequential:
    """1x1x1 conv to `mid_channels`, 3x3x3 conv, 1x1x1 conv to `out_channels` (all
    ConvNormAct): RFNet's embedding / region-merge / shortcut unit."""
    return nn.Sequential(
        ConvNormAct(in_channels, mid_channels, kernel_size=1),
        ConvNormAct(mid_channels, mid_channels, padding_mode=padding_mode),
        ConvNormAct(mid_channels, out_channels, kernel_size=1),
    )


def upsample2(x: Tensor) -> Tensor:
    """Trilinear x2 upsampling with aligned corners (RFNet's choice)."""
    return F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=True)


class UpBlock(nn.Module):
    """One decoder step, split in two so that a fusion module can act between them:
    `up(x)`: upsample x2 and conv to `out_channels`; `merge(skip, up)`: concatenate the skip,
    conv 3x3x3 then conv 1x1x1."""

    def __init__(self, in_channels: int, out_channels: int, skip_channels: int | None = None,
                 padding_mode: str = "reflect"):
        super().__init__()
        skip_channels = out_channels if skip_channels is None else skip_channels
        self.up_conv = ConvNormAct(in_channels, out_channels, padding_mode=padding_mode)
        self.merge_conv = nn.Sequential(
            ConvNormAct(skip_channels + out_channels, out_channels, padding_mode=padding_mode),
            ConvNormAct(out_channels, out_channels, kernel_size=1),
        )

    def up(self, x: Tensor) -> Tensor:
        return self.up_conv(upsample2(x))

    def merge(self, skip: Tensor, up: Tensor) -> Tensor:
        return self.merge_conv(torch.cat((skip, up), dim=1))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.merge(skip, self.up(x))


class SegmentationDecoder(nn.Module):
    """U-Net decoder from one encoder's stage features to class logits (RFNet's weight-shared
    per-modality decoder)."""

    def __init__(self, num_classes: int, base_channels: int = 16, depth: int = 4,
                 padding_mode: str = "reflect"):
        super().__init__()
        channels = stage_channels(base_channels, depth)
        self.ups = nn.ModuleList(UpBlock(channels[s + 1], channels[s], padding_mode=padding_mode)
                                 for s in range(depth - 1))
        self.head = nn.Conv3d(base_channels, num_classes, kernel_size=1)
        self.checkpointing = False

    def forward(self, features: list[Tensor]) -> Tensor:
        x = features[-1]
        for stage in reversed(range(len(self.ups))):
            x = maybe_checkpoint(self.checkpointing, self.ups[stage], x, features[stage])
        return self.head(x)


def kaiming_init(module: nn.Module) -> None:
    """Kaiming-normal weights for every Conv3d and Linear (RFNet's initialisation)."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d | nn.Linear):
            nn.init.kaiming_normal_(m.weight)
