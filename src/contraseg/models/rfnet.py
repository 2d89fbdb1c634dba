"""`rfnet`: the Region-aware Fusion Network baseline (Ding, Yu, Yang, ICCV 2021).

One encoder per modality; at every stage a Region-aware Fusion Module (RFM) predicts class
probability maps from the available modalities' features and fuses those features region by
region; a U-Net decoder turns the fused features into the segmentation. A weight-shared decoder
segments each modality from its own features during training (the segmentation-based
regulariser). The reusable pieces (`RegionProbabilityGenerator`, `RegionModalityAttention`,
`RegionAwareFusion`, `RegionFusionDecoder`, and the encoder/decoder in `blocks`) are public.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contraseg.errors import ConfigError
from contraseg.losses.segmentation import soft_dice_loss_from_probs, weighted_cross_entropy
from contraseg.models.base import Batch, Method, mask_missing
from contraseg.models.blocks import (
    ConvNormAct,
    ModalityEncoder,
    SegmentationDecoder,
    UpBlock,
    conv_bottleneck,
    kaiming_init,
    maybe_checkpoint,
    stage_channels,
)
from contraseg.models.registry import register


@dataclass
class RFNetConfig:
    """base_channels doubles at each of `depth` stages (paper: 16 and 4).

    fusion_hidden: width of each region's modality-attention MLP (authors: 128).
    prm_hidden: width of the probability-map head (authors: 16).
    fusion_warmup_epochs: epochs during which the `fuse` term is multiplied by 0 (authors: 20).
    prm_supervision: "upsample" (authors: probability maps upsampled trilinearly to the target)
        or "downsample" (the target subsampled, nearest, to each stage; cheaper).
    checkpointing: recompute each encoder, decoder and fusion stage in the backward pass instead
        of keeping its activations (less memory, a slower step).
    """

    base_channels: int = 16
    depth: int = 4
    padding_mode: str = "reflect"
    fusion_hidden: int = 128
    prm_hidden: int = 16
    fusion_warmup_epochs: int = 20
    prm_supervision: str = "upsample"
    checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.base_channels < 2 or self.depth < 2:
            raise ConfigError("rfnet needs base_channels >= 2 and depth >= 2")
        if self.prm_supervision not in ("upsample", "downsample"):
            raise ConfigError(f"model.prm_supervision={self.prm_supervision!r}: "
                              "expected upsample or downsample")


class RegionProbabilityGenerator(nn.Module):
    """PRM: class logits of one stage from the concatenated (masked) modality features.

    features (B, M, C, *S) -> bottleneck embedding (C channels), concatenated with the decoder's
    feature at this stage when there is one (`decoder_channels` > 0; not at the deepest stage),
    -> 1x1x1 ConvNormAct to `hidden` -> 1x1x1 conv to the class logits.
    """

    def __init__(self, channels: int, num_modalities: int, num_classes: int,
                 decoder_channels: int = 0, hidden: int = 16, padding_mode: str = "reflect"):
        super().__init__()
        self.embed = conv_bottleneck(num_modalities * channels, max(1, channels // 4), channels,
                                     padding_mode)
        self.head = nn.Sequential(ConvNormAct(channels + decoder_channels, hidden, kernel_size=1),
                                  nn.Conv3d(hidden, num_classes, kernel_size=1))

    def forward(self, features: Tensor, decoder: Tensor | None = None) -> Tensor:
        x = self.embed(features.flatten(1, 2))
        if decoder is not None:
            x = torch.cat((decoder, x), dim=1)
        return self.head(x)


class RegionModalityAttention(nn.Module):
    """The weight of each modality inside one region: sigmoid(MLP([pooled, mass])).

    pooled: each modality's features averaged over the region (sum of f * p / sum of p);
    mass: the region's mean probability. Weights of unavailable modalities are 0.
    """

    def __init__(self, channels: int, num_modalities: int, hidden: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(num_modalities * channels + 1, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, num_modalities))

    def forward(self, features: Tensor, region: Tensor, available: Tensor) -> Tensor:
        """features (B, M, C, *S), region (B, *S) probabilities, available (B, M) -> (B, M)."""
        flat = region.flatten(1)
        mass = flat.mean(1, keepdim=True) + 1e-7
        pooled = torch.einsum("bmcv,bv->bmc", features.flatten(3), flat) / flat.shape[1]
        weights = torch.sigmoid(self.mlp(torch.cat((pooled.flatten(1) / mass, mass), dim=1)))
        return torch.where(available, weights, torch.zeros((), dtype=weights.dtype,
                                                           device=weights.device))


class RegionAwareFusion(nn.Module):
    """RFM fusion: modality features -> C fused channels, given class probability maps.

    For each region r (class), the modalities' features weighted by p_r are summed with the
    region's modality weights: p_r * sum_m w_rm f_m. The regions are concatenated and merged to
    C // 2 channels; a shortcut from the concatenated modality features gives the other half.
    """

    def __init__(self, channels: int, num_modalities: int, num_classes: int, hidden: int = 128,
                 padding_mode: str = "reflect"):
        super().__init__()
        half = channels // 2
        self.attention = nn.ModuleList(RegionModalityAttention(channels, num_modalities, hidden)
                                       for _ in range(num_classes))
        self.region_merge = conv_bottleneck(num_classes * channels, channels, half, padding_mode)
        self.shortcut = conv_bottleneck(num_modalities * channels, channels, channels - half,
                                        padding_mode)

    def forward(self, features: Tensor, probs: Tensor, available: Tensor) -> Tensor:
        """features (B, M, C, *S) with unavailable modalities zeroed, probs (B, N, *S),
        available (B, M) bool -> (B, C, *S)."""
        regions = []
        for r, attention in enumerate(self.attention):
            region = probs[:, r]
            weights = attention(features, region, available)
            regions.append(region.unsqueeze(1)
                           * torch.einsum("bm,bmc...->bc...", weights, features))
        merged = self.region_merge(torch.cat(regions, dim=1))
        return torch.cat((merged, self.shortcut(features.flatten(1, 2))), dim=1)


class FusionOutput(NamedTuple):
    logits: Tensor
    probs: list[Tensor]
    bottleneck: Tensor


class RegionFusionDecoder(nn.Module):
    """RFM at every stage + the U-Net decoder whose skips are the RFM outputs.

    Returns the logits, every stage's PRM probabilities (shallow to deep) and the deepest fused
    feature (DC-Seg's z). The RFM sees the probabilities detached, as in the authors' code: the
    PRMs learn from the `prm` term only.
    """

    def __init__(self, num_modalities: int, num_classes: int, base_channels: int = 16,
                 depth: int = 4, fusion_hidden: int = 128, prm_hidden: int = 16,
                 padding_mode: str = "reflect"):
        super().__init__()
        channels = stage_channels(base_channels, depth)
        self.prms = nn.ModuleList(
            RegionProbabilityGenerator(c, num_modalities, num_classes,
                                       decoder_channels=0 if s == depth - 1 else c,
                                       hidden=prm_hidden, padding_mode=padding_mode)
            for s, c in enumerate(channels))
        self.fusions = nn.ModuleList(
            RegionAwareFusion(c, num_modalities, num_classes, fusion_hidden, padding_mode)
            for c in channels)
        self.ups = nn.ModuleList(UpBlock(channels[s + 1], channels[s], padding_mode=padding_mode)
                                 for s in range(depth - 1))
        self.head = nn.Conv3d(base_channels, num_classes, kernel_size=1)
        self.checkpointing = False  # `model.checkpointing`: recompute each stage in backward

    def forward(self, features: list[Tensor], available: Tensor) -> FusionOutput:
        """features: per stage (B, M, C, *S), unavailable modalities zeroed; available (B, M)."""
        x, prob = maybe_checkpoint(self.checkpointing, self._deepest, features[-1], available)
        probs, bottleneck = [prob], x
        for s in reversed(range(len(self.ups))):
            x, prob = maybe_checkpoint(self.checkpointing, self._stage(s), x, features[s],
                                       available)
            probs.insert(0, prob)
        return FusionOutput(self.head(x), probs, bottleneck)

    def _deepest(self, features: Tensor, available: Tensor) -> tuple[Tensor, Tensor]:
        prob = torch.softmax(self.prms[-1](features), dim=1)
        return self.fusions[-1](features, prob.detach(), available), prob

    def _stage(self, s: int):
        """Decoder stage s: (x from below, stage features, available) -> (x, stage probs)."""
        def run(x: Tensor, features: Tensor, available: Tensor) -> tuple[Tensor, Tensor]:
            up = self.ups[s].up(x)
            prob = torch.softmax(self.prms[s](features, up), dim=1)
            return self.ups[s].merge(self.fusions[s](features, prob.detach(), available), up), prob
        return run


def ce_dice(probs: Tensor, target: Tensor) -> Tensor:
    """RFNet's segmentation loss: weighted cross-entropy + soft Dice (background included)."""
    return weighted_cross_entropy(probs, target) + soft_dice_loss_from_probs(probs, target)


@register("rfnet", RFNetConfig)
class RFNet(Method):
    """RFNet (Ding, Yu, Yang, "RFNet: Region-aware Fusion Network for Incomplete Multi-modal
    Brain Tumor Segmentation", ICCV 2021), checked against the authors' code (dyh127/RFNet:
    models.py, layers.py, train.py, job.sh).

    Implements Sec. 3 of the paper: modality-specific encoders; the Region-aware Fusion Module
    at each stage (probabilistic region-map generator, region-wise modality attention, region
    merge + shortcut); the fusion decoder; the segmentation-based regulariser (a weight-shared
    decoder per modality); and the objective L = L_fuse + L_sep + L_prm, each term weighted
    cross-entropy + Dice (terms `fuse`, `sep`, `prm`, unweighted here; weights in the config).
    Equation numbers are not cited: the paper's text was not at hand, the code was.

    Normalisations (as the authors): `sep` is the SUM over modalities of each modality's loss,
    `prm` the SUM over the stages; CE is a plain voxel mean, Dice a batch Dice over all classes.

    Divergences from the authors' code, none changing the function unless stated:
    - no conv bias before InstanceNorm (affine-free IN cancels it: a dead parameter);
    - missing modalities' features are selected away with `torch.where` (NaN-safe) instead of
      index assignment; their attention weights are also set to 0 (their features are 0);
    - RFM computes p_r * sum_m w_rm f_m and pools with einsum instead of materialising
      f_m * p_r for every region and modality (same values, less memory); the attention MLP is
      `nn.Linear` instead of 1x1x1 convs on the pooled vector;
    - CHANGED: `sep` runs only on (sample, modality) pairs in `batch.present` (the authors'
      BraTS data is always complete), and images of non-present modalities are zeroed before
      the encoders; a modality's loss is over the samples where it is present;
    - `prm_supervision="downsample"` (not the default) compares each stage's maps with the
      subsampled target instead of upsampling the maps to full resolution;
    - modalities, classes, base width, depth and MLP widths are configurable; the output is
      logits (the contract), the losses apply the softmax; modality order follows the data.
    - the shared `sep` decoder runs once on every (sample, modality) pair as one batch, not
      once per modality;
    - `checkpointing` recomputes stages in the backward pass (memory for time).
    The warm-up of `fuse` (20 epochs, the authors' job.sh; train.py's default is 100) returns
    `fuse * 0`, so the logged `fuse` is 0 during warm-up.
    """

    spatial = "3d"
    loss_terms = ("fuse", "sep", "prm")

    def __init__(self, modalities, num_classes, config: RFNetConfig, loss_weights=None):
        super().__init__(modalities, num_classes, loss_weights)
        self.config = config
        shape = dict(base_channels=config.base_channels, depth=config.depth,
                     padding_mode=config.padding_mode)
        self.encoders = nn.ModuleList(ModalityEncoder(1, **shape) for _ in self.modalities)
        self.fusion = RegionFusionDecoder(self.num_modalities, num_classes, **shape,
                                          fusion_hidden=config.fusion_hidden,
                                          prm_hidden=config.prm_hidden)
        self.separate = SegmentationDecoder(num_classes, **shape)
        for part in (*self.encoders, self.fusion, self.separate):
            part.checkpointing = config.checkpointing
        kaiming_init(self)

    @property
    def size_divisor(self) -> int:
        """Spatial sizes must be multiples of this (one halving per stage below the first)."""
        return 2 ** (self.config.depth - 1)

    def encode(self, images: Tensor) -> list[Tensor]:
        """(B, M, *S) -> per stage, every modality's features (B, M, C, *S')."""
        per_modality = [encoder(images[:, m:m + 1]) for m, encoder in enumerate(self.encoders)]
        return [torch.stack(stage, dim=1) for stage in zip(*per_modality, strict=True)]

    def decode(self, encoded: list[Tensor], available: Tensor) -> Tensor:
        """Logits (K, C, *S) for availability rows (K, M); features of batch 1 broadcast, so
        one window encoded once is decoded for K subsets at a time."""
        return self._fuse(encoded, available).logits

    def forward(self, images: Tensor, available: Tensor) -> Tensor:
        return self.decode(self.encode(mask_missing(images, available)), available)

    def _fuse(self, encoded: list[Tensor], available: Tensor) -> FusionOutput:
        available = available.to(torch.bool)
        return self.fusion([mask_missing(f, available) for f in encoded], available)

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        return self._fusion_losses(mask_missing(batch.images, batch.present), batch)[2]

    def _fusion_losses(self, images: Tensor, batch: Batch
                       ) -> tuple[list[Tensor], FusionOutput, dict[str, Tensor]]:
        """Encode `images` (absent modalities zeroed), fuse under `batch.available`: the
        features, the fusion output and the terms `fuse` (x 0 during the warm-up), `sep`, `prm`."""
        encoded = self.encode(images)
        fused = self._fuse(encoded, batch.available)
        fuse = ce_dice(torch.softmax(fused.logits.float(), dim=1), batch.target)
        if batch.epoch < self.config.fusion_warmup_epochs:
            fuse = fuse * 0.0  # keeps the graph (every parameter used), contributes nothing
        return encoded, fused, {
            "fuse": fuse, "sep": self._separate_loss(encoded, batch.present, batch.target),
            "prm": self._prm_loss(fused.probs, batch.target)}

    def _separate_loss(self, encoded: list[Tensor], present: Tensor, target: Tensor) -> Tensor:
        """Sum over modalities of the shared decoder's loss on the samples where it is present."""
        pairs = present.to(torch.bool).T  # (M, B): the decoder runs once on every present pair
        logits = self.separate([f.transpose(0, 1)[pairs] for f in encoded])
        targets = target.expand(self.num_modalities, *target.shape)[pairs]
        counts = pairs.sum(1).tolist()
        total = logits.new_zeros((), dtype=torch.float32)
        for part, truth in zip(logits.split(counts), targets.split(counts), strict=True):
            if len(part):
                total = total + ce_dice(torch.softmax(part.float(), dim=1), truth)
        return total

    def _prm_loss(self, probs: list[Tensor], target: Tensor) -> Tensor:
        """Sum over stages of the loss of each stage's probability maps (deep supervision)."""
        total = probs[0].new_zeros((), dtype=torch.float32)
        for stage, p in enumerate(probs):
            truth = target
            if stage and self.config.prm_supervision == "upsample":
                p = F.interpolate(p.float(), size=target.shape[1:], mode="trilinear",
                                  align_corners=True)
            elif stage:
                step = 2**stage
                truth = target[(slice(None), *[slice(None, None, step)] * (target.ndim - 1))]
            total = total + ce_dice(p, truth)
        return total
