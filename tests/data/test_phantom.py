"""The synthetic phantom: MRI-like contrasts, tumour labels, determinism and the written layout."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from contraseg.data import phantom as P
from contraseg.errors import ConfigError, InputError

SEEDS = (0, 1)
SIZE = (64, 64, 64)


# session scope: pytest-xdist interleaves modules, and a module fixture is rebuilt each time
@pytest.fixture(scope="session", params=SEEDS)
def subject(request) -> P.PhantomSubject:
    return P.make_subject(P.case_rng(request.param, 0), SIZE)


def _means(subject: P.PhantomSubject, modality: str) -> dict[str, float]:
    """Mean of each tissue (healthy voxels only) and tumour class in one modality."""
    image, label, tissue = subject.images[modality], subject.label, subject.tissue
    healthy = label == 0
    regions = {
        "csf": healthy & np.isin(tissue, [P.CSF, P.VENTRICLE]),
        "gm": healthy & (tissue == P.GM),
        "wm": healthy & (tissue == P.WM),
        "necrosis": label == P.NECROSIS,
        "edema": label == P.EDEMA,
        "enhancing": label == P.ENHANCING,
    }
    return {name: float(image[mask].mean()) for name, mask in regions.items()}


def test_arrays_have_the_documented_types(subject):
    assert set(subject.images) == set(P.MODALITIES)
    for image in [*subject.images.values(), subject.normal_t1]:
        assert image.shape == SIZE and image.dtype == np.float32
        assert np.array_equal(image, np.rint(image)) and image.max() <= P.INT16_MAX
    assert subject.label.dtype == np.uint8 and subject.tissue.dtype == np.uint8
    assert set(np.unique(subject.tissue)) == {P.BACKGROUND, P.CSF, P.GM, P.WM, P.VENTRICLE}


def test_outside_the_brain_is_exactly_zero_and_inside_is_positive(subject):
    brain = subject.brain_mask
    for image in [*subject.images.values(), subject.normal_t1]:
        assert np.all(image[~brain] == 0)
        assert np.all(image[brain] > 0)
    assert 0.1 < brain.mean() < 0.5


def test_enhancing_rim_is_bright_only_in_t1c(subject):
    t1, t1c = _means(subject, "t1"), _means(subject, "t1c")
    assert t1c["enhancing"] > t1c["wm"]
    assert t1["enhancing"] < t1["wm"]


def test_edema_is_bright_in_t2_and_flair(subject):
    for modality in ("t2", "flair"):
        m = _means(subject, modality)
        assert m["edema"] > m["wm"] and m["edema"] > m["gm"], modality


def test_csf_is_dark_in_flair_and_brightest_tissue_in_t2(subject):
    flair, t2 = _means(subject, "flair"), _means(subject, "t2")
    assert flair["csf"] < flair["wm"] and flair["csf"] < flair["gm"]
    assert t2["csf"] > max(t2["gm"], t2["wm"])


def test_necrosis_is_dark_in_t1_and_t1c(subject):
    for modality in ("t1", "t1c"):
        m = _means(subject, modality)
        assert m["necrosis"] < min(m["wm"], m["gm"], m["enhancing"]), modality


def test_grey_white_contrast(subject):
    t1, t2, flair = (_means(subject, m) for m in ("t1", "t2", "flair"))
    assert t1["wm"] > t1["gm"]
    assert t2["gm"] > t2["wm"] and flair["gm"] > flair["wm"]


def test_tumour_has_all_labels_inside_the_brain(subject):
    counts = np.bincount(subject.label.ravel(), minlength=4)
    assert len(counts) == 4 and np.all(counts[1:] > 0)
    assert np.all(subject.brain_mask[subject.label > 0])
    assert counts[1:].sum() < 0.5 * subject.brain_mask.sum()


def test_tumour_sits_in_one_hemisphere(subject):
    x = np.nonzero(subject.label == P.ENHANCING)[0]
    centre = (SIZE[0] - 1) / 2
    assert np.mean(x > centre) > 0.9 or np.mean(x < centre) > 0.9


def test_normal_t1_matches_away_from_the_tumour(subject):
    margin = ndimage.binary_dilation(subject.label > 0, iterations=3)
    away = subject.brain_mask & ~margin
    t1, normal = subject.images["t1"][away], subject.normal_t1[away]
    assert np.corrcoef(t1, normal)[0, 1] > 0.9
    assert abs(normal.mean() / t1.mean() - 1) < 0.02


def test_normal_t1_has_no_tumour_inside(subject):
    core = np.isin(subject.label, [P.NECROSIS, P.ENHANCING]) & (subject.tissue == P.WM)
    healthy_wm = (subject.label == 0) & (subject.tissue == P.WM)
    wm_level = subject.normal_t1[healthy_wm].mean()
    assert abs(subject.normal_t1[core].mean() / wm_level - 1) < 0.1
    assert subject.images["t1"][core].mean() < 0.8 * wm_level


def test_affine_is_one_mm_lps(subject):
    assert nib.aff2axcodes(subject.affine) == ("L", "P", "S")
    assert np.allclose(np.abs(np.diag(subject.affine)[:3]), 1)


def test_same_seed_same_subject_different_seed_different():
    a = P.make_subject(P.case_rng(5, 2), (32, 32, 32))
    b = P.make_subject(P.case_rng(5, 2), (32, 32, 32))
    c = P.make_subject(P.case_rng(6, 2), (32, 32, 32))
    for key in P.MODALITIES:
        assert np.array_equal(a.images[key], b.images[key])
        assert not np.array_equal(a.images[key], c.images[key])
    assert np.array_equal(a.normal_t1, b.normal_t1)
    assert np.array_equal(a.label, b.label) and np.array_equal(a.tissue, b.tissue)
    assert not np.array_equal(a.label, c.label)


@pytest.mark.parametrize("size", [32, 48, (40, 48, 32)])
def test_small_and_non_cubic_sizes(size):
    subject = P.make_subject(P.case_rng(0, 0), P.normalise_size(size))
    assert subject.label.shape == P.normalise_size(size)
    assert (subject.label > 0).any() and (subject.tissue == P.WM).any()
    assert np.all(subject.images["t1"][~subject.brain_mask] == 0)


def test_bad_sizes_are_refused():
    for size in (8, (32, 32), (32, 32, 0)):
        with pytest.raises(ConfigError):
            P.normalise_size(size)


def _read(folder, suffix):
    return nib.load(folder / f"{folder.name}-{suffix}.nii.gz")


def test_write_phantom_layout_and_dtypes(tmp_path):
    seen = []
    folders = P.write_phantom(tmp_path, cases=2, size=32, seed=3, progress=seen.append)
    assert seen == [0, 1]
    assert [f.name for f in folders] == ["Phantom-00000", "Phantom-00001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Phantom-00000", "Phantom-00001"]
    suffixes = ["t1n", "t1c", "t2w", "t2f", "seg", "normal-t1n"]
    for folder in folders:
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            f"{folder.name}-{s}.nii.gz" for s in suffixes
        )
        for suffix in suffixes:
            image = _read(folder, suffix)
            expected = np.uint8 if suffix == "seg" else np.int16
            assert image.get_data_dtype() == expected
            assert image.shape == (32, 32, 32)
            assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
            assert np.allclose(image.header.get_zooms(), 1)

    subject = P.make_subject(P.case_rng(3, 1), (32, 32, 32))
    written = np.asanyarray(_read(folders[1], "t1c").dataobj)
    assert np.array_equal(written, subject.images["t1c"].astype(np.int16))
    assert np.array_equal(np.asanyarray(_read(folders[1], "seg").dataobj), subject.label)


def test_a_case_does_not_depend_on_how_many_are_generated(tmp_path):
    P.write_phantom(tmp_path, cases=4, size=32, seed=7)
    alone = P.make_subject(P.case_rng(7, 3), (32, 32, 32))
    folder = tmp_path / P.case_id(3)
    for modality, suffix in P.FILE_SUFFIX.items():
        written = np.asanyarray(_read(folder, suffix).dataobj)
        assert np.array_equal(written, alone.images[modality].astype(np.int16))
    normal = np.asanyarray(_read(folder, "normal-t1n").dataobj)
    assert np.array_equal(normal, alone.normal_t1.astype(np.int16))


def test_existing_cases_are_not_overwritten_unless_asked(tmp_path):
    P.write_phantom(tmp_path, cases=1, size=32, seed=0)
    seg = tmp_path / "Phantom-00000" / "Phantom-00000-seg.nii.gz"
    before = seg.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        P.write_phantom(tmp_path, cases=2, size=32, seed=1)
    assert seg.read_bytes() == before
    assert not (tmp_path / "Phantom-00001").exists()

    P.write_phantom(tmp_path, cases=1, size=32, seed=1, overwrite=True)
    assert seg.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Phantom-00000"]  # no temp left
