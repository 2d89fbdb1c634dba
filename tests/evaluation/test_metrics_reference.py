"""Agreement with MedPy 0.5.2, MONAI and an uncropped computation on seeded random masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from contraseg.evaluation.metrics import binary_metrics, confusion_counts, surface_distances

CASES = [  # (seed, shape, spacing, touch_border)
    (0, (48, 40, 32), (0.86, 0.86, 1.5), False),
    (1, (48, 40, 32), (1.0, 1.0, 1.0), True),
    (2, (30, 50, 20), (0.5, 1.2, 3.0), True),
    (3, (64, 64), (1.0, 2.5), False),
    (4, (64, 48), (0.7, 0.3), True),
    (5, (25, 25, 25), (2.0, 1.0, 0.5), False),
]


def blob(rng: np.random.Generator, shape: tuple[int, ...], touch_border: bool) -> np.ndarray:
    """A few smooth blobs: Gaussian-smoothed noise above its 85th percentile."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=min(shape) / 12)
    mask = field > np.quantile(field, 0.85)
    if touch_border:  # put foreground on both ends of the first axis and the start of the last
        mask[0, ...] |= field[0, ...] > np.quantile(field, 0.6)
        mask[-1, ...] |= field[-1, ...] > np.quantile(field, 0.6)
        mask[..., 0] |= field[..., 0] > np.quantile(field, 0.6)
    return mask


def pair(seed: int, shape: tuple[int, ...], touch_border: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pred, ref = blob(rng, shape, touch_border), blob(rng, shape, touch_border)
    assert pred.any() and ref.any() and (pred & ref).any()
    return pred, ref


def uncropped_distances(pred: np.ndarray, ref: np.ndarray, spacing) -> tuple:
    """The same definition on the full image, without the bounding-box crop."""
    structure = ndimage.generate_binary_structure(pred.ndim, 1)
    pred_s = pred ^ ndimage.binary_erosion(pred, structure, border_value=0)
    ref_s = ref ^ ndimage.binary_erosion(ref, structure, border_value=0)
    return (
        ndimage.distance_transform_edt(~ref_s, sampling=spacing)[pred_s],
        ndimage.distance_transform_edt(~pred_s, sampling=spacing)[ref_s],
    )


@pytest.mark.parametrize(("seed", "shape", "spacing", "touch_border"), CASES)
def test_crop_changes_nothing(seed, shape, spacing, touch_border) -> None:
    pred, ref = pair(seed, shape, touch_border)
    for sp in (None, spacing):
        ours, full = surface_distances(pred, ref, sp), uncropped_distances(pred, ref, sp)
        for a, b in zip(ours, full, strict=True):
            np.testing.assert_array_equal(a, b)  # same voxels, same order, same bits


def test_crop_with_masks_at_opposite_corners() -> None:
    pred = np.zeros((20, 30, 10), dtype=bool)
    ref = np.zeros_like(pred)
    pred[0, 0, 0] = pred[1, 0, 0] = True
    ref[-3:, -1, -4:] = True
    for ours, full in zip(
        surface_distances(pred, ref, (1, 2, 3)),
        uncropped_distances(pred, ref, (1, 2, 3)),
        strict=True,
    ):
        np.testing.assert_array_equal(ours, full)


def test_small_box_inside_large_image_matches_uncropped() -> None:
    pred, ref = pair(7, (24, 20, 16), False)
    inner = (slice(1, -1),) * 3  # keep off the small image's edge, which would be surface there
    pred, ref = np.pad(pred[inner], 1), np.pad(ref[inner], 1)
    big_pred = np.zeros((80, 70, 60), dtype=bool)
    big_ref = np.zeros_like(big_pred)
    big_pred[30:54, 25:45, 20:36] = pred
    big_ref[30:54, 25:45, 20:36] = ref
    ours = binary_metrics(big_pred, big_ref, spacing=(0.9, 1.1, 2.0))
    small = binary_metrics(pred, ref, spacing=(0.9, 1.1, 2.0))
    del ours["specificity"], small["specificity"]  # true negatives grow with the image
    assert ours == small


@pytest.mark.parametrize(("seed", "shape", "spacing", "touch_border"), CASES)
def test_agrees_with_medpy(seed, shape, spacing, touch_border) -> None:
    mb = pytest.importorskip("medpy.metric.binary")
    pred, ref = pair(seed, shape, touch_border)
    for sp in (None, spacing):
        ours = binary_metrics(pred, ref, spacing=sp, hd95_definition="brats")
        expected = {
            "dice": mb.dc(pred, ref),
            "sensitivity": mb.sensitivity(pred, ref),
            "specificity": mb.specificity(pred, ref),
            "precision": mb.precision(pred, ref),
            "hd": mb.hd(pred, ref, voxelspacing=sp),
            "hd95": mb.hd95(pred, ref, voxelspacing=sp),
            "assd": mb.assd(pred, ref, voxelspacing=sp),
        }
        for name, value in expected.items():
            assert ours[name] == pytest.approx(value, rel=1e-9, abs=0), name


@pytest.mark.filterwarnings("ignore::FutureWarning")  # a deprecation inside MONAI itself
@pytest.mark.parametrize(("seed", "shape", "spacing", "touch_border"), CASES)
def test_monai_hd95_agrees_with_monai(seed, shape, spacing, touch_border) -> None:
    # MONAI's edges are the same (scipy's default erosion structure is the face-connected one and
    # its border value is 0; MONAI crops to the union box + 1, padding with zeros at the edge),
    # and its KD-tree nearest-edge distances are exact. It returns float32, hence rel=1e-5.
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    pred, ref = pair(seed, shape, touch_border)

    def one_hot(mask: np.ndarray):
        return torch.from_numpy(mask[None, None].astype(np.float32))

    for sp in (None, spacing):
        ours = binary_metrics(pred, ref, spacing=sp, hd95_definition="monai")
        for percentile, name in ((95, "hd95"), (None, "hd")):
            theirs = monai_metrics.compute_hausdorff_distance(
                one_hot(pred), one_hot(ref), include_background=True,
                percentile=percentile, spacing=sp,
            ).item()
            assert ours[name] == pytest.approx(theirs, rel=1e-5), name


def test_the_two_hd95_definitions_differ() -> None:
    # Pooled percentile <= max of the directed percentiles; on skewed cases strictly less.
    pred, ref = pair(3, (64, 64), False)
    brats = binary_metrics(pred, ref, hd95_definition="brats")["hd95"]
    monai = binary_metrics(pred, ref, hd95_definition="monai")["hd95"]
    assert brats < monai


def test_counts_agree_with_dense_arithmetic() -> None:
    pred, ref = pair(2, (30, 50, 20), True)
    counts = confusion_counts(pred, ref)
    assert counts.tp == int((pred & ref).sum()) and counts.tn == int((~pred & ~ref).sum())
    assert counts.fp == int((pred & ~ref).sum()) and counts.fn == int((~pred & ref).sum())
