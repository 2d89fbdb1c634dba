"""The parotid phantom: head-and-neck contrasts on STIR / T1 / T2, the two tumour kinds, thick
slices, determinism, and the written dataset (case folders + manifest)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull

from contraseg.data import parotid_anatomy as A
from contraseg.data import parotid_phantom as P
from contraseg.data.check import check_dataset
from contraseg.data.layouts import discover
from contraseg.errors import ConfigError, InputError

SIZE = (96, 96, 16)  # 2 x 2 x 4 mm


def _first_of_kind(kind: str, seed: int = 0) -> P.ParotidSubject:
    for index in range(50):
        subject = P.make_subject(P.case_rng(seed, index), SIZE)
        if subject.kind == kind:
            return subject
    raise AssertionError(f"no {kind} tumour in 50 cases")


# session scope: pytest-xdist interleaves modules, and a module fixture is rebuilt each time
@pytest.fixture(scope="session", params=P.KINDS)
def subject(request) -> P.ParotidSubject:
    return _first_of_kind(request.param)


def _means(subject: P.ParotidSubject, modality: str) -> dict[str, float]:
    """Mean of each healthy tissue and of the tumour, over voxels eroded by one voxel (no partial
    volume with a neighbour, across the thick slices too)."""
    image, label, tissue = subject.images[modality], subject.label, subject.tissue
    regions = {name: (tissue == code) & (label == 0) for code, name in
               ((A.FAT, "fat"), (A.MUSCLE, "muscle"), (A.PAROTID, "parotid"), (A.CSF, "csf"),
                (A.AIR, "air"))}
    regions["tumour"] = label == P.TUMOUR
    eroded = {name: ndimage.binary_erosion(mask) if name != "tumour" else mask
              for name, mask in regions.items()}
    return {name: float(image[mask].mean()) for name, mask in eroded.items() if mask.any()}


def test_arrays_types_and_thick_slices(subject):
    assert set(subject.images) == set(P.MODALITIES) == {"stir", "t1", "t2"}
    for image in subject.images.values():
        assert image.shape == SIZE and image.dtype == np.float32
        assert np.array_equal(image, np.rint(image)) and image.min() >= 1
    assert subject.label.dtype == np.uint8 and set(np.unique(subject.label)) == {0, 1}
    assert subject.spacing == (2.0, 2.0, 4.0)
    assert nib.aff2axcodes(subject.affine) == ("L", "P", "S")


def test_default_grid_is_half_millimetre_in_plane_and_4_mm_slices():
    shape = P.normalise_size(P.DEFAULT_SIZE)
    assert shape == (384, 384, 16) and P.spacing_of(shape) == (0.5, 0.5, 4.0)
    affine = P.parotid_affine(shape)
    assert np.allclose(nib.affines.voxel_sizes(affine), (0.5, 0.5, 4.0))
    centre = affine @ np.array([*((np.array(shape) - 1) / 2), 1.0])
    assert np.allclose(centre[:3], 0)


def test_fat_is_bright_on_t1_and_suppressed_on_stir(subject):
    t1, stir, t2 = (_means(subject, m) for m in ("t1", "stir", "t2"))
    assert t1["fat"] > 1.2 * t1["parotid"] > 1.2 * t1["muscle"]
    assert stir["fat"] < 0.5 * stir["muscle"] < stir["parotid"]
    assert t2["fat"] > t2["parotid"] > t2["muscle"]


def test_tumour_is_bright_on_stir_and_t2_and_dark_on_t1(subject):
    t1, stir, t2 = (_means(subject, m) for m in ("t1", "stir", "t2"))
    assert stir["tumour"] > 1.3 * stir["parotid"] and stir["tumour"] > 2 * stir["muscle"]
    assert t2["tumour"] > 1.1 * t2["parotid"] and t2["tumour"] > 2 * t2["muscle"]
    assert t1["tumour"] < 0.8 * t1["parotid"] and t1["tumour"] < 0.5 * t1["fat"]


def test_benign_tumours_are_brighter_on_t2_than_malignant_ones():
    ratio = {kind: _means(_first_of_kind(kind), "t2") for kind in P.KINDS}
    benign, malignant = (ratio[k]["tumour"] / ratio[k]["parotid"] for k in P.KINDS)
    assert benign > malignant + 0.2


def test_bone_vessels_and_air_are_dark_everywhere_and_fluid_bright_on_t2(subject):
    for modality in P.MODALITIES:
        means = _means(subject, modality)
        assert means["air"] < 0.3 * means["muscle"]
        image, healthy = subject.images[modality], subject.label == 0
        for thin in (A.BONE, A.VESSEL):  # 1.5-9 mm across: not eroded, partial volume included
            assert image[healthy & (subject.tissue == thin)].mean() < 0.7 * means["muscle"]
    t1, t2 = _means(subject, "t1"), _means(subject, "t2")
    assert t2["csf"] > t2["parotid"] and t1["csf"] < t1["muscle"]


def test_air_outside_the_neck_holds_noise_not_zeros(subject):
    air = subject.images["t2"][subject.tissue == A.AIR]
    assert air.std() > 0 and np.median(air) < 0.1 * subject.images["t2"].max()


def test_the_tumour_grows_from_one_parotid_gland(subject):
    label, tissue = subject.label == P.TUMOUR, subject.tissue
    assert label.sum() > 20
    assert ndimage.label(label)[1] == 1
    x = np.nonzero(label)[0]  # array axis 0 runs right -> left
    on_the_right = x.mean() < SIZE[0] / 2
    assert on_the_right == (subject.side == "right")
    assert (tissue[label] == A.PAROTID).mean() > 0.2
    assert not np.isin(tissue[label], [A.AIR, A.AIRWAY]).any()


def _solidity(subject: P.ParotidSubject) -> float:
    """Tumour volume over the volume of its convex hull (voxel corners, in mm)."""
    spacing = np.array(subject.spacing)
    centres = np.argwhere(subject.label > 0) * spacing
    corners = np.array([[a, b, c] for a in (-.5, .5) for b in (-.5, .5) for c in (-.5, .5)])
    hull = ConvexHull((centres[:, None] + corners[None] * spacing).reshape(-1, 3))
    return len(centres) * spacing.prod() / hull.volume


def test_malignant_tumours_are_less_regular_than_benign_ones():
    solidity = {kind: [] for kind in P.KINDS}
    for index in range(16):
        subject = P.make_subject(P.case_rng(1, index), SIZE)
        solidity[subject.kind].append(_solidity(subject))
    assert len(solidity["benign"]) >= 3 and len(solidity["malignant"]) >= 3
    assert np.mean(solidity["benign"]) > np.mean(solidity["malignant"]) + 0.05


def test_same_seed_same_subject_different_seed_different():
    a, b = (P.make_subject(P.case_rng(5, 2), (32, 32, 8)) for _ in range(2))
    c = P.make_subject(P.case_rng(6, 2), (32, 32, 8))
    for key in P.MODALITIES:
        assert np.array_equal(a.images[key], b.images[key])
        assert not np.array_equal(a.images[key], c.images[key])
    assert np.array_equal(a.label, b.label) and np.array_equal(a.tissue, b.tissue)
    assert (a.kind, a.side) == (b.kind, b.side)


def test_bad_sizes_are_refused():
    for size in (8, (32, 32), (32, 32, 2), (12, 32, 16)):
        with pytest.raises(ConfigError, match="parotid phantom size"):
            P.normalise_size(size)


def test_written_dataset_is_a_manifest_dataset_that_checks_clean(tmp_path):
    seen = []
    folders = P.write_parotid_phantom(tmp_path, cases=2, size=(32, 32, 8), seed=3,
                                      progress=seen.append)
    assert seen == [0, 1] and [f.name for f in folders] == ["Parotid-00000", "Parotid-00001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "Parotid-00000", "Parotid-00001", "contraseg.json"]
    spec = discover(tmp_path)
    assert spec.layout == "manifest" and set(spec.modalities) == {"stir", "t1", "t2"}
    assert spec.convention.class_names == ("background", "tumour")
    assert dict(spec.convention.regions) == {"TUMOUR": (1,)}
    report = check_dataset(spec)
    assert [problem for case in report.cases for problem in case.problems] == []
    subject = P.make_subject(P.case_rng(3, 1), (32, 32, 8))
    case = spec.cases[1]
    stir = nib.load(case.images["stir"].path)
    assert stir.get_data_dtype() == np.int16
    assert np.allclose(stir.header.get_zooms(), (6.0, 6.0, 8.0))
    assert np.array_equal(np.asanyarray(stir.dataobj), subject.images["stir"].astype(np.int16))
    assert np.array_equal(np.asanyarray(nib.load(case.label).dataobj), subject.label)
    manifest = json.loads((tmp_path / "contraseg.json").read_text())
    assert manifest["phantom"]["tumours"]["Parotid-00001"]["kind"] == subject.kind
    assert manifest["phantom"]["spacing_mm"] == [6.0, 6.0, 8.0]


def test_existing_phantom_is_not_overwritten_unless_asked(tmp_path):
    P.write_parotid_phantom(tmp_path, cases=1, size=(32, 32, 8), seed=0)
    seg = tmp_path / "Parotid-00000" / "Parotid-00000-seg.nii.gz"
    before = seg.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        P.write_parotid_phantom(tmp_path, cases=2, size=(32, 32, 8), seed=1)
    assert seg.read_bytes() == before and not (tmp_path / "Parotid-00001").exists()
    P.write_parotid_phantom(tmp_path, cases=1, size=(32, 32, 8), seed=1, overwrite=True)
    assert seg.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Parotid-00000", "contraseg.json"]


def test_a_case_does_not_depend_on_how_many_are_generated(tmp_path):
    P.write_parotid_phantom(tmp_path, cases=3, size=(32, 32, 8), seed=7)
    alone = P.make_subject(P.case_rng(7, 2), (32, 32, 8))
    written = nib.load(tmp_path / "Parotid-00002" / "Parotid-00002-t2.nii.gz")
    assert np.array_equal(np.asanyarray(written.dataobj), alone.images["t2"].astype(np.int16))
