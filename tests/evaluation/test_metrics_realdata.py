"""Metrics on real label maps: the published BraTS values, and agreement with MedPy 0.5.2."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from contraseg.data.labels import get_convention
from contraseg.evaluation.metrics import binary_metrics, region_metrics, score_label_maps

nib = pytest.importorskip("nibabel")

pytestmark = pytest.mark.realdata

MET_CASES = ("BraTS-MET-00132-000", "BraTS-MET-00630-001")
TCGA_CASES = ("TCGA-DU-7294", "TCGA-FG-6692")
BRATS2023 = get_convention("brats2023")


def load(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    image = nib.load(path)
    return np.asanyarray(image.dataobj), tuple(float(z) for z in image.header.get_zooms()[:3])


def met_pair(shared_data: Path, case: str) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Canonical prediction, canonical reference and the reference's spacing."""
    root = shared_data / "metrics" / "brats-met-official"
    pred, _ = load(root / "pred" / f"{case}.nii.gz")
    ref, spacing = load(root / "ref" / f"{case}-seg.nii.gz")
    return BRATS2023.to_canonical(pred), BRATS2023.to_canonical(ref), spacing


def published(shared_data: Path) -> list[dict[str, str]]:
    path = shared_data / "metrics" / "brats-met-official" / "published_global_metrics.csv"
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def medpy_crop(pred: np.ndarray, ref: np.ndarray, margin: int = 3) -> tuple[slice, ...]:
    """A box around both masks with a margin other than ours, so MedPy stays fast (~5 s/region
    on the full grid) while its crop cannot hide a mistake in ours."""
    union = pred | ref
    (box,) = ndimage.find_objects(union.astype(np.uint8))
    return tuple(
        slice(max(s.start - margin, 0), min(s.stop + margin, n))
        for s, n in zip(box, union.shape, strict=True)
    )


def assert_medpy_agrees(pred: np.ndarray, ref: np.ndarray, spacing, crop: bool = True) -> None:
    mb = pytest.importorskip("medpy.metric.binary")
    ours = binary_metrics(pred, ref, spacing=spacing, hd95_definition="brats")
    if crop:
        box = medpy_crop(pred, ref)
        pred, ref = pred[box], ref[box]
    expected = {
        "dice": mb.dc(pred, ref),
        "sensitivity": mb.sensitivity(pred, ref),
        "hd": mb.hd(pred, ref, voxelspacing=spacing),
        "hd95": mb.hd95(pred, ref, voxelspacing=spacing),
        "assd": mb.assd(pred, ref, voxelspacing=spacing),
    }
    if not crop:  # true negatives depend on the image size
        expected["specificity"] = mb.specificity(pred, ref)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, rel=1e-9, abs=0), name


@pytest.mark.parametrize("case", MET_CASES)
def test_reproduces_published_brats_values(shared_data: Path, case: str) -> None:
    pred, ref, _ = met_pair(shared_data, case)
    scores = region_metrics(pred, ref, BRATS2023)  # voxel units, pooled HD95, BraTS empty policy
    rows = [r for r in published(shared_data) if r["ref_file"] == f"{case}-seg.nii.gz"]
    assert {r["region"] for r in rows} == {"et", "tc", "wt"}
    for row in rows:
        region = scores[row["region"].upper()]
        assert region["dice"] == pytest.approx(float(row["global_bin_dsc"]), abs=1e-6)
        assert region["hd95"] == pytest.approx(
            float(row["global_bin_hd95_voxel_units"]), abs=1e-6
        )


def test_score_label_maps_reproduces_published_values(shared_data: Path) -> None:
    root = shared_data / "metrics" / "brats-met-official"
    case = "BraTS-MET-00630-001"  # the anisotropic one: voxel units must ignore its spacing
    pred, _ = load(root / "pred" / f"{case}.nii.gz")
    ref, spacing = load(root / "ref" / f"{case}-seg.nii.gz")
    report = score_label_maps(pred, ref, "brats2023", spacing=spacing, units="voxel")
    for row in published(shared_data):
        if row["ref_file"].startswith(case):
            expected = float(row["global_bin_hd95_voxel_units"])
            assert report["regions"][row["region"].upper()]["hd95"] == pytest.approx(expected)


@pytest.mark.parametrize("case", MET_CASES)
def test_agrees_with_medpy_in_mm(shared_data: Path, case: str) -> None:
    pred, ref, spacing = met_pair(shared_data, case)
    for classes in BRATS2023.regions.values():
        assert_medpy_agrees(np.isin(pred, classes), np.isin(ref, classes), spacing)


@pytest.mark.slow(reason="medpy's distances on the uncropped grid take 20-30 s a case; the "
                         "cropped test above checks the same convention")
@pytest.mark.parametrize("case", MET_CASES)
def test_agrees_with_medpy_on_full_grid(shared_data: Path, case: str) -> None:
    pred, ref, spacing = met_pair(shared_data, case)
    for classes in BRATS2023.regions.values():
        assert_medpy_agrees(np.isin(pred, classes), np.isin(ref, classes), spacing, crop=False)


@pytest.mark.parametrize("case", TCGA_CASES)
def test_pseudolabel_against_perturbed_copy(shared_data: Path, case: str) -> None:
    conv = get_convention("brats2020")
    folder = shared_data / "real" / "tcga-gbm-pseudolabel" / case
    raw, _ = load(folder / f"{case}_fusion_mav.nii.gz")
    ref = conv.to_canonical(raw)
    # Perturb: shift by one voxel, grow the core into the edema, drop a slab of labels.
    pred = np.roll(ref, 1, axis=1)
    core = ndimage.binary_dilation(pred == 1, iterations=2) & (pred == 2)
    pred[core] = 1
    pred[:, :, 70:73] = 0
    spacing = (1.0, 1.0, 1.5)  # the grid is 1 mm; an anisotropic spacing tests more of the EDT
    for name, classes in conv.regions.items():
        p, r = np.isin(pred, classes), np.isin(ref, classes)
        if not r.any():  # DU-7294 has no enhancing voxels: both empty, or only one
            scores = binary_metrics(p, r, spacing=spacing)
            assert scores["dice"] == (1.0 if not p.any() else 0.0), name
            continue
        assert_medpy_agrees(p, r, spacing)
