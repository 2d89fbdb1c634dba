"""Preprocessing and its inverse: brain mask rule, reorientation, crop, z-score, resampling."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from contraseg.data.cases import CaseSpec, ImageRef
from contraseg.data.io import LoadedCase, load_case, save_nifti
from contraseg.data.preprocess import (
    GridRecord,
    PreprocessSettings,
    background_value,
    compute_brain_mask,
    invert_labels,
    invert_probabilities,
    labels_from_probabilities,
    preprocess,
)
from contraseg.errors import ConfigError

SHAPE = (40, 36, 30)
LPS_ANISO = np.array(
    [[-1.0, 0, 0, 30], [0, -1.0, 0, 20], [0, 0, 2.0, -25], [0, 0, 0, 1]]
)  # LPS, 1 x 1 x 2 mm


def ellipsoid(shape, centre, radii) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))
    return dist <= 1.0


def synthetic_case(background: float = 0.0, affine=LPS_ANISO) -> LoadedCase:
    """A head-like case: two modalities inside an ellipsoid 'brain', a two-class tumour."""
    rng = np.random.default_rng(0)
    brain = ellipsoid(SHAPE, (20, 17, 14), (14, 12, 10))
    image = rng.normal(100, 20, size=(2, *SHAPE)).astype(np.float32)
    image[1] += np.linspace(0, 50, SHAPE[0], dtype=np.float32)[:, None, None]
    image[:, ~brain] = background
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[ellipsoid(SHAPE, (22, 15, 14), (9, 8, 5))] = 2
    label[ellipsoid(SHAPE, (22, 15, 14), (5, 4, 3))] = 4
    return LoadedCase(
        case_id="synth",
        modalities=("t1", "flair"),
        image=image,
        label=label,
        brain_mask=None,
        affine=affine,
        header=nib.Nifti1Image(label, affine).header,
        spacing=tuple(nib.affines.voxel_sizes(affine)),
    )


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_settings_json_round_trip_and_validation():
    settings = PreprocessSettings(orientation="lps", target_spacing=[1.5, 1.5, 2])
    assert settings.orientation == "LPS" and settings.target_spacing == (1.5, 1.5, 2.0)
    again = PreprocessSettings.from_dict(json.loads(json.dumps(settings.to_dict())))
    assert again == settings
    assert PreprocessSettings(target_spacing=1.5).target_spacing == (1.5, 1.5, 1.5)
    for bad in ({"orientation": "RRS"}, {"crop_margin": -1}, {"target_spacing": (1, 0, 1)}):
        with pytest.raises(ConfigError):
            PreprocessSettings(**bad)
    with pytest.raises(ConfigError, match="unknown"):
        PreprocessSettings.from_dict({"spacing": 1})


def test_background_value_rule():
    case = synthetic_case(background=-3.6)
    assert background_value(case.image[0]) == pytest.approx(-3.6)
    assert background_value(synthetic_case().image[0]) == 0.0
    raw = synthetic_case().image[0]
    raw[20, 17, 14] = -50  # a negative interpolation artefact inside the brain, not a fill
    assert background_value(raw) == 0.0


def test_brain_mask_is_the_union_over_modalities():
    case = synthetic_case(background=-2.0)
    truth = case.image[0] != -2.0
    case.image[1, 20, 17, 10:14] = -2.0  # dark voxels equal to the background in one modality
    np.testing.assert_array_equal(compute_brain_mask(case.image), truth)


@pytest.mark.parametrize("background", [0.0, -3.6])
def test_round_trip_without_resampling_is_exact(background):
    case = synthetic_case(background)
    pre = preprocess(case, PreprocessSettings(crop_margin=3))
    assert pre.image.dtype == np.float32 and pre.image.shape[0] == 2
    assert pre.image.shape[1:] == pre.label.shape == pre.brain_mask.shape == pre.record.shape
    assert pre.record.shape == (35, 31, 27)  # brain bounding box (29, 25, 21) + 2 x 3 margin
    assert set(np.unique(pre.label)) == {0, 2, 4}  # raw values kept
    np.testing.assert_array_equal(invert_labels(pre.label, pre.record), case.label)


def test_zscore_inside_brain_and_zero_outside():
    pre = preprocess(synthetic_case(background=-3.6), PreprocessSettings())
    inside = pre.image[:, pre.brain_mask]
    np.testing.assert_allclose(inside.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(inside.std(axis=1), 1, atol=1e-5)
    assert not pre.image[:, ~pre.brain_mask].any()


def test_reoriented_affine_maps_each_voxel_to_the_same_place():
    case = synthetic_case()
    pre = preprocess(case, PreprocessSettings(zscore=False))
    assert nib.aff2axcodes(pre.record.affine) == ("R", "A", "S")
    index = np.indices(pre.record.shape).reshape(3, -1)
    to_input = np.linalg.solve(case.affine, pre.record.affine)
    source = np.rint(nib.affines.apply_affine(to_input, index.T)).astype(int).T
    np.testing.assert_array_equal(pre.image[1].reshape(-1), case.image[1][tuple(source)])


def test_keep_orientation_and_no_crop_is_the_identity():
    case = synthetic_case()
    pre = preprocess(case, PreprocessSettings(orientation=None, crop_to_brain=False, zscore=False))
    np.testing.assert_array_equal(pre.image, case.image)
    np.testing.assert_allclose(pre.record.affine, case.affine)


def test_resampling_to_1_5_mm_and_back():
    case = synthetic_case()
    pre = preprocess(case, PreprocessSettings(target_spacing=(1.5, 1.5, 1.5)))
    assert pre.record.spacing == pytest.approx((1.5, 1.5, 1.5), rel=0.05)
    assert pre.record.resampled
    back = invert_labels(pre.label, pre.record)
    assert back.shape == SHAPE and back.dtype == case.label.dtype
    assert dice(back > 0, case.label > 0) > 0.95
    assert dice(back == 4, case.label == 4) > 0.85
    assert set(np.unique(back)) == {0, 2, 4}


def test_invert_probabilities_fills_background_outside_the_crop():
    case = synthetic_case()
    pre = preprocess(case, PreprocessSettings(target_spacing=(1.5, 1.5, 1.5)))
    prob = np.stack([pre.label == 0, pre.label == 2, pre.label == 4]).astype(np.float32)
    back = invert_probabilities(prob, pre.record)
    assert back.shape == (3, *SHAPE) and back.dtype == np.float32
    np.testing.assert_allclose(back.sum(axis=0), 1, atol=1e-5)
    assert back[0, 0, 0, 0] == 1.0 and back[1:, 0, 0, 0].sum() == 0  # a corner, outside the crop
    assert dice(back.argmax(axis=0) > 0, case.label > 0) > 0.95
    with pytest.raises(ValueError, match="grid"):
        invert_probabilities(prob[:, :-1], pre.record)


def smooth_probabilities(shape, classes: int, seed: int) -> np.ndarray:
    """Softmax of smooth random logits (C, *shape), with exact ties where two logits are equal."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    logits = ndimage.gaussian_filter(rng.normal(size=(classes, *shape)), (0, 2, 2, 2)) * 20
    logits[2, ::3] = logits[1, ::3]  # every third plane: classes 1 and 2 tie
    prob = np.exp(logits - logits.max(0))
    return (prob / prob.sum(0)).astype(np.float32)


@pytest.mark.parametrize("spacing", [None, (1.5, 1.5, 1.5), (0.7, 1.3, 2.5)])
def test_labels_from_probabilities_is_the_argmax_of_the_inverted_probabilities(spacing):
    """Taken on the crop, the argmax equals the one of the probabilities on the input grid
    (resampled or not, reoriented), ties included."""
    pre = preprocess(synthetic_case(), PreprocessSettings(orientation="RAS",
                                                          target_spacing=spacing))
    prob = smooth_probabilities(pre.record.shape, 3, seed=1)
    labels = labels_from_probabilities(prob, pre.record)
    expected = invert_probabilities(prob, pre.record).argmax(0).astype(np.uint8)
    assert labels.dtype == np.uint8 and labels.shape == SHAPE
    assert 0 < (labels > 0).mean() < 1
    np.testing.assert_array_equal(labels, expected)
    with pytest.raises(ValueError, match="grid"):
        labels_from_probabilities(prob[:, :-1], pre.record)


def test_labels_from_probabilities_on_a_real_brats_grid(shared_data):
    """The same equality on a real case's grid (cropped to the brain, 2 mm as the cpu presets,
    back to 1 mm LPS)."""
    from contraseg.data.layouts import discover

    case = discover(shared_data / "real" / "brats2018").cases[0]
    loaded = load_case(case, with_label=False)
    pre = preprocess(loaded, PreprocessSettings(orientation="RAS", target_spacing=(2, 2, 2)))
    prob = smooth_probabilities(pre.record.shape, 4, seed=2)
    np.testing.assert_array_equal(
        labels_from_probabilities(prob, pre.record),
        invert_probabilities(prob, pre.record).argmax(0).astype(np.uint8))


def test_record_json_round_trip():
    pre = preprocess(synthetic_case(), PreprocessSettings(target_spacing=(1.5, 1.5, 1.5)))
    record = GridRecord.from_dict(json.loads(json.dumps(pre.record.to_dict())))
    np.testing.assert_array_equal(
        invert_labels(pre.label, record), invert_labels(pre.label, pre.record)
    )


def test_written_prediction_has_the_input_affine(tmp_path):
    case = synthetic_case()
    pre = preprocess(case, PreprocessSettings(target_spacing=(1.5, 1.5, 1.5)))
    out = save_nifti(
        invert_labels(pre.label, pre.record),
        pre.record.original_affine,
        tmp_path / "pred.nii.gz",
        header=case.header,
    )
    written = nib.load(out)
    assert written.shape == SHAPE
    np.testing.assert_allclose(written.affine, case.affine, atol=1e-6)


def real_case(folder, pattern: dict[str, str], label: str, mask: str | None = None) -> CaseSpec:
    return CaseSpec(
        folder.name,
        {m: ImageRef(folder / name) for m, name in pattern.items()},
        label=folder / label,
        brain_mask=None if mask is None else folder / mask,
    )


@pytest.mark.realdata
def test_brats2015_zscored_case(shared_data):
    folder = shared_data / "real" / "brats2015-flair-t1c" / "brats_2013_pat0003"
    names = {"flair": "Flair_subtrMeanDivStd.nii.gz", "t1c": "T1c_subtrMeanDivStd.nii.gz"}
    loaded = load_case(real_case(folder, names, "OTMultiClass.nii.gz", "brainmask.nii.gz"))
    rule = compute_brain_mask(loaded.image)
    np.testing.assert_array_equal(rule, loaded.brain_mask)  # the rule finds the given mask
    assert 0.10 < rule.mean() < 0.40  # 18.9% of the volume
    pre = preprocess(loaded, PreprocessSettings())
    np.testing.assert_array_equal(invert_labels(pre.label, pre.record), loaded.label)


@pytest.mark.realdata
def test_tcga_raw_case(shared_data, tmp_path):
    folder = shared_data / "real" / "tcga-gbm-pseudolabel" / "TCGA-FG-6692"
    names = {m: f"TCGA-FG-6692_{m}_bet.nii.gz" for m in ("t1", "t1c", "t2", "fla")}
    loaded = load_case(real_case(folder, names, "TCGA-FG-6692_fusion_mav.nii.gz"))
    pre = preprocess(loaded, PreprocessSettings())
    fraction = pre.brain_mask.sum() / np.prod(loaded.shape)
    assert 0.10 < fraction < 0.40  # 18.0% of the volume
    back = invert_labels(pre.label, pre.record)
    np.testing.assert_array_equal(back, loaded.label)
    out = save_nifti(back, pre.record.original_affine, tmp_path / "p.nii.gz", header=loaded.header)
    reference = nib.load(folder / "TCGA-FG-6692_t1_bet.nii.gz")
    np.testing.assert_array_equal(nib.load(out).affine, reference.affine)
