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
from contraseg.models.blocks import conv_relu, maybe_checkpoint, upsample2
from contraseg.models.registry import register
from contraseg.models.rfb import RecalibrationBlock, ReleasedRecalibrationBlock


@dataclass
class DCLMANetConfig:
    """Settings of `dcl-manet`: "authors" marks the released code's value (Ayices/DCLMANet; the
    paper's text gives few), ASSUMED what neither gives. Two defaults are NOT the authors':
    `rfb_variant="pairwise"` and `ce_on_probabilities=False`, the values of checkpoints that
    do not record these keys (so they load as trained); every preset sets the released
    "released" and True.

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
    rfb_variant: "released" (the authors' `Modal_Attention` / `MPABlock`: per-input 1x1
        projections, one attention block per primary modality shared by its pairs, the value
        from the primary, a C-channel GroupNorm gate, Swish, LayerNorm) or "pairwise" (a reading
        of APAUNet: one block per ordered pair, the value from the other modality; the
        default, for checkpoints that do not record the key).
    rfb_groups: "released": channels per GroupNorm group of the gate (share_planes, 8);
        "pairwise": groups of channels sharing one attention weight per position (8).
    rfb_hidden: "pairwise" only: width of the split-attention MLP (None: max(C / 2, 32)).
    ce_on_probabilities: the released code's cross-entropy on the softmax OUTPUTS (its network
        ends in a softmax and its loss's cross-entropy applies another); False: on the logits.
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
    rfb_variant: str = "pairwise"
    rfb_groups: int = 8
    rfb_hidden: int | None = None
    ce_on_probabilities: bool = False
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
        if self.rfb_variant not in ("released", "pairwise"):
            raise ConfigError(f"model.rfb_variant={self.rfb_variant!r}: expected 'released' "
                              "or 'pairwise'")
        if self.dcl_temperature <= 0:
            raise ConfigError(f"model.dcl_temperature={self.dcl_temperature}: must be > 0")
        if self.rfb_variant == "released":
            self._check_released_rfb()

    def _check_released_rfb(self) -> None:
        """The released gate's GroupNorm needs C / rfb_groups groups to divide every width C."""
        if self.rfb_hidden is not None:
            raise ConfigError("model.rfb_hidden applies to rfb_variant=pairwise only")
        if self.rfb_groups < 1:
            raise ConfigError(f"model.rfb_groups={self.rfb_groups}: must be >= 1")
        for width in self.widths():
            groups = max(width // self.rfb_groups, 1)
            if width % groups:
                raise ConfigError(f"model.rfb_groups={self.rfb_groups}: {groups} GroupNorm "
                                  f"groups do not divide {width} channels (released RFB)")

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


class PlainModalityEncoder(nn.Module):
    """One modality's encoder: per level [max-pool 2x except the first] + 2 x conv_relu.
    Returns every level's features, shallow to deep."""

    def __init__(self, widths: list[int]):
        super().__init__()
        inputs = [1, *widths[:-1]]
        self.levels = nn.ModuleList(
            nn.Sequential(conv_relu(c_in, c_out), conv_relu(c_out, c_out))
            for c_in, c_out in zip(inputs, widths, strict=True))
        self.checkpointing = False

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for level, block in enumerate(self.levels):
            x = maybe_checkpoint(self.checkpointing, block, F.max_pool3d(x, 2) if level else x)
            features.append(x)
        return features


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
    hand; the structure follows the authors' released code (Ayices/DCLMANet).

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

    The released DCL (authors' code models/M_3D/FusionTry_3D.py `EmbeddingContrasiveLoss_APA`)
    differs in form: with c_kl the cosine of items k, l at a position, K = 4B items and S_m
    the B items of modality m, it computes
        L = 1/(4N) sum_n sum_m -(1/B^2) log([sum_{k,l in S_m} e^{c_kl/t} + (K^2 - B^2)]
                                            / sum_{k,l} e^{c_kl/t}),
    self-pairs in the numerator and the denominator, the masked-out pairs entering as e^0 = 1
    (the K^2 - B^2), one log of summed positives per modality, divided by B^2. contraseg uses
    the supervised-contrastive form above (a mean over anchors of per-anchor log-ratios, self
    pairs excluded), which is what the paper's "dense contrastive learning" names; the
    released term is not in the released objective (train.py: loss = loss_dice + loss_cross).

    RFB (`rfb_variant`): "released" (the presets) is the authors' `Modal_Attention` /
    `MPABlock` (`ReleasedRecalibrationBlock`, `MPABlock`): per-input 1x1 conv + IN + ReLU
    projections, one attention block per primary modality shared by its M - 1 pairs, the value
    taken from the primary, a C-channel gate normalised by GroupNorm(C / 8 groups), Swish,
    LayerNorm in the split-attention MLP, softmax(beta) pair weights, the raw primary added.
    Divergences: unavailable modalities leave the pair softmax (the released code always has
    all four); the M - 1 pairs of a primary run as one batch (exact: every norm is per
    sample). "pairwise" (checkpoints without the key) is `RecalibrationBlock` /
    `PairwiseModalityAttention`. The released attention runs on the 3D bottleneck itself, as here.

    Objective: `ce_on_probabilities` (every preset) applies the cross-entropy to the softmax
    outputs, as the released network (it ends in nn.Softmax) and its loss (a cross-entropy
    that applies its own softmax, Init/utils.py) do: a double softmax. The Dice is on softmax
    probabilities either way.

    Missing modalities (not addressed by the paper): unavailable modalities' features are
    zeroed before the RFB and the decoder, and the engine trains with modality dropout, so one
    model serves the 15-subset protocol. The DCL terms use every modality present in the data
    (also those dropped for the segmentation path), as DC-Seg's contrastive terms do.
    Other divergences: no conv bias before InstanceNorm (it cancels); the class weights are
    normalised by their sum in the Dice (0.01 + 3 x 0.33 = 1: no change) and cross-entropy
    is PyTorch's weighted mean; the output is logits (the contract); `checkpointing`
    recomputes levels in the backward pass.
    """

    spatial = "3d"
    loss_terms = ("dice", "ce", "dcl_specific", "dcl_common")

    def __init__(self, modalities, num_classes, config: DCLMANetConfig, loss_weights=None):
        super().__init__(modalities, num_classes, loss_weights)
        self.config = config
        widths = config.widths()
        self.encoders = nn.ModuleList(PlainModalityEncoder(widths) for _ in self.modalities)
        self.rfb = self._recalibration(widths[-1]) if config.rfb else None
        self.decoder = ConcatSkipDecoder([w * self.num_modalities for w in widths], num_classes)
        for part in (*self.encoders, self.decoder):
            part.checkpointing = config.checkpointing
        self.register_buffer("class_weights",
                             torch.tensor(config.weights_of_classes(num_classes)),
                             persistent=False)

    def _recalibration(self, channels: int) -> nn.Module | None:
        if self.num_modalities < 2:
            return None
        if self.config.rfb_variant == "released":
            return ReleasedRecalibrationBlock(channels, self.num_modalities,
                                              self.config.rfb_groups)
        return RecalibrationBlock(channels, self.num_modalities, self.config.rfb_groups,
                                  self.config.rfb_hidden)

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
        per_modality = [encoder(images[:, m:m + 1]) for m, encoder in enumerate(self.encoders)]
        return [torch.stack(level, dim=1) for level in zip(*per_modality, strict=True)]

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
                 "ce": F.cross_entropy(self._ce_input(logits), batch.target,
                                       weight=self.class_weights)}
        return terms | self._dcl_losses(encoded[-1], batch.present.to(torch.bool))

    def _ce_input(self, logits: Tensor) -> Tensor:
        """What the cross-entropy takes as its logits: the softmax probabilities themselves
        (`ce_on_probabilities`, the released code's double softmax) or the logits."""
        return torch.softmax(logits, dim=1) if self.config.ce_on_probabilities else logits

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
