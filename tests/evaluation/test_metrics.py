"""Metrics on tiny cases computed by hand, empty masks, multi-class scores and the score report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from contraseg.errors import ConfigError
from contraseg.evaluation.metrics import (
    BRATS_EMPTY_DISTANCE,
    METRIC_NAMES,
    ConfusionCounts,
    EmptyPolicy,
    MetricSettings,
    binary_metrics,
    confusion_counts,
    get_empty_policy,
    mask_surface,
    region_metrics,
    score_label_maps,
    surface_distances,
)
from contraseg.evaluation.multiclass import confusion_matrix, multiclass_metrics

# 1D pair: pred covers 1..3, ref covers 2..5 (8 voxels).
PRED_1D = np.array([0, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
REF_1D = np.array([0, 0, 1, 1, 1, 1, 0, 0], dtype=bool)


def test_confusion_counts_are_python_ints() -> None:
    counts = confusion_counts(PRED_1D, REF_1D)
    assert counts == ConfusionCounts(tp=2, fp=1, fn=2, tn=3)
    assert all(type(c) is int for c in counts)


def test_overlap_metrics_by_hand() -> None:
    m = binary_metrics(PRED_1D, REF_1D)
    assert list(m) == list(METRIC_NAMES)
    assert m["dice"] == pytest.approx(4 / 7)
    assert m["iou"] == pytest.approx(2 / 5)
    assert m["sensitivity"] == pytest.approx(2 / 4)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["vs"] == pytest.approx(1 - 1 / 7)


def test_surface_distances_by_hand_1d() -> None:
    # Surfaces: pred {1, 3}, ref {2, 5}. pred->ref: 1, 1; ref->pred: 1 (2->1 or 3), 2 (5->3).
    d_pr, d_rp = surface_distances(PRED_1D, REF_1D)
    np.testing.assert_array_equal(d_pr, [1, 1])
    np.testing.assert_array_equal(d_rp, [1, 2])
    m = binary_metrics(PRED_1D, REF_1D)
    assert m["hd"] == 2
    assert m["assd"] == pytest.approx(5 / 4)  # pooled mean, not the mean of the two means (7/6)
    # Pooled sorted [1, 1, 1, 2]: rank 0.95 * 3 = 2.85 -> 1 + 0.85 * (2 - 1).
    assert m["hd95"] == pytest.approx(1.85)
    # Directed: [1, 1] -> 1; [1, 2] -> 1 + 0.95 * 1.
    assert binary_metrics(PRED_1D, REF_1D, hd95_definition="monai")["hd95"] == pytest.approx(1.95)


def test_spacing_scales_distances() -> None:
    m = binary_metrics(PRED_1D, REF_1D, spacing=2.5)
    assert (m["hd"], m["hd95"], m["assd"]) == pytest.approx((5.0, 1.85 * 2.5, 1.25 * 2.5))
    assert m["dice"] == pytest.approx(4 / 7)


def test_two_single_voxels_2d() -> None:
    pred = np.zeros((6, 6), dtype=np.uint8)
    ref = np.zeros((6, 6), dtype=np.uint8)
    pred[0, 0] = 1
    ref[3, 4] = 7  # any non-zero value is foreground
    m = binary_metrics(pred, ref)
    assert (m["dice"], m["iou"], m["vs"], m["sensitivity"], m["precision"]) == (0, 0, 1, 0, 0)
    assert m["hd"] == m["hd95"] == m["assd"] == pytest.approx(5.0)
    m = binary_metrics(pred, ref, spacing=(2.0, 1.0))
    assert m["hd"] == m["hd95"] == pytest.approx(math.sqrt(6**2 + 4**2))


def test_surface_includes_image_edge() -> None:
    full = np.ones((4, 5), dtype=bool)
    expected = np.ones((4, 5), dtype=bool)
    expected[1:3, 1:4] = False
    np.testing.assert_array_equal(mask_surface(full), expected)
    # Face connectivity: a plus-shaped blob's centre is interior, its diagonal corners do not count.
    plus = np.zeros((5, 5), dtype=bool)
    plus[1:4, 2] = plus[2, 1:4] = True
    surface = mask_surface(plus)
    assert not surface[2, 2] and surface.sum() == 4


def test_identical_masks() -> None:
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[2:7, 3:9, 0:4] = True
    m = binary_metrics(mask, mask, spacing=(1, 2, 3))
    assert m["dice"] == m["iou"] == m["vs"] == m["sensitivity"] == m["precision"] == 1
    assert m["hd"] == m["hd95"] == m["assd"] == 0


# --- empty masks --------------------------------------------------------------------------------

EMPTY = np.zeros((6, 7), dtype=bool)
BLOB = np.zeros((6, 7), dtype=bool)
BLOB[1:4, 2:5] = True


def test_brats_policy_both_empty() -> None:
    m = binary_metrics(EMPTY, EMPTY, empty_policy="brats")
    assert {k: m[k] for k in ("dice", "iou", "sensitivity", "precision", "vs", "specificity")} == {
        "dice": 1, "iou": 1, "sensitivity": 1, "precision": 1, "vs": 1, "specificity": 1
    }
    assert m["hd"] == m["hd95"] == m["assd"] == 0


@pytest.mark.parametrize("pred_empty", [True, False])
def test_brats_policy_one_empty(pred_empty: bool) -> None:
    pred, ref = (EMPTY, BLOB) if pred_empty else (BLOB, EMPTY)
    m = binary_metrics(pred, ref, empty_policy="brats")
    assert m["dice"] == m["iou"] == m["vs"] == 0
    assert m["sensitivity"] == 0 and m["precision"] == 0  # one is 0/n, the other 0/0 -> 0
    assert m["specificity"] == (1.0 if pred_empty else (42 - 9) / 42)  # tn / (tn + fp)
    assert m["hd"] == m["hd95"] == m["assd"] == BRATS_EMPTY_DISTANCE == 373.13


def test_nan_policy() -> None:
    both = binary_metrics(EMPTY, EMPTY, empty_policy="nan")
    undefined = ("dice", "iou", "sensitivity", "precision", "vs", "hd", "hd95", "assd")
    assert all(math.isnan(both[k]) for k in undefined)
    assert both["specificity"] == 1
    pred_empty = binary_metrics(EMPTY, BLOB, empty_policy="nan")
    assert pred_empty["dice"] == pred_empty["iou"] == pred_empty["vs"] == 0
    assert pred_empty["sensitivity"] == 0 and math.isnan(pred_empty["precision"])
    assert all(math.isnan(pred_empty[k]) for k in ("hd", "hd95", "assd"))
    ref_empty = binary_metrics(BLOB, EMPTY, empty_policy="nan")
    assert ref_empty["precision"] == 0 and math.isnan(ref_empty["sensitivity"])
    assert all(math.isnan(ref_empty[k]) for k in ("hd", "hd95", "assd"))


def test_custom_policy_and_lookup() -> None:
    policy = EmptyPolicy("mine", 1.0, -1.0, 0.0, 99.0)
    m = binary_metrics(BLOB, EMPTY, empty_policy=policy)
    assert m["sensitivity"] == -1 and m["hd95"] == 99
    assert get_empty_policy("BRATS").one_empty_distance == 373.13
    with pytest.raises(ConfigError, match="empty-mask policy"):
        get_empty_policy("zero")


def test_surface_distances_refuse_empty_masks() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(EMPTY, BLOB)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="shape"):
        binary_metrics(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(ConfigError, match="hd95"):
        binary_metrics(BLOB, BLOB, hd95_definition="p95")
    with pytest.raises(ConfigError, match="hd95"):
        binary_metrics(EMPTY, EMPTY, hd95_definition="p95")
    with pytest.raises(ValueError, match="spacing"):
        binary_metrics(BLOB, BLOB, spacing=(1.0, 1.0, 1.0))


# --- multi-class --------------------------------------------------------------------------------

MC_REF = np.array([0, 0, 0, 1, 1, 2])
MC_PRED = np.array([0, 0, 1, 1, 2, 2])


def test_confusion_matrix() -> None:
    expected = [[2, 1, 0], [0, 1, 1], [0, 0, 1]]  # rows reference, columns prediction
    np.testing.assert_array_equal(confusion_matrix(MC_PRED, MC_REF, 3), expected)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(MC_PRED, MC_REF, 2)


def test_multiclass_by_hand() -> None:
    # accuracy: 2/3, 1/2, 1/1; IoU: 2/3, 1/3, 1/2.
    m = multiclass_metrics(MC_PRED, MC_REF, 3)
    assert m["mpa"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["miou"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    m = multiclass_metrics(MC_PRED, MC_REF, 3, include_background=False)
    assert m["mpa"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["miou"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_multiclass_absent_classes() -> None:
    # Class 3 is absent from both (skipped); class 4 is only predicted: accuracy skipped, IoU 0.
    pred = np.append(MC_PRED, 4).reshape(7, 1)
    ref = np.append(MC_REF, 0).reshape(7, 1)
    m = multiclass_metrics(pred, ref, 5)
    assert m["mpa"] == pytest.approx((2 / 4 + 1 / 2 + 1) / 3)
    assert m["miou"] == pytest.approx((2 / 4 + 1 / 3 + 1 / 2 + 0) / 4)
    only_bg = multiclass_metrics(np.zeros(4, int), np.zeros(4, int), 3, include_background=False)
    assert math.isnan(only_bg["mpa"]) and math.isnan(only_bg["miou"])


# --- regions and the score report ---------------------------------------------------------------


def _raw_maps() -> tuple[np.ndarray, np.ndarray]:
    """BraTS 2017-2021 raw labels (1 NCR, 2 ED, 4 ET) on a small 3D grid."""
    ref = np.zeros((12, 10, 8), dtype=np.uint8)
    ref[2:10, 2:8, 1:7] = 2
    ref[4:8, 3:7, 2:6] = 1
    ref[5:7, 4:6, 3:5] = 4
    pred = np.roll(ref, 1, axis=0)
    pred[pred == 4] = 1  # no enhancing predicted: ET has an empty prediction, WT is only shifted
    return pred, ref


def test_region_metrics_keys_and_values() -> None:
    from contraseg.data.labels import get_convention

    conv = get_convention("brats2020")
    pred_raw, ref_raw = _raw_maps()
    pred, ref = conv.to_canonical(pred_raw), conv.to_canonical(ref_raw)
    scores = region_metrics(pred, ref, "brats2020")
    assert list(scores) == ["WT", "TC", "ET"]
    assert scores["WT"] == binary_metrics(np.isin(pred, (1, 2, 3)), np.isin(ref, (1, 2, 3)))
    assert scores["ET"]["dice"] == 0 and scores["ET"]["hd95"] == 373.13


def test_score_label_maps_shape_and_units() -> None:
    pred, ref = _raw_maps()
    spacing = (1.0, 2.0, 3.0)
    in_voxels = score_label_maps(pred, ref, "brats2020", spacing=spacing, units="voxel")
    assert set(in_voxels) == {"conventions", "regions"}
    assert in_voxels["regions"] == score_label_maps(pred, ref, "brats2020")["regions"]
    conv = in_voxels["conventions"]
    assert conv["units"] == "voxel" and conv["spacing"] is None
    assert conv["hd95_definition"] == "brats" and conv["label_convention"] == "brats2020"
    assert conv["empty_policy"]["name"] == "brats"
    assert conv["empty_policy"]["one_empty_distance"] == 373.13
    json.dumps(in_voxels, allow_nan=False)

    in_mm = score_label_maps(pred, ref, "brats2020", spacing=spacing, units="mm")
    assert in_mm["conventions"]["spacing"] == list(spacing)
    # The prediction is shifted by one voxel along axis 0, whose spacing is 1 mm.
    assert in_mm["regions"]["WT"]["hd"] == in_voxels["regions"]["WT"]["hd"] == 1.0
    assert in_mm["regions"]["WT"]["dice"] == in_voxels["regions"]["WT"]["dice"]


def test_score_label_maps_mm_scales_by_spacing() -> None:
    pred, ref = _raw_maps()
    pred, ref = np.moveaxis(pred, 0, 2), np.moveaxis(ref, 0, 2)  # the shift is now along axis 2
    in_mm = score_label_maps(pred, ref, "brats2020", spacing=(1.0, 1.0, 3.0), units="mm")
    assert in_mm["regions"]["WT"]["hd"] == pytest.approx(3.0)


def test_score_label_maps_options_are_checked() -> None:
    pred, ref = _raw_maps()
    with pytest.raises(ConfigError, match="spacing"):
        score_label_maps(pred, ref, "brats2020", units="mm")
    with pytest.raises(ConfigError, match="units"):
        score_label_maps(pred, ref, "brats2020", units="cm")
    with pytest.raises(ValueError, match="not in convention"):
        score_label_maps(pred, ref, "brats2023")  # raw value 4 is unknown to BraTS 2023


def test_settings_describe_nan_policy_as_json() -> None:
    described = MetricSettings(empty_policy="nan", hd95_definition="monai").to_dict()
    assert described["empty_policy"] == {
        "name": "nan", "both_empty": None, "undefined": None,
        "both_empty_distance": None, "one_empty_distance": None,
    }
    assert "pooled" not in described["hd95"] and "max" in described["hd95"]
    json.dumps(described, allow_nan=False)
