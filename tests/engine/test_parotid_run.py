"""Swin-MoCo in its paper's own setting, end to end at tiny size: the parotid example of
docs/methods/swin-moco.md
(a parotid phantom with STIR, T1 and T2 on thick slices and one `tumour` class; MoCo
pre-training; fine-tuning from it; a prediction from a subset; the 7-subset evaluation with
mIoU, MPA and HD95 in mm), run with the tiny preset on small phantoms."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import warnings

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from contraseg.cli import app
from contraseg.data.layouts import discover
from contraseg.engine.predictor import Predictor
from tests.conftest import REPO

runner = CliRunner()
# the docs' block runs once, in one pytest-xdist worker, for all the tests of this module
pytestmark = pytest.mark.xdist_group("parotid-example")
# the docs' block at test size: tiny presets, 32^2 slices, fewer cases, windows that do not
# overlap (the tiny preset's 16 x 16 x 2 windows would otherwise be 4 times as many)
TEST_SIZE = {"--preset fast": "--preset tiny", "--size 128": "--size 32", "--cases 12": "--cases 3",
             "--cases 4": "--cases 2", "--units mm": "--units mm --overlap 0"}


def readme_parotid_block() -> list[str]:
    """The commands of the Swin-MoCo page's "parotid setting end to end" block."""
    text = (REPO / "docs" / "methods" / "swin-moco.md").read_text()
    found = re.search(r"The parotid setting end to end.*?```bash\n(.*?)```", text, flags=re.S)
    assert found, "docs/methods/swin-moco.md lost its parotid example"
    return [line.strip() for line in found.group(1).replace("\\\n", " ").splitlines()
            if line.strip()]


def invoke(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{shlex.join(args)}\n{result.output}"
    return result.output


# session scope: pytest-xdist interleaves modules, and a module fixture is rebuilt each time
@pytest.fixture(scope="session")
def example(tmp_path_factory):
    """The docs' block run in a fresh folder; returns the folder and each command's output."""
    root = tmp_path_factory.mktemp("parotid-example")
    outputs, before = [], os.getcwd()
    os.chdir(root)  # the block's paths are relative
    try:
        for command in readme_parotid_block():
            for readme_value, test_value in TEST_SIZE.items():
                command = command.replace(readme_value, test_value)
            outputs.append(invoke(shlex.split(command)[1:]))
    finally:
        os.chdir(before)
    return root, outputs


def test_the_phantom_is_stir_t1_t2_on_thick_slices(example):
    root, _ = example
    manifest = json.loads((root / "parotid" / "train" / "contraseg.json").read_text())
    assert manifest["modalities"] == ["stir", "t1", "t2"]
    assert manifest["labels"]["classes"] == {"1": "tumour"} and len(manifest["cases"]) == 3
    stir = nib.load(root / "parotid" / "train" / "Parotid-00000" / "Parotid-00000-stir.nii.gz")
    assert stir.shape == (32, 32, 16) and np.allclose(stir.header.get_zooms(), (6, 6, 4))


def test_fine_tuning_starts_from_the_pretraining_run(example):
    root, _ = example
    moco = json.loads((root / "runs" / "parotid-moco" / "run.json").read_text())
    assert moco["method"] == "swin-moco-pretrain" and moco["modalities"] == ["t1", "t2", "stir"]
    init = json.loads((root / "runs" / "parotid" / "run.json").read_text())["init"]
    assert init["loaded"] > 10 and init["decoder_copied"]


def test_predictions_from_a_subset_and_from_a_case_folder(example):
    root, outputs = example
    run, case = root / "runs" / "parotid", root / "parotid" / "test" / "Parotid-00000"
    assert "with t2, stir" in outputs[4]  # the block's predict line
    out = invoke(["predict", "--run", str(run), "--out", str(root / "folder.nii.gz"), str(case),
                  "--overlap", "0"])
    assert "with t1, t2, stir" in out  # `stir` is recognised in a case folder's file names
    reference = nib.load(case / "Parotid-00000-seg.nii.gz")
    for name in ("seg.nii.gz", "folder.nii.gz"):
        written = nib.load(root / name)
        assert written.shape == reference.shape
        assert np.allclose(written.affine, reference.affine)
        assert set(np.unique(np.asanyarray(written.dataobj))) <= {0, 1}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = Predictor.from_run(run, device="cpu")
        predictor.override({"overlap": 0.0})
        predictor.predict_case(discover(root / "parotid" / "test").cases[0], root / "api.nii.gz")
    # a neck scan has no zero background, but that is no reason to ask for skull stripping
    assert not [w for w in caught if "skull-stripped" in str(w.message)]


def test_the_report_covers_7_subsets_with_miou_mpa_and_hd95_in_mm(example):
    root, _ = example
    report = root / "reports" / "parotid"
    with open(report / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    subsets = {r["subset"] for r in rows}
    assert len(subsets) == 7 and {"stir", "t1+t2", "t1+t2+stir"} <= subsets
    assert {r["region"] for r in rows} == {"TUMOUR"} and len(rows) == 2 * 7
    for r in rows:
        assert 0 <= float(r["case_miou"]) <= 1 and 0 <= float(r["case_mpa"]) <= 1
        assert 0 <= float(r["dice"]) <= 1 and float(r["hd95"]) >= 0
    summary = json.loads((report / "summary.json").read_text())
    assert [t["metric"] for t in summary["tables"]][-2:] == ["case_miou", "case_mpa"]
    assert summary["conventions"]["units"] == "mm"
    text = (report / "summary.md").read_text()
    assert "## mIoU (%)" in text and "## MPA (%)" in text and "## HD95 (mm)" in text
