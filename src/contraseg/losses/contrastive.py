"""Pairwise contrastive losses and the similarity matrices they need, computed batched.

Items of a batch are indexed k = i * M + j (sample i, modality j), the flattening of a
(N, M, ...) tensor. Every function returns or consumes (K, K) matrices; no Python loop runs over
pairs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def item_labels(num_samples: int, num_modalities: int, device=None) -> tuple[Tensor, Tensor]:
    """Subject and modality index of each of the N*M items (k = i * M + j)."""
    subjects = torch.arange(num_samples, device=device).repeat_interleave(num_modalities)
    modalities = torch.arange(num_modalities, device=device).repeat(num_samples)
    return subjects, modalities


def same_label(labels: Tensor) -> Tensor:
    """(K, K) bool: True where items k and k' share a label (DC-Seg's f(.,.) = +1)."""
    return labels[:, None] == labels[None, :]


def sigmoid_pairwise_loss(similarity: Tensor, positive: Tensor, temperature: Tensor | float,
                          bias: Tensor | float = 0.0, valid: Tensor | None = None) -> Tensor:
    """-mean over pairs of log sigmoid(f * (t * s + b)), f = +1 for positives, -1 otherwise.

    DC-Seg Eq. 1/4 (b = 0): -1/(NM)^2 sum log 1 / (1 + exp(f * (-t * s))), SigLIP's loss with
    several positives per anchor. `valid` (K, K) bool restricts the mean to the pairs whose
    items both exist (absent modalities); every pair counts, the diagonal included, as in the
    equation's sum over all (i, j, i', j').
    """
    sign = positive.to(similarity.dtype) * 2 - 1
    terms = -F.logsigmoid(sign * (temperature * similarity + bias))
    if valid is None:
        return terms.mean()
    return terms[valid].mean()


def cosine_similarity_matrix(vectors: Tensor) -> Tensor:
    """(K, D) -> (K, K) cosine similarities, in float32 whatever the autocast."""
    with torch.autocast(vectors.device.type, enabled=False):
        unit = F.normalize(vectors.float(), dim=1)
        return unit @ unit.T


def gaussian_window(size: int, sigma: float, device=None) -> Tensor:
    """Normalised 1D Gaussian of `size` taps (separable SSIM window)."""
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def separable_blur(x: Tensor, window: Tensor) -> Tensor:
    """Valid (unpadded) convolution of x (..., *S) with `window` along each of the last
    `spatial` dims. x is (B, C, *S); the window runs over every dim of S."""
    spatial = x.ndim - 2
    taps = window.numel()
    for dim in range(2, 2 + spatial):
        moved = x.movedim(dim, -1)
        shape = moved.shape
        out = F.conv1d(moved.reshape(-1, 1, shape[-1]), window.view(1, 1, taps))
        x = out.reshape(*shape[:-1], out.shape[-1]).movedim(-1, dim)
    return x


def pairwise_ssim(maps: Tensor, window: int = 7, sigma: float = 1.5, c1: float = 1e-4,
                  c2: float = 9e-4) -> Tensor:
    """(K, C, *S) feature maps -> (K, K) SSIM, the channel-wise mean (DC-Seg Eq. 3).

    window = 0: global statistics per channel (mu, sigma over the whole map: Eq. 3 as printed).
    window > 0: the usual local SSIM with a separable Gaussian window of that many taps
    (standard deviation `sigma`), valid positions only, averaged over space; a window larger
    than the map is clipped to the map's smallest side. Computed in float32, autocast off (the
    variances are differences of nearby numbers).
    """
    with torch.autocast(maps.device.type, enabled=False):
        maps = maps.float()
        if window <= 0:
            return _global_ssim(maps, c1, c2)
        return _windowed_ssim(maps, window, sigma, c1, c2)


def _windowed_ssim(maps: Tensor, window: int, sigma: float, c1: float, c2: float) -> Tensor:
    size = min(window, *maps.shape[2:])
    kernel = gaussian_window(size, sigma, maps.device)
    k = maps.shape[0]
    first, second = torch.triu_indices(k, k, device=maps.device)
    mu = separable_blur(maps, kernel)  # (K, C, *S')
    mean_sq = separable_blur(maps * maps, kernel)
    mean_xy = separable_blur(maps[first] * maps[second], kernel)  # (P, C, *S')
    mu_x, mu_y = mu[first], mu[second]
    var_x, var_y = mean_sq[first] - mu_x**2, mean_sq[second] - mu_y**2
    cov = mean_xy - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
            / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)))
    values = ssim.flatten(1).mean(1)
    out = maps.new_zeros(k, k)
    out[first, second] = values
    out[second, first] = values
    return out


def _global_ssim(maps: Tensor, c1: float, c2: float) -> Tensor:
    flat = maps.flatten(2)  # (K, C, V)
    mu = flat.mean(2)  # (K, C)
    centred = flat - mu[..., None]
    cov = torch.einsum("kcv,lcv->ckl", centred, centred) / flat.shape[2]  # (C, K, K)
    var = torch.diagonal(cov, dim1=1, dim2=2)  # (C, K)
    mu_t = mu.T  # (C, K)
    luminance = (2 * mu_t[:, :, None] * mu_t[:, None, :] + c1) / (
        mu_t[:, :, None] ** 2 + mu_t[:, None, :] ** 2 + c1)
    structure = (2 * cov + c2) / (var[:, :, None] + var[:, None, :] + c2)
    return (luminance * structure).mean(0)



def dense_info_nce(features: Tensor, positive: Tensor, valid: Tensor | None = None,
                   temperature: float = 0.7) -> Tensor:
    """InfoNCE at every position, with several positives per anchor (DCL-MANet's dense
    contrastive learning).

    features (K, C, *S): K items (k = i * M + j, sample i, modality j) compared position by
    position with the cosine similarity s of their C-vectors. For an anchor a at a position,
    with positives P(a) (`positive` (K, K) bool, the diagonal ignored) and the other valid items
    as the denominator:

        l(a) = -1/|P(a)| sum_{p in P(a)} log( exp(s_ap / t) / sum_{k != a} exp(s_ak / t) )

    (the multi-positive InfoNCE of supervised contrastive learning, Khosla et al. 2020, Eq. 2).
    The loss is the mean of l over positions and over the valid anchors that have a valid
    positive; 0 (still in the graph) when there is none. `valid` (K,) bool drops items (absent
    modalities) from anchors, positives and denominators. Float32, autocast off.
    """
    k = features.shape[0]
    valid = torch.ones(k, dtype=torch.bool, device=features.device) if valid is None else valid
    eye = torch.eye(k, dtype=torch.bool, device=features.device)
    pair = valid[:, None] & valid[None, :] & ~eye  # (K, K) pairs that count
    pos = positive.to(torch.bool) & pair
    anchors = pos.any(1)
    with torch.autocast(features.device.type, enabled=False):
        unit = F.normalize(features.float().flatten(2), dim=1)  # (K, C, V)
        if not anchors.any():
            return unit.sum() * 0.0
        # rows of anchors only: each has a finite entry, so no row is all -inf (no NaN)
        logits = torch.einsum("kcv,lcv->vkl", unit[anchors], unit) / temperature  # (V, A, K)
        logits = logits.masked_fill(~pair[anchors], float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=2, keepdim=True)
        pos = pos[anchors]
        log_prob = torch.where(pos, log_prob, torch.zeros((), device=log_prob.device))
        return (-log_prob.sum(2) / pos.sum(1)).mean()


def simsiam_loss(p1: Tensor, p2: Tensor, v1: Tensor, v2: Tensor) -> Tensor:
    """SimSiam's symmetric negative cosine (Chen & He 2021; CLFC Eq. 1-2):
    1/2 D(p1, ng(v2)) + 1/2 D(p2, ng(v1)), D(p, v) = -mean over rows of cos(p, v), ng = no
    gradient. Rows are vectors (N, C); -1 for aligned pairs, 0 for orthogonal ones."""
    def negative_cosine(p: Tensor, v: Tensor) -> Tensor:
        return -F.cosine_similarity(p, v.detach(), dim=-1).mean()

    return 0.5 * negative_cosine(p1, v2) + 0.5 * negative_cosine(p2, v1)


def moco_v3_loss(q: Tensor, k: Tensor, temperature: float) -> Tensor:
    """MoCo v3's contrastive loss of queries q against keys k (N, C) each, one direction:
    cross-entropy of the cosine similarities / T with the matching key as the class, times 2T
    (the authors' scaling). Keys carry no gradient (they come from the momentum encoder)."""
    q = F.normalize(q.float(), dim=1)
    k = F.normalize(k.detach().float(), dim=1)
    logits = q @ k.t() / temperature
    labels = torch.arange(len(q), device=q.device)
    return F.cross_entropy(logits, labels) * (2 * temperature)


def momentum_at(progress: float, base: float) -> float:
    """MoCo v3's momentum schedule: from `base` at progress 0 to 1 at progress 1 on a half
    cosine, m = 1 - (1 - base) (1 + cos(pi t)) / 2."""
    progress = min(max(progress, 0.0), 1.0)
    return 1.0 - 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - base)


@torch.no_grad()
def momentum_update(target: torch.nn.Module, source: torch.nn.Module, momentum: float) -> None:
    """theta_target <- m theta_target + (1 - m) theta_source, parameter by parameter (buffers
    such as BatchNorm statistics are the target's own)."""
    for t, s in zip(target.parameters(), source.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
