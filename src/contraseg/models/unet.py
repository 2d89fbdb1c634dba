"""`unet`: the concatenating 3D U-Net baseline of the missing-modality papers.

All modalities are stacked as input channels; a missing one is zeroed (the engine samples a
modality subset per sample during training: modality dropout), so one network serves every
subset. The network (`network`) is MONAI's DynUNet by default (`dynunet`: nnU-Net's plain U-Net,
two 3x3x3 conv + InstanceNorm + LeakyReLU per level, strided-conv downsampling, transposed-conv
upsampling), or MONAI's `UNet` (`monai`: residual units of two convs, strided from the first
layer, so no convolution but the last transposed one runs at full resolution). The `monai`
network is the one of MONAI's tutorials; it takes about a sixth of DynUNet's time per step at
64^3 on a CPU, which is why the `cpu` preset uses it. Objective: soft Dice + cross-entropy,
each its own term (`dice`, `ce`), on a softmax over the classes; with `regions`, on one sigmoid
per nested region (nnU-Net's region-based BraTS training: region Dice + binary cross-entropy,
the same two term names).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from monai.networks.nets import DynUNet
from monai.networks.nets import UNet as MonaiUNet
from torch import Tensor

from contraseg.errors import ConfigError
from contraseg.losses.segmentation import region_bce_loss, region_dice_loss, soft_dice_loss
from contraseg.models.base import Batch, Method, mask_missing
from contraseg.models.regions import RegionHierarchy
from contraseg.models.registry import register

NETWORKS = ("dynunet", "monai")


@dataclass
class UNetConfig:
    """base_channels doubles at each of `depth` levels (capped at max_channels). network:
    `dynunet` (nnU-Net's plain U-Net, full-resolution first level) or `monai` (MONAI's UNet with
    `res_units` residual units per level, strided from the first layer). `regions`: None for one
    softmax over the classes, or nested regions as lists of canonical classes (outermost first,
    e.g. BraTS WT, TC, ET: [[1, 2, 3], [1, 3], [3]]) for one sigmoid per region
    (models/regions.py). `dice_per_sample`: the class Dice term per patch (MONAI's DiceLoss)
    instead of over the batch (nnU-Net's)."""

    base_channels: int = 16
    depth: int = 5
    max_channels: int = 320
    dropout: float = 0.0
    network: str = "dynunet"
    res_units: int = 2
    regions: list[list[int]] | None = None
    dice_per_sample: bool = False

    def __post_init__(self):
        if self.network not in NETWORKS:
            raise ConfigError(f"model.network {self.network!r}: expected one of "
                              f"{', '.join(NETWORKS)}")


@register("unet", UNetConfig)
class UNet(Method):
    """Concatenating 3D U-Net with modality dropout (the missing-modality baseline)."""

    spatial = "3d"
    loss_terms = ("dice", "ce")

    def __init__(self, modalities, num_classes, config: UNetConfig, loss_weights=None):
        super().__init__(modalities, num_classes, loss_weights)
        self.config = config
        if config.regions:
            self.regions = RegionHierarchy(config.regions, num_classes)
        filters = [min(config.base_channels * 2**i, config.max_channels)
                   for i in range(config.depth)]
        build = self._monai_unet if config.network == "monai" else self._dyn_unet
        self.net = build(filters, depth=config.depth, in_channels=len(modalities))

    def _dyn_unet(self, filters: list[int], depth: int, in_channels: int) -> DynUNet:
        """The nnU-Net-style network (`network: dynunet`, the default)."""
        return DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=self.out_channels,
                       kernel_size=[3] * depth, strides=[1] + [2] * (depth - 1),
                       upsample_kernel_size=[2] * (depth - 1), filters=filters,
                       dropout=self.config.dropout or None)

    def _monai_unet(self, filters: list[int], depth: int, in_channels: int) -> MonaiUNet:
        """MONAI's residual UNet (`network: monai`), the plain MONAI script's network."""
        return MonaiUNet(spatial_dims=3, in_channels=in_channels, out_channels=self.out_channels,
                         channels=filters, strides=[2] * (depth - 1),
                         num_res_units=self.config.res_units, dropout=self.config.dropout)

    @property
    def size_divisor(self) -> int:
        """Spatial sizes must be multiples of this (one halving per level below the first)."""
        return 2 ** (self.config.depth - 1)

    def forward(self, images: Tensor, available: Tensor) -> Tensor:
        return self.net(mask_missing(images, available))

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        logits = self(batch.images, batch.available)
        if self.regions is not None:
            masks = self.regions.target_masks(batch.target)
            return {"dice": region_dice_loss(logits, masks), "ce": region_bce_loss(logits, masks)}
        return {
            "dice": soft_dice_loss(logits, batch.target,
                                   per_sample=self.config.dice_per_sample),
            "ce": F.cross_entropy(logits.float(), batch.target),
        }
