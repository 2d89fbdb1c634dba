"""Training patches: subsets, foreground oversampling, padding, replay, and the sampling
rules (distinct cases per batch, uniform random crops, inference's centring of small volumes,
in-plane rotations for slice methods)."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from scipy.stats import chisquare

from contraseg.data.labels import get_convention
from contraseg.data.patches import (
    PatchSampler,
    build_augmentation,
    plain_tensors,
    sample_subset,
)
from contraseg.data.phantom import write_phantom
from contraseg.data.train_case import TrainCase, crop_patch
from contraseg.engine.config import AugmentConfig, DataConfig
from contraseg.engine.runs import start_training
from contraseg.errors import ConfigError
from contraseg.models.registry import get_entry


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


def test_full_modality_prob_keeps_every_present_modality_that_often():
    rng = np.random.default_rng(0)
    present = np.array([True, True, False, True])
    draws = [tuple(sample_subset(present, rng, full_prob=0.5)) for _ in range(7000)]
    full = sum(d == tuple(present) for d in draws) / len(draws)
    assert abs(full - (0.5 + 0.5 / 7)) < 0.02  # kept whole, or drawn whole among the 7 subsets
    assert all(not d[2] for d in draws)
    rest = Counter(d for d in draws if d != tuple(present))
    assert len(rest) == 6 and all(abs(n / len(draws) - 0.5 / 7) < 0.015 for n in rest.values())


def test_sampler_passes_full_modality_prob_and_config_refuses_a_bad_one():
    sampler = PatchSampler([toy_case()], (8, 8, 8), 0.0, True, full_modality_prob=1.0)
    rng = np.random.default_rng(2)
    assert all(sampler.sample_one(rng)["available"].all() for _ in range(20))
    with pytest.raises(ConfigError, match="full_modality_prob"):
        DataConfig(full_modality_prob=1.5)


def tumour_slab_case(case_id: str = "slabs", tumour_slices=range(10, 20)) -> TrainCase:
    label = np.zeros((8, 8, 30), np.uint8)
    for z in tumour_slices:
        label[2:4, 2:4, z] = 2
    image = np.broadcast_to(np.arange(30, dtype=np.float32), (1, 8, 8, 30)).copy()
    return TrainCase(case_id, image, label, np.array([True]), np.argwhere(label > 0))


@pytest.mark.parametrize("depth", [1, 3])
def test_tumour_free_patches_hold_no_tumour_slice_and_reach_every_free_window(depth):
    case = tumour_slab_case()
    sampler = PatchSampler([case], (8, 8, depth), 1.0, False, tumour_free=True)
    rng = np.random.default_rng(0)
    first = [int(sampler.sample_one(rng)["images"][0, 0, 0, 0]) for _ in range(600)]
    tumour = set(range(10, 20))
    expected = {z for z in range(30 - depth + 1) if not set(range(z, z + depth)) & tumour}
    assert set(first) == expected  # every tumour-free window, none touching slices 10-19


def test_tumour_free_sampling_leaves_out_cases_without_a_free_window():
    whole = tumour_slab_case("all tumour", range(30))
    sampler = PatchSampler([whole, tumour_slab_case()], (8, 8, 1), 0.0, False,
                           tumour_free=True)
    assert [c.case_id for c in sampler.cases] == ["slabs"]
    with pytest.raises(ConfigError, match="tumour-free"):
        PatchSampler([whole], (8, 8, 1), 0.0, False, tumour_free=True)


def test_foreground_fraction_one_always_sees_tumour_and_zero_rarely():
    case = toy_case()
    rng = np.random.default_rng(1)
    always = PatchSampler([case], (8, 8, 8), 1.0, False)
    assert all(always.sample_one(rng)["target"].any() for _ in range(50))
    never = PatchSampler([case], (8, 8, 8), 0.0, False)
    hits = sum(never.sample_one(rng)["target"].any() for _ in range(200))
    assert hits < 40  # the 4^3 tumour is a small part of a 40^3 volume


def monai_windows(image: np.ndarray, roi: tuple[int, ...]) -> list[np.ndarray]:
    """The windows MONAI's sliding_window_inference feeds its predictor (what inference sees),
    recorded by an identity predictor; overlap 0 gives the first and the last window per axis."""
    windows: list[np.ndarray] = []

    def record(x: torch.Tensor) -> torch.Tensor:
        windows.extend(w.numpy().copy() for w in x)
        return x

    sliding_window_inference(torch.from_numpy(image)[None], roi, 1, record, overlap=0.0)
    return windows


def test_small_volumes_are_placed_in_a_patch_as_inference_pads_them():
    """Odd and even shortfalls (8 - 5, 8 - 3; 12 > 8 needs two windows): the training crop is
    MONAI's window, not the volume in the top-left corner."""
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, 5, 12, 3)).astype(np.float32) + 10  # no zero voxel
    windows = monai_windows(image, (8, 8, 8))
    assert len(windows) == 2
    crops = [crop_patch(image, (0, y, 0), (8, 8, 8)) for y in (0, 4)]
    assert all(np.array_equal(c, w) for c, w in zip(crops, windows, strict=True))


def test_sampled_patches_of_a_small_case_equal_the_inference_window():
    """The sampler's image and target of a case smaller than the patch on two axes are the
    single window (and label window) of MONAI's sliding window."""
    rng = np.random.default_rng(1)
    image = rng.standard_normal((2, 5, 8, 3)).astype(np.float32) + 10
    label = rng.integers(0, 4, (5, 8, 3)).astype(np.uint8)
    case = TrainCase("small", image, label, np.ones(2, bool), np.argwhere(label > 0))
    (window,) = monai_windows(image, (8, 8, 8))
    (label_window,) = monai_windows(label[None].astype(np.float32), (8, 8, 8))
    sampler = PatchSampler([case], (8, 8, 8), 0.5, False)
    for _ in range(5):
        item = sampler.sample_one(rng)
        assert np.array_equal(item["images"], window)
        assert np.array_equal(item["target"], label_window[0].astype(np.int64))


def test_crop_refuses_a_window_outside_the_volume():
    with pytest.raises(ValueError, match="does not fit"):
        crop_patch(np.ones((1, 10, 10, 10), np.float32), (4, 0, 0), (8, 8, 8))


def coordinate_case(size: int = 20) -> TrainCase:
    """Channel c holds each voxel's coordinate along axis c (a crop's corner gives its start);
    no foreground."""
    image = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij")).astype(np.float32)
    label = np.zeros((size,) * 3, np.uint8)
    return TrainCase("grid", image, label, np.ones(3, bool), np.zeros((0, 3), np.int32))


def test_random_crop_starts_are_uniform_over_the_valid_range():
    """Volume 20, patch 8: starts 0..12 equally likely on every axis (a centre drawn over the
    volume and clipped gave 0 and 12 about 4.5 times the mass of the others)."""
    sampler = PatchSampler([coordinate_case()], (8, 8, 8), 0.0, False)
    rng = np.random.default_rng(2)
    starts = np.array([sampler.sample_one(rng)["images"][:, 0, 0, 0] for _ in range(6500)])
    for axis in range(3):
        counts = np.bincount(starts[:, axis].astype(int), minlength=13)
        assert len(counts) == 13 and counts.all()
        assert chisquare(counts).pvalue > 1e-3, counts


def id_cases(n: int) -> list[TrainCase]:
    """n cases whose image is their index (a batch item names its case)."""
    label = np.zeros((10, 10, 10), np.uint8)
    return [TrainCase(f"c{i}", np.full((1, 10, 10, 10), i, np.float32), label,
                      np.ones(1, bool), np.zeros((0, 3), np.int32)) for i in range(n)]


def batch_cases(sampler: PatchSampler, seed: int, batch_size: int) -> list[int]:
    batch = sampler.sample(np.random.default_rng([seed, 5]), batch_size)
    return batch["images"][:, 0, 0, 0, 0].astype(int).tolist()


def test_a_batch_never_holds_one_case_twice():
    sampler = PatchSampler(id_cases(5), (8, 8, 8), 0.0, False)
    for seed in range(200):
        for batch_size in (2, 3, 5):
            cases = batch_cases(sampler, seed, batch_size)
            assert len(set(cases)) == batch_size, (seed, cases)


def test_batches_larger_than_the_training_set_use_every_case_before_repeating():
    sampler = PatchSampler(id_cases(5), (8, 8, 8), 0.0, False)
    for seed in range(50):
        cases = batch_cases(sampler, seed, 12)
        assert sorted(cases[:5]) == sorted(cases[5:10]) == list(range(5))
        assert len(set(cases[10:])) == 2


def test_batch_cases_and_pairs_are_uniform():
    """Without replacement, yet every case and every pair of cases equally likely."""
    sampler = PatchSampler(id_cases(5), (8, 8, 8), 0.0, False)
    batches = [batch_cases(sampler, seed, 2) for seed in range(3000)]
    per_case = Counter(c for batch in batches for c in batch)
    assert chisquare([per_case[c] for c in range(5)]).pvalue > 1e-3
    pairs = Counter(tuple(sorted(batch)) for batch in batches)
    assert set(pairs) == set(combinations(range(5), 2))
    assert chisquare(list(pairs.values())).pvalue > 1e-3


def test_batch_larger_than_the_training_cases_is_refused_for_contrastive_methods(tmp_path):
    """The Trainer refuses dc-seg's batch of 3 with 2 training cases (3 phantoms, 1 for
    validation) before building anything, naming both numbers and the fix."""
    data = tmp_path / "ph"
    write_phantom(data, cases=3, size=24, seed=1)
    with pytest.raises(ConfigError, match=r"batch_size 3 is larger than the 2 training cases"
                                          r".*data\.batch_size <= 2"):
        start_training(tmp_path / "run", method="dc-seg", data=[data], preset="tiny",
                       overrides=["data.batch_size=3"], resume=False, max_steps=1,
                       max_minutes=None, console=None)
    assert not (tmp_path / "run" / "checkpoints").exists()
    dcseg, unet = get_entry("dc-seg").cls, get_entry("unet").cls
    dcseg.check_training_cases({"ana": 0, "mod": 0}, 3, 2)  # no contrastive term: allowed
    unet.check_training_cases({}, 3, 2)  # unet's batch items are never compared
    dcseg.check_training_cases({}, 2, 2)


def slice_case(depth: int = 6) -> dict[str, np.ndarray]:
    """Slice k of the image is constant k + 1, of the label the class k % 3 + 1."""
    k = np.arange(depth)
    image = np.broadcast_to((k + 1).astype(np.float32), (1, 24, 24, depth)).copy()
    label = np.broadcast_to((k % 3 + 1).astype(np.float32), (1, 24, 24, depth)).copy()
    return {"image": image, "label": label}


ROTATE_ONLY = AugmentConfig(flip_prob=0.0, rotate_prob=1.0, rotate_degrees=30.0,
                            scale_prob=0.0, shift_prob=0.0)


def rotated(spatial: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    augment = build_augmentation(ROTATE_ONLY, spatial)
    augment.set_random_state(seed=seed)
    out = augment(slice_case())
    return np.asarray(out["image"])[0], np.asarray(out["label"])[0]


@pytest.mark.parametrize("spatial", ["2.5d", "2d"])
def test_slice_methods_rotate_in_plane_only(spatial):
    """Every slice keeps its own values: the image is (k + 1) x one in-plane rotated mask
    (interpolated towards the zero padding only), the label k's class or 0."""
    k = np.arange(6)
    for seed in range(10):
        image, label = rotated(spatial, seed)
        mask = image / (k + 1)
        assert np.allclose(mask, mask[..., :1], atol=1e-5)
        assert 0 <= mask.min() and mask.max() <= 1 + 1e-5 and (mask < 0.99).any()  # rotated
        assert all(set(np.unique(label[..., i])) <= {0.0, float(i % 3 + 1)} for i in k)


def test_3d_methods_rotate_about_every_axis():
    """The 3D augmentation moves voxels between slices (what the slice methods must not see)."""
    k = np.arange(6)
    for seed in range(10):
        image, _ = rotated("3d", seed)
        mask = image / (k + 1)
        assert not np.allclose(mask, mask[..., :1], atol=1e-2)


def test_augmented_batches_replay_from_the_same_seed_and_keep_absent_channels_zero():
    case = toy_case(present=(True, False, True, False))
    augment = build_augmentation(AugmentConfig(shift_prob=1.0, scale_prob=1.0), "3d")
    sampler = PatchSampler([case], (16, 16, 16), 0.5, True, augment)
    a = sampler.sample(np.random.default_rng([3, 9]), 2)
    b = sampler.sample(np.random.default_rng([3, 9]), 2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not a["images"][:, [1, 3]].any()  # intensity shift never fills an absent channel
    assert set(np.unique(a["target"])) <= set(get_convention("brats2023").to_canonical(
        np.array([0, 1, 2, 3])).tolist())


def test_augmenting_without_metadata_gives_the_same_values_and_restores_the_flag():
    """`plain_tensors` (MONAI without MetaTensor, for speed) changes no value of any
    transform, rotations included, and leaves MONAI's global flag as it found it."""
    from monai.data import get_track_meta

    augment = build_augmentation(AugmentConfig(flip_prob=0.5, rotate_prob=1.0, scale_prob=1.0,
                                               shift_prob=1.0), "3d")
    case = toy_case()
    for seed in range(6):
        item = {"image": case.image[:, :16, :16, :16].copy(),
                "label": case.label[None, 24:40, 24:40, 24:40].astype(np.float32)}
        augment.set_random_state(seed=seed)
        tracked = augment(dict(item))
        augment.set_random_state(seed=seed)
        with plain_tensors():
            assert not get_track_meta()
            plain = augment(dict(item))
        assert get_track_meta()
        for key in item:
            assert type(plain[key]) is torch.Tensor
            np.testing.assert_array_equal(np.asarray(plain[key]), np.asarray(tracked[key]))
