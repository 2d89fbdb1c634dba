"""`dc-seg`: disentangled contrastive learning for segmentation with missing modalities.

DC-Seg extends RFNet (`contraseg.models.rfnet`): RFNet's per-modality encoders become the
anatomical encoders, its region-aware fusion decoder is D^fuse and its weight-shared decoder is
D^sep. DC-Seg adds per-modality modality encoders (an 8-d code each), per-modality reconstruction
decoders conditioned on those codes, and two sigmoid pairwise contrastive losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contraseg.errors import ConfigError
from contraseg.losses.contrastive import (
    cosine_similarity_matrix,
    item_labels,
    pairwise_ssim,
    same_label,
    sigmoid_pairwise_loss,
)
from contraseg.models.base import Batch, mask_missing
from contraseg.models.blocks import kaiming_init, maybe_checkpoint, stage_channels, upsample2
from contraseg.models.registry import register
from contraseg.models.rfnet import RFNet, RFNetConfig

CONTRASTIVE_TERMS = ("ana", "mod")


@dataclass
class DCSegConfig(RFNetConfig):
    """RFNet's settings (encoders, fusion decoder, warm-up) plus DC-Seg's. Values the paper does
    not give are ASSUMED (marked so); each is a config value.

    modality_dim: length of a modality code (paper: 8, its DRIT-style [10] code).
    modality_channels, modality_downsamples: the modality encoder, stride-2 3x3x3 convs starting
        at this width (doubling, at most 4x), then global average pooling (ASSUMED 16 and 4).
    rec_hidden: width of the MLP that turns a modality code into AdaIN scales and shifts
        (ASSUMED 64).
    ssim_window: Gaussian window taps of the SSIM in L_ana, 0 for global per-channel statistics
        (Eq. 3 as printed); ssim_sigma its standard deviation; ssim_c1, ssim_c2 the stabilisers
        (ASSUMED 7, 1.5, 0.01^2, 0.03^2: the usual SSIM constants for a unit range).
    temperature_init, learn_temperature: t of Eq. 1 and 4, one per loss, learnable as log t
        (ASSUMED: SigLIP's t = 10, learnable); max_temperature: the bound log t is clamped to
        after every step (CLIP's t <= 100), logged as t_ana and t_mod.
    rec_zero_init: the reconstruction decoders' last 1x1 conv starts at zero, so `rec` starts at
        its "predict the mean" level (images are z-scored: the mean is 0) and sends no gradient
        into the shared encoders until the decoders have learned something (ours: a random head
        made `rec` 1.6x the whole segmentation gradient on the anatomical encoders at step 0).
    bias_init: None for Eq. 1 as printed (no bias); a number adds SigLIP's learnable bias b.
    """

    fusion_warmup_epochs: int = 0
    modality_dim: int = 8
    modality_channels: int = 16
    modality_downsamples: int = 4
    rec_hidden: int = 64
    ssim_window: int = 7
    ssim_sigma: float = 1.5
    ssim_c1: float = 1e-4
    ssim_c2: float = 9e-4
    temperature_init: float = 10.0
    learn_temperature: bool = True
    max_temperature: float = 100.0
    bias_init: float | None = None
    rec_zero_init: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.modality_dim < 1 or self.modality_channels < 1 or self.modality_downsamples < 1:
            raise ConfigError("dc-seg needs modality_dim, modality_channels and "
                              "modality_downsamples >= 1")
        if self.ssim_window < 0 or self.ssim_sigma <= 0 or self.temperature_init <= 0:
            raise ConfigError("dc-seg needs ssim_window >= 0 (0: global statistics), "
                              "ssim_sigma > 0 and temperature_init > 0")
        if self.max_temperature < self.temperature_init:
            raise ConfigError(f"dc-seg: max_temperature {self.max_temperature} is below "
                              f"temperature_init {self.temperature_init}")


class ModalityCodeEncoder(nn.Module):
    """E_j^mod: stride-2 convolutions with LeakyReLU and no normalisation (instance norm would
    remove the intensity statistics a modality code should carry, as in MUNIT's style encoder),
    global average pooling, a linear map to the code."""

    def __init__(self, dim: int = 8, channels: int = 16, downsamples: int = 4,
                 padding_mode: str = "reflect"):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c_out = 1, channels
        for _ in range(downsamples):
            layers += [nn.Conv3d(c_in, c_out, 3, stride=2, padding=1, padding_mode=padding_mode),
                       nn.LeakyReLU(0.2)]
            c_in, c_out = c_out, min(2 * c_out, 4 * channels)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.project = nn.Linear(c_in, dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, *S) -> (B, dim)."""
        return self.project(self.features(x))


class ReconstructionDecoder(nn.Module):
    """D_j^rec(z, m): the fused anatomical map z (deepest stage) upsampled back to the image,
    every stage's instance norm modulated by the modality code m (AdaIN: IN(x) * (1 + s) + b,
    s and b from an MLP of m), a 1x1x1 conv to one channel."""

    def __init__(self, base_channels: int, depth: int, code_dim: int, hidden: int = 64,
                 padding_mode: str = "reflect"):
        super().__init__()
        channels = stage_channels(base_channels, depth)
        self.widths = [channels[s] for s in reversed(range(depth - 1))]
        self.convs = nn.ModuleList(
            nn.Conv3d(channels[s + 1], channels[s], 3, padding=1, padding_mode=padding_mode,
                      bias=False) for s in reversed(range(depth - 1)))
        self.modulation = nn.Sequential(nn.Linear(code_dim, hidden), nn.LeakyReLU(0.2),
                                        nn.Linear(hidden, 2 * sum(self.widths)))
        self.head = nn.Conv3d(base_channels, 1, kernel_size=1)

    def forward(self, z: Tensor, code: Tensor) -> Tensor:
        """z (B, C, *S), code (B, dim) -> (B, 1, *S * 2^(depth-1))."""
        params = self.modulation(code).split([w for w in self.widths for _ in (0, 1)], dim=1)
        x = z
        for s, conv in enumerate(self.convs):
            scale, shift = (p.view(*p.shape, *([1] * (z.ndim - 2)))
                            for p in params[2 * s:2 * s + 2])
            x = F.leaky_relu(F.instance_norm(conv(upsample2(x))) * (1 + scale) + shift, 0.2)
        return self.head(x)


@register("dc-seg", DCSegConfig)
class DCSeg(RFNet):
    """DC-Seg (Li, Li, Mao, Ding, Huang, "DC-Seg: Disentangled Contrastive Learning for Brain
    Tumor Segmentation with Missing Modalities", 2025).

    Implements, with terms named as in the config's `loss_weights`:
    - Eq. 1-3, `ana`: the sigmoid pairwise loss over the (NM)^2 pairs of anatomical maps a_j^i
      (the deepest stage of each anatomical encoder, C x d^3), similarity = channel-wise mean
      SSIM, positives f(i, i') = +1 for the same subject;
    - Eq. 4, `mod`: the same loss on the modality codes m_j^i with cosine similarity, positives
      for the same modality;
    - Eq. 5, `rec`: z^i = F(delta_1 a_1^i, ..., delta_M a_M^i), the region-aware fusion of the
      anatomical maps with modality dropout delta (the training subset), and per-modality
      decoders D_j^rec(z^i, m_j^i) under an L1 loss; every modality present in the data is
      encoded and reconstructed, also those delta drops from z (the point of the dropout);
    - Eq. 7, `reg`: D^sep on each single modality's features, weighted CE + Dice;
    - Eq. 8, `seg`: D^fuse on the fused features, weighted CE + Dice;
    - Eq. 9: L = seg + reg + alpha (ana + mod + rec): alpha = 0.4 is the weight of each of the
      three terms in the `paper` preset; Table 2's ablations set weights to 0.
    Missing modalities at test time are delta = 0 (the inherited RFNet forward).

    Assumptions (the paper and our sources do not say; each is a config value):
    - the SSIM window and constants, the temperature (learnable, SigLIP's init, one per loss,
      no bias), the modality encoder's and reconstruction decoders' shapes (`DCSegConfig`);
    - z for reconstruction is the fused map at the deepest stage (the fusion decoder's input);
    - `prm`, RFNet's deep supervision of the region probability maps, is kept as a term
      (weight 1 in the presets): the authors built on RFNet's code, which trains the
      fusion decoder with it; set `loss_weights.prm=0` for Eq. 9 as printed;
    - normalisations as RFNet's code: each segmentation loss is a batch mean, `reg` and `rec`
      sum over modalities (Eq. 5 and 7 sum over samples and modalities), `rec` is the mean
      absolute error over voxels: its effective weight is M x alpha (1.6 for four modalities),
      not normalised by M, as printed;
    - the reconstruction head starts at zero (`rec_zero_init`) and the temperatures are clamped
      to t <= 100 (`max_temperature`) and logged (`t_ana`, `t_mod`); the contrastive losses
      average over all pairs (Eq. 1's 1/(NM)^2), self-pairs included as in the equation's sum.

    `checkpointing` (inherited from RFNet's config) also recomputes each reconstruction
    decoder in the backward pass.

    Divergences: items (sample, modality) whose modality is absent from the data are left out
    of the pairs, of `reg` and of `rec` (the paper's data is complete); a batch of one sample
    is refused while a contrastive term is on (it has no negatives: `batch_size_needed`); modules
    of terms weighted 0 are not built (nothing unused under DDP), so an ablation's checkpoint
    has no modality encoders or reconstruction decoders.
    """

    loss_terms = ("seg", "reg", "prm", "ana", "mod", "rec")

    def __init__(self, modalities, num_classes, config: DCSegConfig, loss_weights=None):
        if len(modalities) < 2:
            raise ConfigError("dc-seg needs at least two modalities: its contrastive terms "
                              f"compare modalities, the data has {list(modalities)}")
        super().__init__(modalities, num_classes, config, loss_weights)
        weights, m = self.loss_weights, self.num_modalities
        if weights["mod"] or weights["rec"]:
            self.modality_encoders = nn.ModuleList(
                ModalityCodeEncoder(config.modality_dim, config.modality_channels,
                                    config.modality_downsamples, config.padding_mode)
                for _ in range(m))
        if weights["rec"]:
            self.reconstructors = nn.ModuleList(
                ReconstructionDecoder(config.base_channels, config.depth, config.modality_dim,
                                      config.rec_hidden, config.padding_mode)
                for _ in range(m))
        self.log_temperature = nn.ParameterDict()
        self.bias = nn.ParameterDict()
        for term in CONTRASTIVE_TERMS:
            if weights[term]:
                self.log_temperature[term] = nn.Parameter(
                    torch.tensor(math.log(config.temperature_init)),
                    requires_grad=config.learn_temperature)
                if config.bias_init is not None:
                    self.bias[term] = nn.Parameter(torch.tensor(float(config.bias_init)))
        for name in ("modality_encoders", "reconstructors"):
            if hasattr(self, name):
                kaiming_init(getattr(self, name))
        if hasattr(self, "reconstructors") and config.rec_zero_init:
            for decoder in self.reconstructors:
                nn.init.zeros_(decoder.head.weight)
                nn.init.zeros_(decoder.head.bias)

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        """CLIP's bound: log t <= log(max_temperature) after every optimiser step."""
        super().after_step(progress)
        for log_t in self.log_temperature.values():
            log_t.clamp_(max=math.log(self.config.max_temperature))

    def monitored(self) -> dict[str, float]:
        """The learned temperatures t_ana and t_mod (the terms that are on)."""
        return {f"t_{term}": float(log_t.detach().exp())
                for term, log_t in self.log_temperature.items()}

    @classmethod
    def batch_size_needed(cls, loss_weights: dict[str, float]) -> int:
        """The contrastive terms need negatives: two samples per batch (per process)."""
        return 2 if any(loss_weights.get(t, 1.0) for t in CONTRASTIVE_TERMS) else 1

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        n = batch.images.shape[0]
        present = batch.present.to(torch.bool)
        images = mask_missing(batch.images, present)
        encoded, fused, rfnet = self._fusion_losses(images, batch)
        terms = {"seg": rfnet["fuse"], "reg": rfnet["sep"], "prm": rfnet["prm"]}
        items = present.flatten()  # (N*M,): the (sample, modality) pairs that exist
        subjects, modalities = item_labels(n, self.num_modalities, images.device)
        if self.loss_weights["ana"]:
            anatomy = encoded[-1].flatten(0, 1)[items]
            similarity = pairwise_ssim(anatomy, self.config.ssim_window, self.config.ssim_sigma,
                                       self.config.ssim_c1, self.config.ssim_c2)
            terms["ana"] = self._contrast("ana", similarity, same_label(subjects[items]))
        codes = self.modality_codes(images) if hasattr(self, "modality_encoders") else None
        if self.loss_weights["mod"]:
            similarity = cosine_similarity_matrix(codes.flatten(0, 1)[items])
            terms["mod"] = self._contrast("mod", similarity, same_label(modalities[items]))
        if self.loss_weights["rec"]:
            terms["rec"] = self._reconstruction_loss(fused.bottleneck, codes, images, present)
        return terms

    def modality_codes(self, images: Tensor) -> Tensor:
        """(B, M, *S) images (absent ones zeroed) -> (B, M, dim) modality codes m_j^i."""
        return torch.stack([encoder(images[:, j:j + 1])
                            for j, encoder in enumerate(self.modality_encoders)], dim=1)

    def _contrast(self, term: str, similarity: Tensor, positive: Tensor) -> Tensor:
        bias = self.bias[term] if term in self.bias else 0.0
        return sigmoid_pairwise_loss(similarity, positive, self.log_temperature[term].exp(),
                                     bias)

    def _reconstruction_loss(self, z: Tensor, codes: Tensor, images: Tensor,
                             present: Tensor) -> Tensor:
        """Sum over modalities of the mean |D_j^rec(z^i, m_j^i) - x_j^i| over the samples
        where modality j exists."""
        total = z.new_zeros((), dtype=torch.float32)
        for j, decoder in enumerate(self.reconstructors):
            rows = present[:, j]
            if rows.any():
                rebuilt = maybe_checkpoint(self.config.checkpointing, decoder, z[rows],
                                           codes[rows, j])
                total = total + F.l1_loss(rebuilt.float(), images[rows, j:j + 1].float())
            else:
                # no sample has modality j: a zero that still reaches the decoder's parameters,
                # as DDP without find_unused_parameters requires
                total = total + 0.0 * sum(p.sum() for p in decoder.parameters())
        return total

    @torch.no_grad()
    def representations(self, images: Tensor, present: Tensor) -> dict[str, Tensor]:
        """The disentangled representations of each (sample, modality): `anatomical` (B, M, C,
        *S) deepest anatomical maps and, when built, `modality` (B, M, dim) codes."""
        images = mask_missing(images, present)
        out = {"anatomical": self.encode(images)[-1]}
        if hasattr(self, "modality_encoders"):
            out["modality"] = self.modality_codes(images)
        return out
