"""DCL-MANet's recalibration fusion block (RFB) in two variants: the authors' released one
(`ReleasedRecalibrationBlock` with `MPABlock`s: one attention block per primary modality, shared
by its pairs, the value from the primary; every preset uses it) and a pairwise reading of
APAUNet's attention (`RecalibrationBlock` with `PairwiseModalityAttention`: one block per ordered
pair, the value from the other modality; the config's default, for checkpoints that do not
record `rfb_variant`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contraseg.models.base import mask_missing
from contraseg.models.blocks import conv_relu


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


class MPABlock(nn.Module):
    """The released code's modality attention between a primary map x and a second map y
    (authors' code models/M_3D/APAUNet.py `MPABlock`, in 3D on the bottleneck):

    w = GN(conv1(ReLU(IN(conv1([y, x])))))  C per-position weights, GroupNorm of C / 8 groups
    v = Swish(IN(w * IN(conv1(x))))           the value comes from the PRIMARY map
    a = softmax over {x, v} of conv1(ReLU(LN(conv1(mean over space of x + v)))), per channel
    out = a_0 x + a_1 v
    The second map enters through the weights w only. LN is LayerNorm over the hidden
    channels, max(C / 2, 32) of them.
    """

    def __init__(self, channels: int, share_planes: int = 8):
        super().__init__()
        half = max(channels // 2, 1)
        self.embed = nn.Sequential(
            nn.Conv3d(2 * channels, half, 1, bias=False), nn.InstanceNorm3d(half),
            nn.ReLU(), nn.Conv3d(half, channels, 1),
            nn.GroupNorm(max(channels // share_planes, 1), channels))
        self.value = nn.Sequential(nn.Conv3d(channels, channels, 1, bias=False),
                                   nn.InstanceNorm3d(channels))
        self.value_norm = nn.InstanceNorm3d(channels)
        hidden = max(channels // 2, 32)
        self.split = nn.Sequential(nn.Linear(channels, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                                   nn.Linear(hidden, 2 * channels))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        w = self.embed(torch.cat((y, x), dim=1))
        v = F.silu(self.value_norm(self.value(x) * w))
        pooled = (x + v).flatten(2).mean(2)  # (B, C)
        a = torch.softmax(self.split(pooled).view(x.shape[0], -1, 2), dim=2)  # (B, C, 2)
        shape = (*a.shape[:2], *[1] * (x.ndim - 2))
        return a[..., 0].reshape(shape) * x + a[..., 1].reshape(shape) * v


class ReleasedModalityAttention(nn.Module):
    """The released code's `Modal_Attention` for one primary modality i: each of its M inputs
    (slot 0 the primary, then the others in modality order) through its own conv1 (with
    bias) + IN + ReLU, ONE `MPABlock` shared by the M - 1 pairs (primary', other_j'), the
    pair outputs weighted by softmax(beta) (learnable, initialised equal), and the RAW primary
    added: out = f_i + sum_j beta_j MPA(P_0 f_i, P_j f_j). Unavailable others are left out of
    the softmax; with none available the output is f_i."""

    def __init__(self, channels: int, num_modalities: int, share_planes: int = 8):
        super().__init__()
        self.project = nn.ModuleList(
            nn.Sequential(nn.Conv3d(channels, channels, 1), nn.InstanceNorm3d(channels),
                          nn.ReLU())
            for _ in range(num_modalities))
        self.mpa = MPABlock(channels, share_planes)
        self.beta = nn.Parameter(torch.ones(num_modalities - 1))

    def forward(self, primary: Tensor, others: list[Tensor], available: Tensor) -> Tensor:
        """primary (B, C, *S), others M - 1 maps (B, C, *S), available (B, M - 1) bool."""
        n = len(others)
        first = self.project[0](primary)
        second = torch.cat([p(o) for p, o in zip(self.project[1:], others, strict=True)])
        # the pairs as one batch: instance, group and layer norms are per sample, so exact
        attended = self.mpa(first.repeat(n, *[1] * (first.ndim - 1)), second)
        attended = attended.unflatten(0, (n, primary.shape[0]))  # (M - 1, B, C, *S)
        logits = self.beta.float().expand(primary.shape[0], n)
        logits = logits.masked_fill(~available, torch.finfo(torch.float32).min)
        weights = (torch.softmax(logits, dim=1) * available).T.to(primary.dtype)  # (M - 1, B)
        return primary + (weights.view(n, -1, *[1] * (primary.ndim - 1)) * attended).sum(0)


class ReleasedRecalibrationBlock(nn.Module):
    """RFB as released: one `ReleasedModalityAttention` per modality (`rfb_variant:
    released`); an unavailable modality's output stays 0."""

    def __init__(self, channels: int, num_modalities: int, share_planes: int = 8):
        super().__init__()
        self.modalities = nn.ModuleList(
            ReleasedModalityAttention(channels, num_modalities, share_planes)
            for _ in range(num_modalities))

    def forward(self, features: Tensor, available: Tensor) -> Tensor:
        """features (B, M, C, *S) with unavailable modalities zeroed, available (B, M) bool."""
        m = features.shape[1]
        outputs = []
        for i, attention in enumerate(self.modalities):
            others = [j for j in range(m) if j != i]
            outputs.append(attention(features[:, i], [features[:, j] for j in others],
                                     available[:, others]))
        return mask_missing(torch.stack(outputs, dim=1), available)


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
