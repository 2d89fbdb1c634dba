"""Training patches: subsets, foreground oversampling, padding, replay."""

from __future__ import annotations

from collections import Counter

import numpy as np

from contraseg.data.dataset import (
    PatchSampler,
    TrainCase,
    build_augmentation,
    crop_patch,
    sample_subset,
)
from contraseg.data.labels import get_convention
from contraseg.engine.config import AugmentConfig


def toy_case(present=(True, True, True, True)) -> TrainCase:
    label = np.zeros((40, 40, 40), np.uint8)
    label[30:34, 30:34, 30:34] = 2
    image = np.random.default_rng(0).standard_normal((4, 40, 40, 40)).astype(np.float32)
    image *= np.asarray(present)[:, None, None, None]
    return TrainCase("toy", image, label, np.asarray(present), np.argwhere(label > 0))


def test_subsets_are_uniform_over_the_present_modalities():
    rng = np.random.default_rng(0)
    present = np.array([True, False, True, True])
    counts = Counter(tuple(sample_subset(present, rng)) for _ in range(7000))
    assert len(counts) == 7  # 2^3 - 1 non-empty subsets of the 3 present modalities
    assert all(not subset[1] for subset in counts)  # the absent modality is never available
    assert all(abs(n / 7000 - 1 / 7) < 0.02 for n in counts.values())


def test_foreground_fraction_one_always_sees_tumour_and_zero_rarely():
    case = toy_case()
    rng = np.random.default_rng(1)
    always = PatchSampler([case], (8, 8, 8), 1.0, False)
    assert all(always.sample_one(rng)["target"].any() for _ in range(50))
    never = PatchSampler([case], (8, 8, 8), 0.0, False)
    hits = sum(never.sample_one(rng)["target"].any() for _ in range(200))
    assert hits < 40  # the 4^3 tumour is a small part of a 40^3 volume


def test_crop_pads_small_volumes_with_zeros():
    array = np.ones((2, 5, 5, 5), np.float32)
    patch = crop_patch(array, (0, 0, 0), (8, 8, 8))
    assert patch.shape == (2, 8, 8, 8)
    assert patch[:, :5, :5, :5].all() and not patch[:, 5:].any()


def test_augmented_batches_replay_from_the_same_seed_and_keep_absent_channels_zero():
    case = toy_case(present=(True, False, True, False))
    augment = build_augmentation(AugmentConfig(shift_prob=1.0, scale_prob=1.0))
    sampler = PatchSampler([case], (16, 16, 16), 0.5, True, augment)
    a = sampler.sample(np.random.default_rng([3, 9]), 2)
    b = sampler.sample(np.random.default_rng([3, 9]), 2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not a["images"][:, [1, 3]].any()  # intensity shift never fills an absent channel
    assert set(np.unique(a["target"])) <= set(get_convention("brats2023").to_canonical(
        np.array([0, 1, 2, 3])).tolist())
