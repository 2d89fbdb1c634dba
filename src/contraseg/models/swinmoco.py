"""`swin-moco`: MoCo v3 pre-training of a Swin encoder, then a Swin-Unet fine-tuned on labels.

Xu, Dai et al., "Segmentation of Parotid Gland Tumors Using Multimodal MRI and Contrastive
Learning" (paper 001, summary only) and its journal version "Swin MoCo"; MoCo v3 is Chen, Xie
& He, "An Empirical Study of Training Self-Supervised Vision Transformers" (ICCV 2021).

- `swin-moco-pretrain` (`contraseg pretrain --method swin-moco`): unlabeled 2D slices, the
  modalities stacked as channels; two augmented views (rotation +-10 degrees, random resized
  crop of 8-100 % of the area, flip, Gaussian blur in every first view and one second view in
  ten, intensity scale/shift); a Swin encoder (`models.swin.SwinEncoder2d`, global average
  pooled) with a 3-layer projector (hidden 4096, out 256, BN, last BN without affine) and a
  2-layer predictor (ending in the same BN in the authors' code: `predictor_last_bn`); a
  momentum copy of encoder + projector (m from 0.99 to 1 on a half cosine, updated after
  every optimiser step); loss `moco` = ctr(q1, k2) + ctr(q2, k1), ctr = cross-entropy of
  cosine / T against the matching key, times 2T (T = 1).
- `swin-moco` (`contraseg train --method swin-moco`): a Swin-Unet (the same encoder, a
  symmetric Swin decoder with patch expanding and skips); `--init RUN` starts the encoder from
  a pre-training run (or a timm / torchvision Swin-T state dict) and, with
  `model.decoder_from_encoder`, every decoder stage's Swin blocks from the mirrored encoder
  stage (the journal version's way of letting pre-training reach the decoder). Loss 0.4 `ce` +
  0.6 `dice` (soft Dice over every class, background included, as Swin-Unet).
- Transfer learning: `--init` on `pretrain` starts the MoCo encoder (and its momentum copy) from
  a local Swin checkpoint; keys are mapped by name, shape-mismatched or unknown keys are
  reported and skipped; an ImageNet checkpoint's RGB patch embedding is inflated to the M
  modalities (`transferred_encoder_state`: the authors feed grey slices repeated to RGB, so
  the mean kernel x 3/M gives the same response to M identical channels).

Divergences, and why: the decoder contrastive term the paper explored is not built (no
description of it was at hand). Missing modalities (not in the paper) are zeroed channels with
modality dropout, as the other methods. Augmentations are MRI-safe: the authors' colour
jitter (which on their grey-repeated-to-RGB slices is a brightness and contrast change x
U(0.6, 1.4), p 0.8), grayscale and solarisation (second view, p 0.2) are replaced by a
per-channel intensity scale and shift on every view. Other differences from the released code
(Zian-Xu/Swin-MoCo), each a setting or the engine's: z-scored intensities (theirs: [0, 1]
min-max of grey slices repeated to RGB); epochs of a fixed number of iterations (theirs: one
pass over the slices); fine-tuning on the engine's patches with its flips and intensity
augmentation (theirs: whole slices resized to 224, horizontal flips, rotation +-5 degrees with
a border crop, colour jitter and blur on every slice); the soft Dice of Sigma p + Sigma y
(theirs: TransUNet's Sigma p^2 + Sigma y^2, smooth 1e-5); fp32 pre-training (theirs: fp16 AMP).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contraseg.errors import ConfigError
from contraseg.losses.contrastive import moco_v3_loss, momentum_at, momentum_update
from contraseg.losses.segmentation import soft_dice_loss
from contraseg.models.base import Batch, Method, MethodKind, mask_missing
from contraseg.models.registry import register
from contraseg.models.slices import per_slice, slices_as_batch
from contraseg.models.swin import SwinEncoder2d, SwinUnetDecoder, copy_encoder_to_decoder
from contraseg.models.swin_transfer import load_matching, transferred_encoder_state


@dataclass
class SwinMoCoConfig:
    """Encoder: embed_dim, depths, heads, window, patch, drop_path (the authors' Swin-T: 96,
    2/2/2/2, 3/6/12/24, 7, 4, 0.1). MoCo v3: projector_hidden / projection_dim (4096 / 256),
    predictor_hidden (4096), temperature (1.0), momentum (0.99 -> 1), crop_scale (the random
    resized crop's area range; the authors' 0.08-1), predictor_last_bn (the authors' predictor
    ends in a BatchNorm without affine parameters, their `_build_mlp` default). The views
    (authors' upstream/dataset.py): view_rotation (degrees; theirs +-10), view_blur (the
    probability of a Gaussian blur in the first and the second view; theirs 1.0 and 0.1) with
    view_blur_sigma (its range in pixels: 0.1-2), view_intensity ([a, b]: each channel's
    gain x U(1 - a, 1 + a) and shift + U(-b, b) in z units, ours for the authors' colour
    jitter; [0, 0] turns it off). The presets set the authors' values; the
    defaults are the views of checkpoints that do not record these keys (crop 0.3-1, no
    rotation, no blur, no predictor BatchNorm), so such a run resumes as it began.
    decoder_from_encoder: with --init, copy the mirrored encoder stages into the decoder."""

    embed_dim: int = 96
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    heads: list[int] = field(default_factory=lambda: [3, 6, 12, 24])
    window: int = 7
    patch: int = 4
    drop_path: float = 0.1
    decoder_from_encoder: bool = True
    projector_hidden: int = 4096
    projection_dim: int = 256
    predictor_hidden: int = 4096
    temperature: float = 1.0
    momentum: float = 0.99
    crop_scale: list[float] = field(default_factory=lambda: [0.3, 1.0])
    predictor_last_bn: bool = False
    view_rotation: float = 0.0
    view_blur: list[float] = field(default_factory=lambda: [0.0, 0.0])
    view_blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    view_intensity: list[float] = field(default_factory=lambda: [0.2, 0.2])

    def __post_init__(self) -> None:
        if len(self.depths) != len(self.heads) or not self.depths:
            raise ConfigError("swin-moco needs one model.heads entry per model.depths entry")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"model.crop_scale {self.crop_scale}: need 0 < low <= high <= 1")
        if len(self.view_blur) != 2 or not all(0 <= p <= 1 for p in self.view_blur):
            raise ConfigError(f"model.view_blur {self.view_blur}: two probabilities in [0, 1]")
        sigma = self.view_blur_sigma
        if len(sigma) != 2 or not 0 < sigma[0] <= sigma[1]:
            raise ConfigError(f"model.view_blur_sigma {sigma}: need [low, high], 0 < low <= high")
        jitter = self.view_intensity
        if len(jitter) != 2 or not (0 <= jitter[0] < 1 and jitter[1] >= 0):
            raise ConfigError(f"model.view_intensity {jitter}: need [gain, shift], gain in [0, 1), "
                              "shift >= 0")

    @property
    def size_divisor(self) -> int:
        """Input sides must be multiples of this: the patch, then one halving per merging."""
        return self.patch * 2 ** (len(self.depths) - 1)


def build_encoder(in_channels: int, config: SwinMoCoConfig) -> SwinEncoder2d:
    return SwinEncoder2d(in_channels, config.embed_dim, config.depths, config.heads,
                         config.window, config.patch, config.drop_path)


def mlp(layers: int, in_dim: int, hidden: int, out_dim: int, last_bn: bool) -> nn.Sequential:
    """MoCo v3's MLP: Linear (no bias) + BN + ReLU between layers; a last BN without affine
    parameters when `last_bn` (the projector)."""
    modules: list[nn.Module] = []
    for i in range(layers):
        d_in = in_dim if i == 0 else hidden
        d_out = out_dim if i == layers - 1 else hidden
        modules.append(nn.Linear(d_in, d_out, bias=False))
        if i < layers - 1:
            modules += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        elif last_bn:
            modules.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*modules)


@dataclass(frozen=True)
class ViewSettings:
    """How `random_views` draws one view (see `SwinMoCoConfig`)."""

    scale: tuple[float, float] = (0.08, 1.0)
    rotation: float = 0.0  # degrees, uniform in +-rotation
    blur: float = 0.0  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels
    intensity: tuple[float, float] = (0.2, 0.2)  # per-channel gain x 1 +- a, shift +- b (z units)


def random_views(x: Tensor, available: Tensor, view: ViewSettings) -> Tensor:
    """One augmented view of every slice (N, M, X, Y): a rotation (uniform in +-rotation
    degrees) and a random resized crop (area fraction in `scale`, aspect ratio 3/4-4/3)
    resampled to the input size in one affine map, a horizontal flip half of the time, a
    Gaussian blur with probability `blur` (sigma uniform in `blur_sigma`), then a per-channel
    intensity scale (x U(1 - a, 1 + a)) and shift (+ U(-b, b)), (a, b) = `intensity` (0.2, 0.2
    by default), on the available channels only (absent ones stay 0)."""
    n, m = x.shape[:2]
    device = x.device
    area = torch.empty(n, device=device).uniform_(*view.scale)
    log_ratio = torch.empty(n, device=device).uniform_(math.log(3 / 4), math.log(4 / 3))
    ratio = log_ratio.exp()
    sx = (area * ratio).sqrt().clamp(max=1.0)
    sy = (area / ratio).sqrt().clamp(max=1.0)
    cx = (torch.rand(n, device=device) * 2 - 1) * (1 - sx)
    cy = (torch.rand(n, device=device) * 2 - 1) * (1 - sy)
    flip = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0)
    angle = torch.empty(n, device=device).uniform_(-1, 1) * math.radians(view.rotation)
    theta = view_theta(angle, (sx, sy), (cx, cy), flip, x.shape[2], x.shape[3])
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out = _random_blur(out, view.blur, view.blur_sigma)
    gain_range, shift_range = view.intensity
    gain = torch.empty(n, m, 1, 1, device=device).uniform_(1 - gain_range, 1 + gain_range)
    shift = torch.empty(n, m, 1, 1, device=device).uniform_(-shift_range, shift_range)
    keep = available.to(out.dtype).view(n, m, 1, 1)
    return (out * gain + shift) * keep


def view_theta(angle: Tensor, scale: tuple[Tensor, Tensor], centre: tuple[Tensor, Tensor],
               flip: Tensor, height: int, width: int) -> Tensor:
    """(N, 2, 3) affine_grid matrices, output -> input = R(angle) S(crop, flip) u + centre.

    grid_sample's x runs along the last axis (Y here, `width` pixels), its y along the first
    spatial one (X, `height`); both are normalised to [-1, 1], so the rotation is conjugated by
    the aspect ratio to turn the slice rigidly in pixels (a plain rotation of normalised
    coordinates shears a non-square slice). The crop turns about its own centre (torchvision's
    rotation, then crop, turns it about the slice's: the crop centres differ by at most the
    rotation of a point of the slice, +-10 degrees)."""
    sx, sy = scale
    cx, cy = centre
    cos, sin = angle.cos(), angle.sin()
    aspect = height / width  # normalised x (width) per normalised y (height), in pixels
    theta = torch.zeros(angle.shape[0], 2, 3, device=angle.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sy * flip, -sin * aspect * sx
    theta[:, 1, 0], theta[:, 1, 1] = sin / aspect * sy * flip, cos * sx
    theta[:, 0, 2], theta[:, 1, 2] = cy, cx
    return theta


def _random_blur(x: Tensor, probability: float, sigma: tuple[float, float]) -> Tensor:
    """Each slice blurred with probability `probability` by a separable Gaussian of sigma
    uniform in `sigma` (pixels; kernel radius 3 sigma_max, zero padding as PIL's border)."""
    if probability <= 0:
        return x
    n, m = x.shape[:2]
    chosen = torch.rand(n, device=x.device) < probability
    if not chosen.any():
        return x
    radius = max(1, math.ceil(3 * sigma[1]))
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    sig = torch.empty(n, device=x.device, dtype=x.dtype).uniform_(*sigma)
    kernel = torch.exp(-0.5 * (offsets[None] / sig[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(m, 0)  # (N M, K)
    flat = x.reshape(1, n * m, *x.shape[2:])
    flat = F.conv2d(flat, kernel[:, None, :, None], padding=(radius, 0), groups=n * m)
    flat = F.conv2d(flat, kernel[:, None, None, :], padding=(0, radius), groups=n * m)
    return torch.where(chosen.view(n, 1, 1, 1), flat.view_as(x), x)


@register("swin-moco-pretrain", SwinMoCoConfig)
class SwinMoCoPretrain(Method):
    """MoCo v3 pre-training of the Swin encoder (see the module docstring)."""

    spatial: ClassVar[str] = "2d"
    kind = MethodKind.PRETRAINING
    loss_terms = ("moco",)

    def __init__(self, modalities, num_classes, config: SwinMoCoConfig, loss_weights=None):
        super().__init__(modalities, num_classes, loss_weights)
        self.config = config
        self.encoder = build_encoder(self.num_modalities, config)
        width = self.encoder.widths[-1]
        self.projector = mlp(3, width, config.projector_hidden, config.projection_dim, True)
        self.predictor = mlp(2, config.projection_dim, config.predictor_hidden,
                             config.projection_dim, config.predictor_last_bn)
        self.momentum_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.momentum_projector = copy.deepcopy(self.projector).requires_grad_(False)

    @property
    def size_divisor(self) -> int:
        return self.config.size_divisor

    @classmethod
    def batch_size_needed(cls, loss_weights: dict[str, float]) -> int:
        return 2 if loss_weights.get("moco", 1.0) else 1  # negatives come from the batch

    @classmethod
    def needs_distinct_subjects(cls, loss_weights: dict[str, float]) -> bool:
        """No: MoCo's instances are slices, and the slices of one slab are already negatives
        of each other (the authors' batches of 2D slices mix slices of one patient too), so a
        batch larger than the number of unlabelled scans is fine."""
        return False

    def forward(self, images: Tensor, available: Tensor) -> Tensor:
        """(B, M, X, Y, Z) -> (B, C, 1, 1, Z): the pooled encoder features of every slice."""
        def pooled(slices: Tensor) -> Tensor:
            return self.encoder.pooled(slices)[..., None, None]

        return per_slice(pooled, mask_missing(images, available))

    def _query(self, view: Tensor) -> Tensor:
        return self.predictor(self.projector(self.encoder.pooled(view)))

    def _key(self, view: Tensor) -> Tensor:
        with torch.no_grad():
            return self.momentum_projector(self.momentum_encoder.pooled(view))

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        images = mask_missing(batch.images.float(), batch.available)
        slices = slices_as_batch(images)
        available = batch.available.repeat_interleave(images.shape[-1], dim=0)
        v1, v2 = (random_views(slices, available, self._view(i)) for i in (0, 1))
        t = self.config.temperature
        loss = (moco_v3_loss(self._query(v1), self._key(v2), t)
                + moco_v3_loss(self._query(v2), self._key(v1), t))
        return {"moco": loss}

    def _view(self, index: int) -> ViewSettings:
        """The settings of the first (0) or second (1) view: they differ in the blur."""
        c = self.config
        return ViewSettings(tuple(c.crop_scale), c.view_rotation, c.view_blur[index],
                            tuple(c.view_blur_sigma), tuple(c.view_intensity))

    def load_init(self, state: dict[str, Tensor]) -> dict:
        """Transfer learning: the encoder (and its momentum copy) from a Swin checkpoint."""
        mapped, inflated = transferred_encoder_state(state, self.num_modalities)
        loaded, skipped = load_matching(self.encoder, mapped)
        self.momentum_encoder.load_state_dict(self.encoder.state_dict())
        return {"loaded": loaded, "skipped": skipped, "inflated": inflated}

    def after_step(self, progress: float) -> None:
        """The momentum update of encoder and projector after each optimiser step."""
        m = momentum_at(progress, self.config.momentum)
        momentum_update(self.momentum_encoder, self.encoder, m)
        momentum_update(self.momentum_projector, self.projector, m)


@register("swin-moco", SwinMoCoConfig)
class SwinMoCo(Method):
    """The Swin-Unet fine-tuned for segmentation (see the module docstring)."""

    spatial: ClassVar[str] = "2d"
    loss_terms = ("ce", "dice")
    loss_weight_defaults = {"ce": 0.4, "dice": 0.6}
    pretraining_stage = "swin-moco-pretrain"

    def __init__(self, modalities, num_classes, config: SwinMoCoConfig, loss_weights=None):
        super().__init__(modalities, num_classes, loss_weights)
        self.config = config
        self.encoder = build_encoder(self.num_modalities, config)
        self.decoder = SwinUnetDecoder(self.encoder.widths, config.depths, config.heads,
                                       config.window, num_classes, config.patch,
                                       config.drop_path)

    @property
    def size_divisor(self) -> int:
        return self.config.size_divisor

    def _segment(self, slices: Tensor) -> Tensor:
        return self.decoder(*self.encoder(slices))

    def forward(self, images: Tensor, available: Tensor) -> Tensor:
        return per_slice(self._segment, mask_missing(images, available))

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        logits = self(batch.images, batch.available)
        return {"ce": F.cross_entropy(logits.float(), batch.target),
                "dice": soft_dice_loss(logits, batch.target)}

    def load_init(self, state: dict[str, Tensor]) -> dict:
        """The encoder from a pre-training run (or any Swin checkpoint), then, with
        `model.decoder_from_encoder`, the decoder's Swin blocks from the mirrored stages."""
        mapped, inflated = transferred_encoder_state(state, self.num_modalities)
        loaded, skipped = load_matching(self.encoder, mapped)
        report: dict = {"loaded": loaded, "skipped": skipped, "inflated": inflated}
        if self.config.decoder_from_encoder and loaded:
            report["decoder_copied"] = copy_encoder_to_decoder(self.encoder, self.decoder)
        return report


# --- transfer learning: Swin weights from other checkpoints --------------------------------------


