"""The contrastive pieces against hand computation: DC-Seg's pairwise losses and SSIM (also
against MONAI's), DCL-MANet's dense InfoNCE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from contraseg.losses.contrastive import (
    cosine_similarity_matrix,
    dense_info_nce,
    item_labels,
    pairwise_ssim,
    same_label,
    sigmoid_pairwise_loss,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_sigmoid_pairwise_loss_on_a_hand_built_matrix():
    similarity = torch.tensor([[1.0, 0.5, -0.2], [0.5, 1.0, 0.3], [-0.2, 0.3, 1.0]])
    positive = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    t, b = 2.0, -0.5
    # -log sigmoid(f * (t s + b)) = softplus(-f * (t s + b))
    expected = np.mean([softplus(-(1 if positive[r, c] else -1) * (t * similarity[r, c].item() + b))
                        for r in range(3) for c in range(3)])
    loss = sigmoid_pairwise_loss(similarity, positive, torch.tensor(t), b)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # Eq. 1 as printed (no bias): diagonal softplus(-2), etc.
    no_bias = sigmoid_pairwise_loss(similarity, positive, t)
    manual = (3 * softplus(-2.0) + 2 * softplus(-1.0) + 2 * softplus(-0.4) + 2 * softplus(0.6)) / 9
    assert no_bias.item() == pytest.approx(manual, rel=1e-6)


def test_separated_pairs_give_a_lower_loss_than_shuffled_ones():
    subjects, _ = item_labels(3, 4)
    positive = same_label(subjects)
    separated = positive.float() * 2 - 1  # +1 for positives, -1 for negatives: the optimum
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(12, generator=gen)
    shuffled = separated[order][:, order]
    for t in (1.0, 10.0):
        assert sigmoid_pairwise_loss(separated, positive, t) < sigmoid_pairwise_loss(
            shuffled, positive, t)
    # the closed-form minimum over s in [-1, 1] is softplus(-t) for every pair
    t = 5.0
    assert sigmoid_pairwise_loss(separated, positive, t).item() == pytest.approx(softplus(-t))
    losses = [sigmoid_pairwise_loss(separated, positive, t).item() for t in (1, 2, 5, 20)]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 1e-8


def test_pair_masks_for_two_samples_and_four_modalities():
    subjects, modalities = item_labels(2, 4)
    assert subjects.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert modalities.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    same_subject = same_label(subjects)
    same_modality = same_label(modalities)
    block = torch.ones(4, 4, dtype=torch.bool)
    zeros = torch.zeros(4, 4, dtype=torch.bool)
    assert torch.equal(same_subject, torch.cat([torch.cat([block, zeros], 1),
                                                torch.cat([zeros, block], 1)], 0))
    eye = torch.eye(4, dtype=torch.bool)
    assert torch.equal(same_modality, torch.cat([torch.cat([eye, eye], 1),
                                                 torch.cat([eye, eye], 1)], 0))
    assert same_subject.sum() == 32 and same_modality.sum() == 16  # of 64 pairs


@pytest.mark.parametrize("window", [0, 5])
def test_ssim_of_identical_maps_is_one_and_of_noise_near_zero(window):
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 4, 12, 12, 12, generator=gen)
    maps = torch.stack([maps[0], maps[0].clone(), maps[1]])
    ssim = pairwise_ssim(maps, window=window)
    assert ssim.shape == (3, 3)
    assert torch.allclose(torch.diagonal(ssim), torch.ones(3), atol=1e-5)
    assert ssim[0, 1].item() == pytest.approx(1.0, abs=1e-5)
    assert abs(ssim[0, 2].item()) < 0.05 and abs(ssim[1, 2].item()) < 0.05
    assert torch.allclose(ssim, ssim.T)


def test_global_ssim_by_hand():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([2.0, 2.0, 4.0, 5.0])
    c1, c2 = 1e-4, 9e-4
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    expected = ((2 * x.mean() * y.mean() + c1) * (2 * cov + c2)
                / ((x.mean() ** 2 + y.mean() ** 2 + c1) * (x.var() + y.var() + c2)))
    maps = torch.tensor(np.stack([x, y]), dtype=torch.float32).view(2, 1, 2, 2, 1)
    assert pairwise_ssim(maps, window=0)[0, 1].item() == pytest.approx(expected, rel=1e-5)
    # channel-wise mean: a second channel identical in both maps adds a 1
    two = torch.cat([maps, torch.ones_like(maps)], dim=1)
    assert pairwise_ssim(two, window=0)[0, 1].item() == pytest.approx((expected + 1) / 2,
                                                                       rel=1e-5)


def test_ssim_of_anti_correlated_maps_by_hand():
    """y = -x with zero means: luminance 1, structure (-2 var + c2) / (2 var + c2), var = 1.25;
    with means +-2.5 the luminance is negative too and the product turns positive (Eq. 3's
    known blind spot, kept as printed)."""
    x = torch.tensor([-1.5, -0.5, 0.5, 1.5])
    zero_mean = torch.stack([x, -x]).view(2, 1, 2, 2, 1)
    expected = (-2.5 + 9e-4) / (2.5 + 9e-4)  # -0.99928...
    assert pairwise_ssim(zero_mean, window=0)[0, 1].item() == pytest.approx(expected, rel=1e-6)
    shifted = torch.stack([x + 2.5, -(x + 2.5)]).view(2, 1, 2, 2, 1)
    luminance = (-2 * 2.5**2 + 1e-4) / (2 * 2.5**2 + 1e-4)
    assert pairwise_ssim(shifted, window=0)[0, 1].item() == pytest.approx(
        luminance * expected, rel=1e-6)


@pytest.mark.parametrize("anti", [False, True])
def test_windowed_ssim_matches_monai(anti):
    monai_metrics = pytest.importorskip("monai.metrics")
    gen = torch.Generator().manual_seed(1)
    base = torch.rand(1, 1, 14, 14, 14, generator=gen)
    other = 0.6 * base + 0.4 * torch.rand(1, 1, 14, 14, 14, generator=gen)
    if anti:  # anti-correlated: the structure term is negative
        other = 1.0 - other
    metric = monai_metrics.SSIMMetric(spatial_dims=3, data_range=1.0, kernel_type="gaussian",
                                      win_size=7, kernel_sigma=1.5, k1=0.01, k2=0.03)
    reference = metric(base, other).item()
    ours = pairwise_ssim(torch.cat([base, other]), window=7, sigma=1.5)[0, 1].item()
    assert ours == pytest.approx(reference, rel=1e-5)  # measured: 3e-7


def test_cosine_similarity_matrix():
    vectors = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    expected = torch.tensor([[1.0, 1.0, 0.0, -1.0], [1.0, 1.0, 0.0, -1.0],
                             [0.0, 0.0, 1.0, 0.0], [-1.0, -1.0, 0.0, 1.0]])
    assert torch.allclose(cosine_similarity_matrix(vectors), expected)


# --- dense InfoNCE (DCL-MANet) ------------------------------------------------------------------

def _dense(vectors: list[list[float]], size: int = 2) -> torch.Tensor:
    """(K, C) vectors repeated at every position of a size^3 map -> (K, C, size, size, size)."""
    v = torch.tensor(vectors, dtype=torch.float32)
    return v[:, :, None, None, None].expand(*v.shape, size, size, size).clone()


def test_dense_info_nce_identical_positives_orthogonal_negatives():
    t = 0.7
    # N=2 samples x M=2 modalities, k = i*M + j; same modality -> identical, else orthogonal
    features = _dense([[1, 0], [0, 1], [1, 0], [0, 1]])
    _, modality = item_labels(2, 2)
    loss = dense_info_nce(features, same_label(modality), temperature=t)
    # each anchor: one positive at s=1, two negatives at s=0
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_dense_info_nce_several_positives_and_scaled_vectors():
    t = 0.7
    # N=2 x M=3, common term: the modalities of one sample are identical (up to scale)
    features = _dense([[2, 0], [1, 0], [5, 0], [0, 3], [0, 1], [0, 1]])
    subject, _ = item_labels(2, 3)
    loss = dense_info_nce(features, same_label(subject), temperature=t)
    # each anchor: two positives at s=1, three negatives at s=0
    expected = -math.log(math.exp(1 / t) / (2 * math.exp(1 / t) + 3))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_dense_info_nce_invalid_items_leave_every_sum():
    t = 0.5
    features = _dense([[1, 0], [0, 1], [1, 0], [0, 1]])
    _, modality = item_labels(2, 2)
    valid = torch.tensor([True, True, True, False])
    loss = dense_info_nce(features, same_label(modality), valid, temperature=t)
    # item 1 has lost its positive (item 3): anchors 0 and 2, each 1 positive + 1 negative
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 1))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # NaN in the invalid item changes nothing
    features[3] = float("nan")
    assert dense_info_nce(features, same_label(modality), valid, temperature=t).item() == \
        pytest.approx(expected, abs=1e-6)


def test_dense_info_nce_equals_a_loop_over_positions_and_anchors():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(6, 5, 3, 2, 2, generator=gen)
    subject, modality = item_labels(3, 2)
    positive = same_label(modality)
    valid = torch.tensor([True, True, False, True, True, True])
    t = 0.7
    losses = []
    for v in range(12):
        f = torch.nn.functional.normalize(features.flatten(2)[:, :, v], dim=1)
        for a in range(6):
            others = [k for k in range(6) if k != a and valid[k] and valid[a]]
            positives = [k for k in others if positive[a, k]]
            if not positives:
                continue
            denominator = torch.logsumexp(torch.stack([f[a] @ f[k] / t for k in others]), 0)
            losses.append(-sum(f[a] @ f[p] / t - denominator for p in positives)
                          / len(positives))
    expected = torch.stack(losses).mean()
    assert dense_info_nce(features, positive, valid, t).item() == pytest.approx(
        expected.item(), abs=1e-5)


def test_dense_info_nce_without_anchors_is_zero_with_a_gradient():
    features = torch.randn(4, 3, 2, 2, 2, requires_grad=True)
    positive = torch.eye(4, dtype=torch.bool)  # only self-pairs: nobody has a positive
    loss = dense_info_nce(features, positive)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


def test_dense_info_nce_lower_for_clustered_features():
    gen = torch.Generator().manual_seed(1)
    _, modality = item_labels(4, 2)
    centres = torch.randn(2, 8, generator=gen)
    clustered = centres[modality] + 0.05 * torch.randn(8, 8, generator=gen)
    shuffled = centres[modality[torch.randperm(8, generator=gen)]]
    as_map = lambda v: v[:, :, None, None, None]  # noqa: E731
    assert dense_info_nce(as_map(clustered), same_label(modality)) < dense_info_nce(
        as_map(shuffled), same_label(modality))


def test_moco_v3_loss_reaches_the_analytic_minimum_for_perfect_alignment():
    import math

    from contraseg.losses.contrastive import moco_v3_loss

    t = 0.5
    # N = 2: q_i = k_i, the two keys opposite (cos -1 = -1/(N-1), the best separation)
    q = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    by_hand = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(-1 / t))) * 2 * t
    assert moco_v3_loss(q, q.clone(), t).item() == pytest.approx(by_hand, rel=1e-5)
    # N orthogonal pairs (N <= C): 2T log(1 + (N - 1) e^(-1/T))
    n = 4
    eye = torch.eye(n) * 3.0  # scale does not matter: cosine similarities
    expected = 2 * t * math.log(1 + (n - 1) * math.exp(-1 / t))
    assert moco_v3_loss(eye, torch.eye(n), t).item() == pytest.approx(expected, rel=1e-5)
    # a regular simplex of N = 3 in 2D (cos -1/2) beats orthogonal keys, and misaligned is worse
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    simplex = torch.stack([angles.cos(), angles.sin()], dim=1)
    simplex_min = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * math.exp(-0.5 / t))) * 2 * t
    assert moco_v3_loss(simplex, simplex, t).item() == pytest.approx(simplex_min, rel=1e-5)
    assert moco_v3_loss(simplex, simplex.roll(1, 0), t).item() > simplex_min + 1


def test_moco_v3_keys_carry_no_gradient():
    from contraseg.losses.contrastive import moco_v3_loss

    q = torch.randn(5, 8, requires_grad=True)
    k = torch.randn(5, 8, requires_grad=True)
    moco_v3_loss(q, k, 1.0).backward()
    assert q.grad is not None and k.grad is None


def test_momentum_schedule_and_update():
    import math

    from contraseg.losses.contrastive import momentum_at, momentum_update

    assert momentum_at(0.0, 0.99) == pytest.approx(0.99)
    assert momentum_at(1.0, 0.99) == pytest.approx(1.0)
    assert momentum_at(0.5, 0.99) == pytest.approx(1 - 0.5 * 0.01)
    assert momentum_at(0.25, 0.99) == pytest.approx(1 - 0.5 * (1 + math.cos(math.pi / 4)) * 0.01)
    target, source = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = target.weight.detach().clone()
    momentum_update(target, source, 0.9)
    assert torch.allclose(target.weight, 0.9 * before + 0.1 * source.weight)
    momentum_update(target, source, 1.0)  # m = 1 freezes the target
    assert torch.allclose(target.weight, 0.9 * before + 0.1 * source.weight)
