"""Layout discovery on tiny generated trees (all five layouts) and on the real folders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from contraseg.data.layouts import canonical_modality, classify_file, discover
from contraseg.errors import InputError


def write_nifti(path: Path, shape=(4, 4, 3), value: float = 1.0, dtype=np.float32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(shape, value, dtype=dtype), np.eye(4)), path)
    return path


def write_label(path: Path, values: list[int]) -> Path:
    data = np.zeros((4, 4, 3), dtype=np.uint8)
    data.flat[: len(values)] = values
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def test_brats2023_layout_with_phantom_extra(tmp_path):
    for case in ("BraTS-GLI-00000-000", "BraTS-GLI-00001-000"):
        for suffix in ("t1n", "t1c", "t2w", "t2f", "seg", "normal-t1n"):
            write_nifti(tmp_path / case / f"{case}-{suffix}.nii.gz")
    spec = discover(tmp_path)
    assert spec.layout == "brats2023"
    assert spec.modalities == ("t1", "t1c", "t2", "flair")
    assert spec.convention.name == "brats2023"
    case = spec.case("BraTS-GLI-00001-000")
    assert case.images["flair"].path.name == "BraTS-GLI-00001-000-t2f.nii.gz"
    assert case.images["t1"].path.name == "BraTS-GLI-00001-000-t1n.nii.gz"
    assert case.label.name == "BraTS-GLI-00001-000-seg.nii.gz"
    assert case.extras["normal_t1"].name == "BraTS-GLI-00001-000-normal-t1n.nii.gz"
    assert case.missing == {}


def test_brats2020_layout_uncompressed_and_a_missing_modality(tmp_path):
    case = "BraTS20_Training_001"
    for suffix in ("flair", "t1", "t1ce", "seg"):  # no t2
        write_nifti(tmp_path / case / f"{case}_{suffix}.nii")
    spec = discover(tmp_path)
    assert spec.layout == "brats2020"
    assert spec.convention.name == "brats2020"
    (only,) = spec.cases
    assert set(only.images) == {"t1", "t1c", "flair"}
    assert only.images["t1c"].path.name == f"{case}_t1ce.nii"
    assert list(only.missing) == ["t2"]
    assert only.missing["t2"].name == f"{case}_t2.nii.gz"


def test_msd_layout_reads_channel_order_and_labels(tmp_path):
    meta = {
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {
            "0": "background",
            "1": "edema",
            "2": "non-enhancing tumor",
            "3": "enhancing tumour",
        },
        "training": [
            {"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}
        ],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    write_nifti(tmp_path / "imagesTr" / "BRATS_001.nii.gz", shape=(4, 4, 3, 4))
    write_nifti(tmp_path / "imagesTr" / "._BRATS_001.nii.gz")  # macOS junk in the MSD tarball
    write_nifti(tmp_path / "labelsTr" / "BRATS_001.nii.gz")
    spec = discover(tmp_path)
    assert spec.layout == "msd"
    assert spec.modalities == ("flair", "t1", "t1c", "t2")
    assert spec.convention.name == "msd"
    assert dict(spec.convention.raw_to_class) == {1: 2, 2: 1, 3: 3}  # edema is canonical 2
    (case,) = spec.cases
    assert case.case_id == "BRATS_001"
    assert [case.images[m].channel for m in ("flair", "t1", "t1c", "t2")] == [0, 1, 2, 3]
    assert case.label.name == "BRATS_001.nii.gz"


def test_nnunet_v2_layout_with_region_labels(tmp_path):
    meta = {
        "channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"},
        "labels": {
            "background": 0,
            "whole tumor": [1, 2, 3],
            "tumor core": [2, 3],
            "enhancing tumor": 3,
        },
        "regions_class_order": [1, 2, 3],
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    for case in ("BraTS2021_00000", "BraTS2021_00002"):
        for ch in range(4):
            if case.endswith("2") and ch == 3:
                continue  # one channel missing
            write_nifti(tmp_path / "imagesTr" / f"{case}_{ch:04d}.nii.gz")
        write_nifti(tmp_path / "labelsTr" / f"{case}.nii.gz")
    spec = discover(tmp_path)
    assert spec.layout == "nnunet"
    assert spec.modalities == ("t1", "t1c", "t2", "flair")
    # nnU-Net's BraTS conversion: 1 edema, 2 non-enhancing/necrosis, 3 enhancing
    assert dict(spec.convention.raw_to_class) == {1: 2, 2: 1, 3: 3}
    assert [c.case_id for c in spec.cases] == ["BraTS2021_00000", "BraTS2021_00002"]
    assert spec.cases[1].missing["flair"].name == "BraTS2021_00002_0003.nii.gz"
    assert spec.cases[0].images["t1c"].path.name == "BraTS2021_00000_0001.nii.gz"


def test_nnunet_v1_layout_with_custom_labels(tmp_path):
    meta = {
        "modality": {"0": "STIR", "1": "T1", "2": "T2"},
        "labels": {"0": "background", "1": "tumour"},
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    for ch in range(3):
        write_nifti(tmp_path / "imagesTr" / f"parotid_001_{ch:04d}.nii.gz")
    spec = discover(tmp_path)
    assert spec.layout == "nnunet"
    assert spec.modalities == ("stir", "t1", "t2")
    assert spec.convention.class_names == ("background", "tumour")
    assert dict(spec.convention.regions) == {"TUMOUR": (1,)}


def test_manifest_with_patterns_and_custom_labels(tmp_path):
    for case in ("p001", "p002"):
        for mod in ("stir", "t1", "t2"):
            write_nifti(tmp_path / "scans" / case / f"{mod}.nii.gz")
        write_nifti(tmp_path / "scans" / case / "gt.nii.gz")
    manifest = {
        "modalities": ["stir", "t1", "t2"],
        "labels": {
            "classes": {"1": "pleomorphic", "2": "warthin"},
            "regions": {"TUMOUR": [1, 2], "PA": [1]},
        },
        "root": "scans",
        "files": {
            "images": {
                "stir": "{case}/stir.nii.gz",
                "t1": "{case}/t1.nii.gz",
                "t2": "{case}/t2.nii.gz",
            },
            "label": "{case}/gt.nii.gz",
        },
        "cases": ["p001", "p002"],
    }
    (tmp_path / "contraseg.json").write_text(json.dumps(manifest))
    spec = discover(tmp_path)
    assert spec.layout == "manifest"
    assert spec.modalities == ("stir", "t1", "t2")
    assert dict(spec.convention.regions) == {"TUMOUR": (1, 2), "PA": (1,)}
    assert spec.case("p002").images["stir"].path == (tmp_path / "scans/p002/stir.nii.gz")
    assert spec.case("p002").label.name == "gt.nii.gz"


def test_manifest_case_objects_and_missing_file(tmp_path):
    write_nifti(tmp_path / "a_flair.nii.gz")
    manifest = {
        "modalities": ["flair", "t1"],
        "labels": "brats2020",
        "cases": [{"id": "a", "images": {"flair": "a_flair.nii.gz", "t1": "a_t1.nii.gz"}}],
    }
    path = tmp_path / "elsewhere.json"
    path.write_text(json.dumps(manifest))
    spec = discover(tmp_path, manifest=path)
    (case,) = spec.cases
    assert set(case.images) == {"flair"}
    assert case.missing == {"t1": tmp_path / "a_t1.nii.gz"}
    assert spec.convention.name == "brats2020"


@pytest.mark.parametrize(
    "manifest, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"cases": []}), "lists no 'modalities'"),
        (
            json.dumps({"modalities": ["t1"], "cases": [{"id": "a", "images": {"t2": "x"}}]}),
            "modalities ['t2'] are not in 'modalities'",
        ),
        (
            json.dumps({"modalities": ["t1"], "labels": "brats1999", "cases": []}),
            "unknown label convention",
        ),
    ],
)
def test_bad_manifest_names_the_file(tmp_path, manifest, message):
    (tmp_path / "contraseg.json").write_text(manifest)
    with pytest.raises(InputError, match=re.escape(message)) as info:
        discover(tmp_path)
    assert str(tmp_path / "contraseg.json") in str(info.value)
    assert "\n" not in str(info.value)


def test_folders_layout_infers_brats2015_from_label_values(tmp_path):
    for case in ("pat1", "pat2"):
        write_nifti(tmp_path / case / "Flair_subtrMeanDivStd.nii.gz")
        write_nifti(tmp_path / case / "T1c_subtrMeanDivStd.nii.gz")
        write_nifti(tmp_path / case / "brainmask.nii.gz")
    write_label(tmp_path / "pat1" / "OTMultiClass.nii.gz", [1, 2, 3])
    write_label(tmp_path / "pat2" / "OTMultiClass.nii.gz", [4, 2])
    spec = discover(tmp_path)
    assert spec.layout == "folders"
    assert spec.modalities == ("t1c", "flair")
    assert spec.convention.name == "brats2015"
    assert spec.case("pat1").brain_mask.name == "brainmask.nii.gz"


def test_empty_and_missing_folders_are_refused(tmp_path):
    with pytest.raises(InputError, match="no cases found"):
        discover(tmp_path)
    with pytest.raises(InputError, match="no such folder"):
        discover(tmp_path / "nope")


@pytest.mark.parametrize(
    "name, case, role",
    [
        ("TCGA-DU-7294_fla_bet.nii.gz", "TCGA-DU-7294", "flair"),
        ("TCGA-DU-7294_t1c_bet.nii.gz", "TCGA-DU-7294", "t1c"),
        ("TCGA-DU-7294_fusion_mav.nii.gz", "TCGA-DU-7294", "label"),
        ("Flair_subtrMeanDivStd.nii.gz", "pat", "flair"),
        ("OTMultiClass.nii.gz", "pat", "label"),
        ("brainmask.nii.gz", "pat", "brain_mask"),
        ("IXI002-Guys-0828-T1_brain.nii.gz", "ixi002", "t1"),
        ("t2.nii", "x", "t2"),
        ("Parotid-00001-stir.nii.gz", "Parotid-00001", "stir"),
        ("p7_STIR_axial.nii.gz", "p7", "stir"),
        ("case_ADC.nii.gz", "case", "adc"),
        ("notes.nii.gz", "x", None),
    ],
)
def test_classify_file(name, case, role):
    assert classify_file(name, case) == role


def test_canonical_modality_names():
    assert [canonical_modality(n) for n in ("T1ce", "FLAIR", "t2w", "T1n", "STIR")] == [
        "t1c",
        "flair",
        "t2",
        "t1",
        "stir",
    ]


@pytest.mark.realdata
@pytest.mark.parametrize(
    "folder, layout, modalities, convention, n_cases",
    [
        ("real/brats2015-flair-t1c", "folders", ("t1c", "flair"), "brats2015", 4),
        ("real/tcga-gbm-pseudolabel", "folders", ("t1", "t1c", "t2", "flair"), "brats2020", 2),
        ("real/brats2023-unlabeled", "brats2023", ("t1", "t1c", "t2", "flair"), "brats2023", 1),
        ("real/clinical-raw", "folders", ("t1", "t1c", "t2", "flair"), None, 1),
        ("normal/ixi002", "folders", ("t1", "t2"), None, 1),
    ],
)
def test_real_folders(shared_data, folder, layout, modalities, convention, n_cases):
    spec = discover(shared_data / folder)
    assert spec.layout == layout
    assert spec.modalities == modalities
    assert (spec.convention.name if spec.convention else None) == convention
    assert len(spec.cases) == n_cases
    assert all(case.missing == {} for case in spec.cases)


@pytest.mark.realdata
def test_real_brats2015_case_files(shared_data):
    case = discover(shared_data / "real/brats2015-flair-t1c").case("brats_2013_pat0003")
    assert case.images["flair"].path.name == "Flair_subtrMeanDivStd.nii.gz"
    assert case.label.name == "OTMultiClass.nii.gz"
    assert case.brain_mask.name == "brainmask.nii.gz"


def test_a_flat_folder_of_one_modality_is_one_case_per_file(tmp_path):
    """IXI's layout (IXI002-Guys-0828-T1.nii.gz, ... side by side): unlabelled T1 cases; a
    flat folder that mixes modalities stays one case."""
    for name in ("IXI002-Guys-0828-T1", "IXI012-HH-1211-T1", "IXI013-HH-1212-T1"):
        write_nifti(tmp_path / "ixi" / f"{name}.nii.gz")
    spec = discover(tmp_path / "ixi")
    assert spec.layout == "flat" and spec.modalities == ("t1",) and spec.convention is None
    assert [c.case_id for c in spec.cases] == ["IXI002-Guys-0828", "IXI012-HH-1211",
                                               "IXI013-HH-1212"]
    assert all(c.label is None and list(c.images) == ["t1"] for c in spec.cases)
    for name in ("t1", "t2"):
        write_nifti(tmp_path / "one" / f"case_{name}.nii.gz")
    one = discover(tmp_path / "one")
    assert one.layout == "folders" and len(one.cases) == 1


def test_a_case_folder_of_other_contrasts_keeps_their_names(tmp_path):
    """A head-and-neck case folder: STIR is found by name beside T1 and T2 (canonical first)."""
    for name in ("p1_stir.nii.gz", "p1_t1.nii.gz", "p1_t2.nii.gz"):
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), tmp_path / name)
    spec = discover(tmp_path)
    assert spec.modalities == ("t1", "t2", "stir") and set(spec.cases[0].images) == {
        "t1", "t2", "stir"}
