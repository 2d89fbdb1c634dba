"""`dcl-manet`: dense contrastive learning + modality-wise feature recalibration (DCL-MANet).

One plain U-Net encoder per modality, dense contrastive learning (DCL) on the bottleneck
features, a feature recalibration block (RFB) in which each modality's bottleneck is
recalibrated by attention against every other modality, and one decoder fed by the
concatenated per-modality skips. The reusable pieces (`PlainModalityEncoder`,
`PairwiseModalityAttention`, `RecalibrationBlock`, `ConcatSkipDecoder`) are public.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contraseg.errors import ConfigError
from contraseg.losses.contrastive import dense_info_nce, item_labels, same_label
from contraseg.losses.segmentation import soft_dice_loss
from contraseg.models.base import Batch, Method, mask_missing
from contraseg.models.blocks import (
    ConvNormAct,
    GroupedModalityEncoders,
    maybe_checkpoint,
    upsample2,
)
from contraseg.models.registry import register


@dataclass
class DCLMANetConfig:
    """Settings of `dcl-manet` (paper values unless marked ASSUMED).

    modality_channels: first-level width of each modality's encoder, doubled per level
        (authors: 4, i.e. 4/8/16/32/64 over 5 levels; "base 16" for 4 modalities).
    depth: encoder levels (authors: 5; each but the first starts with a 2x max-pooling).
    background_weight: Dice and cross-entropy weight of the background; the other classes
        share the rest equally (authors: 0.01, and 0.33 for each of the 3 tumour classes).
    class_weights: explicit weights of every class, background first (overrides the above).
    dcl_temperature: the InfoNCE temperature (authors: 0.7).
    dcl_specific_fraction: share of the bottleneck channels the modality-specific term acts
        on; the common term acts on the rest (ASSUMED 0.5: the paper names both kinds of
        feature, the released code has only the specific term on all channels).
    rfb: build the feature recalibration block (False: the "no RFB" ablation; the bottleneck
        features go to the decoder as they are).
    rfb_groups: groups of channels sharing one attention weight per position (APAUNet: 8).
    rfb_hidden: width of the split-attention MLP (APAUNet: max(C / 2, 32)); None = that rule.
    checkpointing: recompute each encoder and decoder level in the backward pass instead of
        keeping its activations (less memory, a slower step).
    """

    modality_channels: int = 4
    depth: int = 5
    background_weight: float = 0.01
    class_weights: list[float] | None = None
    dcl_temperature: float = 0.7
    dcl_specific_fraction: float = 0.5
    rfb: bool = True
    rfb_groups: int = 8
    rfb_hidden: int | None = None
    checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.modality_channels < 1 or self.depth < 2:
            raise ConfigError("dcl-manet needs model.modality_channels >= 1 and depth >= 2")
        if not 0.0 < self.dcl_specific_fraction < 1.0:
            raise ConfigError(f"model.dcl_specific_fraction={self.dcl_specific_fraction}: "
                              "expected a value strictly between 0 and 1")
        if not 0.0 <= self.background_weight < 1.0:
            raise ConfigError(f"model.background_weight={self.background_weight}: expected a "
                              "value in [0, 1)")
        if self.dcl_temperature <= 0:
            raise ConfigError(f"model.dcl_temperature={self.dcl_temperature}: must be > 0")

    def widths(self) -> list[int]:
        return [self.modality_channels * 2**level for level in range(self.depth)]

    def weights_of_classes(self, num_classes: int) -> list[float]:
        if self.class_weights is None:
            rest = (1.0 - self.background_weight) / max(num_classes - 1, 1)
            return [self.background_weight] + [rest] * (num_classes - 1)
        if len(self.class_weights) != num_classes:
            raise ConfigError(f"model.class_weights has {len(self.class_weights)} values, "
                              f"the labels have {num_classes} classes")
        return list(self.class_weights)


def conv_relu(in_channels: int, out_channels: int, kernel_size: int = 3,
              groups: int = 1) -> ConvNormAct:
    """conv3^3 (zero padding) + InstanceNorm + ReLU: the authors' unit."""
    return ConvNormAct(in_channels, out_channels, kernel_size, padding_mode="zeros",
                       negative_slope=0.0, groups=groups)


class PlainModalityEncoder(nn.Module):
    """One modality's encoder: per level [max-pool 2x except the first] + 2 x conv_relu.
    Returns every level's features, shallow to deep. `groups` G: G encoders side by side as one
    network of grouped convolutions (`GroupedModalityEncoders`)."""

    def __init__(self, widths: list[int], groups: int = 1):
        super().__init__()
        widths = [groups * w for w in widths]
        inputs = [groups, *widths[:-1]]
        self.levels = nn.ModuleList(
            nn.Sequential(conv_relu(c_in, c_out, groups=groups),
                          conv_relu(c_out, c_out, groups=groups))
            for c_in, c_out in zip(inputs, widths, strict=True))
        self.checkpointing = False

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for level, block in enumerate(self.levels):
            x = maybe_checkpoint(self.checkpointing, block, F.max_pool3d(x, 2) if level else x)
            features.append(x)
        return features


class PairwiseModalityAttention(nn.Module):
    """Recalibrates a primary modality's feature with an attended one computed from another
    modality (APAUNet's attention layer between a primary map and a second map, in 3D).

    key = conv3(other); per-position weights w = conv1(ReLU(IN(conv1([primary, key])))) in
    `groups` channels; attended = ReLU(IN(w * value(other))) with w shared by each group's
    channels; then split attention (radix 2, ResNeSt): a = softmax over {primary, attended} of
    MLP(mean over space of primary + attended), per channel; out = a_0 primary + a_1 attended.
    """

    def __init__(self, channels: int, groups: int = 8, hidden: int | None = None):
        super().__init__()
        groups = max(1, min(groups, channels))
        while channels % groups:
            groups -= 1
        self.groups = groups
        hidden = hidden or max(channels // 2, 32)
        self.key = conv_relu(channels, channels)
        self.weight = nn.Sequential(conv_relu(2 * channels, max(channels // 2, 1), kernel_size=1),
                                    nn.Conv3d(max(channels // 2, 1), groups, kernel_size=1))
        self.value = nn.Conv3d(channels, channels, kernel_size=1, bias=False)
        self.attended_norm = nn.Sequential(nn.InstanceNorm3d(channels), nn.ReLU())
        self.split = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(),
                                   nn.Linear(hidden, 2 * channels))

    def split_weights(self, primary: Tensor, attended: Tensor) -> Tensor:
        """(B, C, 2) softmax weights of primary and attended, per channel (they sum to 1)."""
        pooled = (primary + attended).flatten(2).mean(2)  # (B, C)
        logits = self.split(pooled).view(primary.shape[0], 2, -1).transpose(1, 2)
        return torch.softmax(logits, dim=2)

    def forward(self, primary: Tensor, other: Tensor) -> Tensor:
        b, c = primary.shape[:2]
        w = self.weight(torch.cat((primary, self.key(other)), dim=1))  # (B, G, *S)
        value = self.value(other).view(b, self.groups, c // self.groups, *other.shape[2:])
        attended = self.attended_norm((w.unsqueeze(2) * value).view_as(other))
        a = self.split_weights(primary, attended)
        shape = (b, c, *[1] * (primary.ndim - 2))
        return a[..., 0].view(shape) * primary + a[..., 1].view(shape) * attended


class RecalibrationBlock(nn.Module):
    """RFB: modality i's feature becomes f_i + sum_{j != i} beta_ij PMA_ij(f_i, f_j).

    One `PairwiseModalityAttention` per ordered pair (i, j); beta_i. = softmax over the
    available j != i of learnable logits (initialised equal), so the weights of each modality
    sum to 1. An unavailable modality takes part in no pair and its output stays 0.
    """

    def __init__(self, channels: int, num_modalities: int, groups: int = 8,
                 hidden: int | None = None):
        super().__init__()
        self.num_modalities = num_modalities
        self.pairs = nn.ModuleList(
            PairwiseModalityAttention(channels, groups, hidden)
            for _ in range(num_modalities * (num_modalities - 1)))
        self.pair_logits = nn.Parameter(torch.zeros(num_modalities, num_modalities))

    def pair_weights(self, available: Tensor) -> Tensor:
        """(B, M) bool -> (B, M, M) beta: the row of an available modality i sums to 1 over
        the available j != i; rows of unavailable modalities, or with no other, are 0."""
        m = self.num_modalities
        eye = torch.eye(m, dtype=torch.bool, device=available.device)
        allowed = available[:, :, None] & available[:, None, :] & ~eye  # (B, M, M)
        logits = self.pair_logits.float().expand(available.shape[0], m, m)
        logits = logits.masked_fill(~allowed, torch.finfo(torch.float32).min)
        return torch.softmax(logits, dim=2) * allowed

    def forward(self, features: Tensor, available: Tensor) -> Tensor:
        """features (B, M, C, *S) with unavailable modalities zeroed, available (B, M) bool."""
        beta = self.pair_weights(available)
        outputs = []
        pair = iter(self.pairs)
        for i in range(self.num_modalities):
            recalibrated = features[:, i]
            for j in range(self.num_modalities):
                if j != i:
                    weight = beta[:, i, j].view(-1, *[1] * (features.ndim - 2))
                    recalibrated = recalibrated + weight.to(features.dtype) * next(pair)(
                        features[:, i], features[:, j])
            outputs.append(recalibrated)
        return mask_missing(torch.stack(outputs, dim=1), available)


class ConcatSkipDecoder(nn.Module):
    """One decoder over the concatenated modalities: per level, trilinear 2x upsampling +
    conv_relu to the level's width, concatenation with the level's skip, 2 x conv_relu."""

    def __init__(self, widths: list[int], num_classes: int):
        super().__init__()
        self.ups = nn.ModuleList(conv_relu(widths[level + 1], widths[level])
                                 for level in range(len(widths) - 1))
        self.merges = nn.ModuleList(
            nn.Sequential(conv_relu(2 * widths[level], widths[level]),
                          conv_relu(widths[level], widths[level]))
            for level in range(len(widths) - 1))
        self.head = nn.Conv3d(widths[0], num_classes, kernel_size=1)
        self.checkpointing = False  # `model.checkpointing`

    def forward(self, skips: list[Tensor], bottleneck: Tensor) -> Tensor:
        x = bottleneck
        for level in reversed(range(len(self.ups))):
            x = maybe_checkpoint(self.checkpointing, self._level(level), x, skips[level])
        return self.head(x)

    def _level(self, level: int):
        def run(x: Tensor, skip: Tensor) -> Tensor:
            return self.merges[level](torch.cat((skip, self.ups[level](upsample2(x))), dim=1))
        return run


@register("dcl-manet", DCLMANetConfig)
class DCLMANet(Method):
    """DCL-MANet (Phys. Med. Biol. 69 (2024) 095016, "Glioma segmentation based on dense
    contrastive learning and multimodal features recalibration"). Only the abstract was at
    hand; the structure follows the authors' released code as the issue summarises it.

    Implements: per-modality encoders (5 levels of 2 x [conv3 + InstanceNorm + ReLU], max
    pooling, widths 4/8/16/32/64 each); DCL on the bottleneck; the RFB; one decoder on the
    concatenated per-modality skips; softmax output. Objective (terms, weights in the config):
    `dice` (class-weighted soft Dice) + `ce` (class-weighted cross-entropy) + `dcl_specific` +
    `dcl_common` (lambda = their weights).

    Dense contrastive learning (`contraseg.losses.contrastive.dense_info_nce`): at every
    bottleneck position the C-vectors of all (sample, modality) items of the batch are compared
    by cosine similarity, InfoNCE with temperature 0.7.
    - `dcl_specific`: positives = the same modality in the other samples (the released code's
      term), on the first `dcl_specific_fraction` of the channels;
    - `dcl_common`: positives = the other modalities of the same sample (same subject and
      position), on the remaining channels.
    CHANGED from the released code, which computes only the specific term, on all channels,
    and leaves it out of the final loss: the paper says DCL extracts "modality-specific and
    common features", so both terms are built and weighted (ASSUMED lambda = 0.1 each in the
    presets; the paper's value was not at hand). `loss_weights.dcl_*=0` gives the code's loss.

    RFB: see `RecalibrationBlock` / `PairwiseModalityAttention`. Divergences from APAUNet's
    layer: the attention runs on the 3D bottleneck itself, not on its three axis projections
    (the bottleneck is 8^3 at 128^3 patches); the split-attention MLP has no BatchNorm (batches
    of 2); the attended map is used (APAUNet's transposed layer computes and drops it).

    Missing modalities (not addressed by the paper): unavailable modalities' features are
    zeroed before the RFB and the decoder, and the engine trains with modality dropout, so one
    model serves the 15-subset protocol. The DCL terms use every modality present in the data
    (also those dropped for the segmentation path), as DC-Seg's contrastive terms do.
    Other divergences: no conv bias before InstanceNorm (it cancels); the class weights are
    normalised by their sum in the Dice (0.01 + 3 x 0.33 = 1: no change) and cross-entropy
    is PyTorch's weighted mean; the output is logits (the contract); the M encoders run as one
    network of grouped convolutions (the same function; checkpoints of the separate
    `encoders.<m>.` layout load); `checkpointing` recomputes levels in the backward pass.
    """

    spatial = "3d"
    loss_terms = ("dice", "ce", "dcl_specific", "dcl_common")

    def __init__(self, modalities, num_classes, config: DCLMANetConfig, loss_weights=None):
        super().__init__(modalities, num_classes, loss_weights)
        self.config = config
        widths = config.widths()
        self.encoder = GroupedModalityEncoders(
            PlainModalityEncoder(widths, groups=self.num_modalities), self.num_modalities)
        self.rfb = (RecalibrationBlock(widths[-1], self.num_modalities, config.rfb_groups,
                                       config.rfb_hidden)
                    if config.rfb and self.num_modalities > 1 else None)
        self.decoder = ConcatSkipDecoder([w * self.num_modalities for w in widths], num_classes)
        self.encoder.net.checkpointing = self.decoder.checkpointing = config.checkpointing
        self.register_buffer("class_weights",
                             torch.tensor(config.weights_of_classes(num_classes)),
                             persistent=False)

    @property
    def size_divisor(self) -> int:
        return 2 ** (self.config.depth - 1)

    @classmethod
    def batch_size_needed(cls, loss_weights: dict[str, float]) -> int:
        """Both DCL terms need another sample for their positives or negatives."""
        on = any(loss_weights.get(term, 1.0) for term in ("dcl_specific", "dcl_common"))
        return 2 if on else 1

    def encode(self, images: Tensor) -> list[Tensor]:
        """(B, M, *S) -> per level, every modality's features (B, M, C, *S')."""
        return self.encoder(images)

    def decode(self, encoded: list[Tensor], available: Tensor) -> Tensor:
        """Logits for availability rows (K, M); features of batch 1 broadcast over K."""
        available = available.to(torch.bool)
        features = [mask_missing(f, available) for f in encoded]
        bottleneck = features[-1]
        if self.rfb is not None:
            bottleneck = self.rfb(bottleneck, available)
        return self.decoder([f.flatten(1, 2) for f in features[:-1]], bottleneck.flatten(1, 2))

    def forward(self, images: Tensor, available: Tensor) -> Tensor:
        return self.decode(self.encode(mask_missing(images, available)), available)

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        encoded = self.encode(mask_missing(batch.images, batch.present))
        logits = self.decode(encoded, batch.available).float()
        terms = {"dice": soft_dice_loss(logits, batch.target, class_weights=self.class_weights),
                 "ce": F.cross_entropy(logits, batch.target, weight=self.class_weights)}
        return terms | self._dcl_losses(encoded[-1], batch.present.to(torch.bool))

    def _dcl_losses(self, bottleneck: Tensor, present: Tensor) -> dict[str, Tensor]:
        """The two dense InfoNCE terms on the bottleneck (B, M, C, *S); 0 when weighted 0."""
        b, m, c = bottleneck.shape[:3]
        items = bottleneck.flatten(0, 1)  # (B M, C, *S), k = sample * M + modality
        subjects, modalities = item_labels(b, m, items.device)
        split = max(1, min(c - 1, round(c * self.config.dcl_specific_fraction)))
        parts = {"dcl_specific": (items[:, :split], same_label(modalities)),
                 "dcl_common": (items[:, split:], same_label(subjects))}
        terms = {}
        for name, (features, positive) in parts.items():
            if self.loss_weights[name]:
                terms[name] = dense_info_nce(features, positive, present.flatten(),
                                             self.config.dcl_temperature)
            else:
                terms[name] = items.new_zeros((), dtype=torch.float32)
        return terms
