"""`clfc`: contrastive-learning-based feature comparison with a pseudo-normal brain.

Liu et al., "Multimodal Brain Tumor Segmentation Using Contrastive Learning Based Feature
Comparison with Monomodal Normal Brain Images", MICCAI 2022 (paper 003), and the authors'
released code (hbliu98/CLFC-Brain-Tumor-Segmentation, `Segmentation/`).

- A frozen generator (`introvae`, trained on healthy T1: `contraseg train --method introvae`)
  turns the case's T1 into a pseudo-normal T1 (`case_inputs`); `--set normal_run=VAE_RUN`
  attaches it (its weights are copied into this model, so a run does not depend on the VAE
  folder afterwards).
- Segmentation backbone on the multimodal 2.5D input and a normal appearance network of the
  same shape on the pseudo-normal (`EncoderDecoder2d`: 4 x [conv3 + BN + ReLU + max-pool], 4
  transposed convolutions with the authors' skips), an extra conv3 to the class logits.
- At each decoder level l a CLFC module (`FeatureComparison`, Eq. 3):
  A_l = sigmoid(psi(ReLU(-zeta(F_T,l) * g(F_R,l)))), F'_T,l = A_l * F_T,l.
- SimSiam alignment (Eq. 1-2, `simsiam`): at NORMAL positions only (no tumour label in the
  level's cell), zeta(ng(F_T,l))(x) and g(F_R,l)(x) go through a projection MLP and a
  prediction MLP (the authors' widths: 256 / 128); symmetric negative cosine with stop-gradient,
  summed over the levels; the stop-gradient before zeta keeps the backbone on segmentation.
- Objective: `dice` (soft Dice over the tumour classes, background left out, as the authors'
  DiceCE) + `ce` + `simsiam`, weight 1 each. Ablations of the paper: Baseline-1 (no normal
  appearance network) is `model.normal_network=false`; Baseline-2 (no SimSiam) is
  `loss_weights.simsiam=0`.
- 2.5D (paper; `models.slices`): slice z and its K = 2 neighbours per side of every modality are
  the backbone's channels (the pseudo-normal's 2K + 1 slices the normal network's). In training
  only the patch's slices with all their neighbours inside the patch are segmented; inference
  windows span the whole depth, so the volume is segmented slice by slice.

Divergences, and why:
- The released code is 2D and whole-tumour only; this follows the paper (2.5D, K = 2) and
  segments every tumour class. Whole tumour only is `data.whole_tumour=true` (any method).
- The released code feeds the SimSiam MLPs every position with tumour features multiplied by 0;
  here tumour positions are left out (the paper's x in Omega_NR), and a level's cell counts as
  normal only when it holds no tumour voxel (labels max-pooled, not subsampled). At most
  `simsiam_positions` positions per level are drawn at random (None: all, as the authors; the
  default keeps the MLPs affordable on a CPU). The released code has no stop-gradient before
  zeta (the paper has one); here zeta sees ng(F_T) in the SimSiam branch only. Eq. 2 sums
  the negative cosine over x in Omega_NR; here it is averaged over the positions (as SimSiam
  averages over its batch), so the term's scale does not grow with the patch or the tumour.
- Missing modalities (not in the paper): missing channels are zeroed, modality dropout trains
  every subset; the generator's input is T1, or T1c when T1 is not available (the authors'
  choice for data without T1, `model.reference_modalities`); with neither, the comparison is
  switched off for that sample (A_l = 1) and it leaves the SimSiam term.
- The pseudo-normal is computed on the segmenter's preprocessed grid (z-scored T1) by running
  the generator on whole slices, once per case (cached with the run's data).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contraseg.errors import ConfigError
from contraseg.losses.contrastive import simsiam_loss
from contraseg.losses.segmentation import soft_dice_loss
from contraseg.models.base import Batch, Method, MethodKind, mask_missing
from contraseg.models.registry import build_method, register
from contraseg.models.slices import batch_as_slices, centre_slices, neighbour_stack


@dataclass
class CLFCConfig:
    """channels: encoder widths (authors: 64, 128, 256, 512). neighbours: K (paper: 2).
    normal_network: False is the paper's Baseline-1. projection_dim / prediction_dim: the
    SimSiam MLP widths (authors: 256 / 128). simsiam_positions: normal positions drawn per level
    (None: all). reference_modalities: the generator's input, the first available one (T1, else
    T1c). generator: the frozen generator's architecture, filled in from `normal_run` by the
    trainer ({"method": "introvae", "model": {...}, "run": path}). slice_chunk: slices per call
    at inference. gate_init: None (PyTorch's default init of psi, as the authors: A starts near
    0.5) or the value A starts near (e.g. 0.95: psi's bias set to logit(0.95), the gates start
    open so the backbone's features pass almost unchanged at first; ours, opt-in: on the
    phantom's 5-fold CV it removes the slow start, +3.0 / +8.4 / +4.9 Dice points, README)."""

    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    neighbours: int = 2
    normal_network: bool = True
    projection_dim: int = 256
    prediction_dim: int = 128
    simsiam_positions: int | None = 4096
    reference_modalities: list[str] = field(default_factory=lambda: ["t1", "t1c"])
    generator: dict[str, Any] | None = None
    slice_chunk: int = 64
    gate_init: float | None = None

    def __post_init__(self) -> None:
        if len(self.channels) < 2 or min(self.channels) < 2:
            raise ConfigError("clfc needs at least two model.channels, each >= 2")
        if self.gate_init is not None and not 0.0 < self.gate_init < 1.0:
            raise ConfigError(f"model.gate_init={self.gate_init}: expected a value in (0, 1)")
        if self.neighbours < 0:
            raise ConfigError(f"model.neighbours must be >= 0, not {self.neighbours}")
        if self.normal_network and self.generator is None:
            raise ConfigError("clfc needs its normal-appearance generator: "
                              "--set normal_run=VAE_RUN (an introvae run), or "
                              "model.normal_network=false (the paper's Baseline-1)")


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class EncoderDecoder2d(nn.Module):
    """The authors' backbone: encoder stages [conv3 + BN + ReLU, max-pool 2]; decoder levels of
    transposed convs (kernel 4, stride 2) of widths channels reversed, level j > 0 taking the
    previous level concatenated with the encoder output of the same size (the first and the
    last level have no skip). No activation between decoder levels, as the released code."""

    def __init__(self, in_channels: int, channels: list[int]):
        super().__init__()
        self.encoder = nn.ModuleList(conv_bn_relu(a, b) for a, b in
                                     zip([in_channels, *channels[:-1]], channels, strict=True))
        widths = channels[::-1]
        self.widths = widths
        self.decoder = nn.ModuleList()
        for j, width in enumerate(widths):
            incoming = widths[0] if j == 0 else widths[j - 1] + (widths[j] if self._skip(j)
                                                                  else 0)
            self.decoder.append(nn.ConvTranspose2d(incoming, width, 4, stride=2, padding=1))

    def _skip(self, level: int) -> bool:
        return 0 < level < len(self.widths) - 1

    def forward(self, x: Tensor, compare=None) -> list[Tensor]:
        """The decoder features of every level; `compare(level, features)` (the CLFC modules)
        replaces each level's output before the next level sees it."""
        skips = []
        for stage in self.encoder:
            x = F.max_pool2d(stage(x), 2)
            skips.append(x)
        levels, d = [], skips[-1]
        depth = len(self.widths)
        for j, up in enumerate(self.decoder):
            d = up(torch.cat([d, skips[depth - 1 - j]], dim=1) if self._skip(j) else d)
            if compare is not None:
                d = compare(j, d)
            levels.append(d)
        return levels


class FeatureComparison(nn.Module):
    """The CLFC module (Eq. 3): 1x1 convs zeta, g to half the width, psi to one map."""

    def __init__(self, channels: int, gate_init: float | None = None):
        super().__init__()
        half = max(channels // 2, 1)
        self.zeta = nn.Conv2d(channels, half, 1)
        self.g = nn.Conv2d(channels, half, 1)
        self.psi = nn.Conv2d(half, 1, 1)
        if gate_init is not None:  # A = sigmoid(psi(...)) starts near gate_init
            nn.init.constant_(self.psi.bias, math.log(gate_init / (1.0 - gate_init)))

    def attention(self, f_t: Tensor, f_r: Tensor) -> Tensor:
        """A = sigmoid(psi(ReLU(-zeta(F_T) * g(F_R)))), (N, 1, X, Y)."""
        return torch.sigmoid(self.psi(F.relu(-self.zeta(f_t) * self.g(f_r))))

    def embeddings(self, f_t: Tensor, f_r: Tensor) -> tuple[Tensor, Tensor]:
        """zeta(ng(F_T)), g(F_R): the SimSiam pair (stop-gradient before zeta, as the paper)."""
        return self.zeta(f_t.detach()), self.g(f_r)


class SimSiamHead(nn.Module):
    """Projection MLP (3 x Linear + BN, ReLU between; the authors' widths) and prediction MLP
    (Linear + BN + ReLU, Linear); used in training only."""

    def __init__(self, channels: int, projection: int, prediction: int):
        super().__init__()
        self.projection = nn.Sequential(
            nn.Linear(channels, projection), nn.BatchNorm1d(projection), nn.ReLU(inplace=True),
            nn.Linear(projection, projection), nn.BatchNorm1d(projection),
            nn.ReLU(inplace=True), nn.Linear(projection, projection),
            nn.BatchNorm1d(projection))
        self.prediction = nn.Sequential(
            nn.Linear(projection, prediction), nn.BatchNorm1d(prediction),
            nn.ReLU(inplace=True), nn.Linear(prediction, projection))

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """SimSiam loss of the row pairs (a_i, b_i), (N, C) each."""
        v1, v2 = self.projection(a), self.projection(b)
        return simsiam_loss(self.prediction(v1), self.prediction(v2), v1, v2)


def normal_positions(target: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, X, Y) canonical classes -> (N, x, y) bool: cells of the level's grid that hold no
    tumour voxel (max-pooled tumour mask)."""
    tumour = (target > 0).float()[:, None]
    factor = (target.shape[-2] // size[0], target.shape[-1] // size[1])
    return F.max_pool2d(tumour, factor)[:, 0] == 0


@register("clfc", CLFCConfig)
class CLFC(Method):
    """CLFC (Liu et al. 2022), Eq. 1-3; see the module docstring for the divergences."""

    spatial: ClassVar[str] = "2.5d"
    loss_terms = ("dice", "ce", "simsiam")
    takes_normal_run = True

    def __init__(self, modalities, num_classes, config: CLFCConfig, loss_weights=None):
        super().__init__(modalities, num_classes, loss_weights)
        self.config = config
        k, channels = config.neighbours, config.channels
        slices = 2 * k + 1
        self.backbone = EncoderDecoder2d(self.num_modalities * slices, channels)
        self.head = nn.Conv2d(channels[0], num_classes, 3, padding=1)
        self.references = [self.modalities.index(m) for m in config.reference_modalities
                           if m in self.modalities]
        self.generator: Method | None = None
        if config.normal_network:
            if not self.references:
                raise ConfigError(f"clfc compares with a pseudo-normal T1 made from one of "
                                  f"{config.reference_modalities}; the data has "
                                  f"{', '.join(self.modalities)}")
            self.generator = build_generator(config.generator)
            self.normal_net = EncoderDecoder2d(slices, channels)
            self.compare = nn.ModuleList(FeatureComparison(w, config.gate_init)
                                         for w in self.backbone.widths)
            self.simsiam = nn.ModuleList(
                SimSiamHead(max(w // 2, 1), config.projection_dim, config.prediction_dim)
                for w in self.backbone.widths)

    @property
    def size_divisor(self) -> int:
        return 2 ** len(self.config.channels)

    def normal_generator(self) -> Method | None:
        return self.generator

    def check_patch(self, patch: list[int]) -> None:
        super().check_patch(patch)
        slices = 2 * self.config.neighbours + 1
        if int(patch[-1]) < slices:
            raise ConfigError(f"data.patch_size {list(patch)}: clfc segments the slices whose "
                              f"{self.config.neighbours} neighbours per side are in the patch; "
                              f"its depth must be >= {slices}")

    def train(self, mode: bool = True) -> CLFC:
        super().train(mode)
        if self.generator is not None:  # frozen: BN/IN statistics and dropout stay eval
            self.generator.eval()
        return self

    # --- the pseudo-normal -----------------------------------------------------------------
    def case_inputs_fingerprint(self) -> str | None:
        if self.generator is None:
            return None
        digest = hashlib.sha1(repr(self.references).encode())
        for name, tensor in self.generator.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def case_inputs(self, images: Tensor, available: Tensor) -> Tensor | None:
        """(B, R, *S) pseudo-normal T1s, one per reference modality (T1, T1c), each made by
        the generator from that modality's channel where it is available (zeros elsewhere);
        computed once per case by the engine. None for Baseline-1."""
        if self.generator is None:
            return None
        b, _, x, y, z = images.shape
        out = images.new_zeros(b, len(self.references), x, y, z)
        with torch.no_grad():
            for r, channel in enumerate(self.references):
                rows = available[:, channel].nonzero().flatten()
                if len(rows):
                    source = images[rows, channel:channel + 1].float()
                    # under autocast the generator may answer in bfloat16
                    out[rows, r] = self.generator.pseudo_normal(source)[:, 0].to(out.dtype)
        return out

    def _reference(self, pseudo: Tensor, available: Tensor) -> tuple[Tensor, Tensor]:
        """The pseudo-normal of the first available reference modality per sample (B, 1, *S)
        and whether there is one (B,) bool."""
        ref_available = available[:, self.references]
        first = torch.cumsum(ref_available.int(), dim=1) == 1
        choose = (ref_available & first).to(pseudo.dtype)
        chosen = (pseudo * choose.view(*choose.shape, 1, 1, 1)).sum(1, keepdim=True)
        return chosen, ref_available.any(1)

    # --- the network -----------------------------------------------------------------------
    def _split(self, images: Tensor, available: Tensor) -> tuple[Tensor, Tensor | None]:
        """The modality channels (masked) and the pseudo-normals: channels past M when the
        engine appended them (`case_inputs`), else computed from the masked images."""
        m = self.num_modalities
        modal = mask_missing(images[:, :m], available)
        if self.generator is None:
            return modal, None
        pseudo = images[:, m:] if images.shape[1] > m else self.case_inputs(modal, available)
        return modal, pseudo

    def _logits(self, modal: Tensor, pseudo: Tensor | None, available: Tensor,
                keep: slice | None = None, target: Tensor | None = None
                ) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]]]:
        """2D logits (N, C, X, Y) of the slices kept (all by default), and per level the
        SimSiam pair at normal positions when `target` (B, X, Y, Z) is given."""
        k, depth = self.config.neighbours, modal.shape[-1]
        keep = keep or slice(0, depth)

        def items(volume: Tensor) -> Tensor:
            stack = neighbour_stack(volume, k)
            return stack.unflatten(0, (volume.shape[0], depth))[:, keep].flatten(0, 1)

        x = items(modal)
        if pseudo is None:
            return self.head(self.backbone(x)[-1]), []
        reference, has_ref = self._reference(pseudo, available)
        slices = len(range(*keep.indices(depth)))
        has_ref = has_ref.repeat_interleave(slices)
        gate = has_ref.view(-1, 1, 1, 1)
        f_r = self.normal_net(items(reference))
        pairs: list[tuple[Tensor, Tensor, Tensor]] = []
        normal = None
        if target is not None:
            normal = target[..., keep].permute(0, 3, 1, 2).flatten(0, 1)  # (N, X, Y)

        def compare(level: int, f_t: Tensor) -> Tensor:
            module = self.compare[level]
            if normal is not None:
                where = normal_positions(normal, tuple(f_t.shape[-2:])) & gate[:, :, 0]
                pairs.append((*module.embeddings(f_t, f_r[level]), where))
            attention = torch.where(gate, module.attention(f_t, f_r[level]), 1.0)
            return f_t * attention

        return self.head(self.backbone(x, compare)[-1]), pairs

    def forward(self, images: Tensor, available: Tensor) -> Tensor:
        """(B, M [+ R], X, Y, Z) -> (B, C, X, Y, Z) logits, slice by slice (chunked)."""
        modal, pseudo = self._split(images, available)
        b, depth = modal.shape[0], modal.shape[-1]
        chunk = max(1, self.config.slice_chunk)
        parts = [self._logits(modal, pseudo, available, slice(s, min(s + chunk, depth)))[0]
                 .unflatten(0, (b, -1)) for s in range(0, depth, chunk)]
        return batch_as_slices(torch.cat(parts, dim=1).flatten(0, 1), b)

    # --- the objective ---------------------------------------------------------------------
    def _simsiam(self, pairs: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
        total = pairs[0][0].sum() * 0  # keeps the graph when no level has two normal positions
        limit = self.config.simsiam_positions
        for head, (z_t, g_r, where) in zip(self.simsiam, pairs, strict=True):
            a = z_t.permute(0, 2, 3, 1)[where]
            b = g_r.permute(0, 2, 3, 1)[where]
            if limit is not None and len(a) > limit:
                pick = torch.randperm(len(a), device=a.device)[:limit]
                a, b = a[pick], b[pick]
            if len(a) >= 2:  # BatchNorm1d needs two rows
                total = total + head(a, b)
        return total

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        images = batch.images
        if "case_inputs" in batch.extras:
            images = torch.cat([images, batch.extras["case_inputs"].to(images)], dim=1)
        modal, pseudo = self._split(images, batch.available)
        keep = centre_slices(modal.shape[-1], self.config.neighbours)
        want_pairs = pseudo is not None and self.loss_weights["simsiam"] != 0
        logits, pairs = self._logits(modal, pseudo, batch.available, keep,
                                     batch.target if want_pairs else None)
        target = batch.target[..., keep].permute(0, 3, 1, 2).flatten(0, 1)
        weights = torch.ones(self.num_classes, device=logits.device)
        weights[0] = 0  # the authors' Dice leaves the background out
        terms = {"dice": soft_dice_loss(logits, target, class_weights=weights),
                 "ce": F.cross_entropy(logits.float(), target)}
        if want_pairs:
            terms["simsiam"] = self._simsiam(pairs)
        return terms


def build_generator(spec: dict[str, Any]) -> Method:
    """The frozen generator from its architecture spec (weights are loaded by the trainer or
    come with the segmenter's checkpoint)."""
    name = spec.get("method", "introvae")
    generator = build_method(name, ("t1",), 1, spec.get("model"))
    if generator.kind != MethodKind.GENERATOR:
        raise ConfigError(f"model.generator: {name} is not a generator with a pseudo_normal")
    return generator.requires_grad_(False).eval()

