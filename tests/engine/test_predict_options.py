"""predict's options for pipelines: probabilities beside the labels, a modality subset for a
whole folder, and the ensemble of a cross-validation's folds."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from contraseg.engine.runs import start_training
from tests.conftest import QUIET
from tests.runners import cli


@pytest.fixture(scope="module")
def phantom(make_phantom) -> Path:
    return make_phantom(cases=4, size=32, seed=7)


def probabilities(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float64)


def test_a_folder_from_a_subset_with_probabilities(tmp_path, phantom, tiny_run):
    run = tiny_run("unet", phantom)
    batch = cli("predict", "--run", str(run), "--data", str(phantom), "--out",
                str(tmp_path / "subset"), "--modalities", "FLAIR,t1ce", "--save-probabilities")
    assert batch.returncode == 0, batch.stderr
    case = "Phantom-00001"
    probs = probabilities(tmp_path / "subset" / f"{case}_probabilities.nii.gz")
    labels = np.asarray(nib.load(tmp_path / "subset" / f"{case}.nii.gz").dataobj)
    assert probs.shape == (*labels.shape, 4) and np.allclose(probs.sum(-1), 1, atol=1e-4)
    # the same case from its t1c and flair files only: the same labels
    folder = phantom / case
    single = cli("predict", "--run", str(run), "--out", str(tmp_path / "one.nii.gz"),
                 "--t1c", str(folder / f"{case}-t1c.nii.gz"),
                 "--flair", str(folder / f"{case}-t2f.nii.gz"))
    assert single.returncode == 0, single.stderr
    assert np.array_equal(np.asarray(nib.load(tmp_path / "one.nii.gz").dataobj), labels)
    wrong = cli("predict", "--run", str(run), "--data", str(phantom), "--out",
                str(tmp_path / "x"), "--modalities", "flari")
    assert wrong.returncode == 1 and "did you mean 'flair'?" in wrong.stderr
    assert not (tmp_path / "x").exists()


def test_a_cross_validation_folder_predicts_with_the_mean_of_its_folds(tmp_path, phantom):
    root = tmp_path / "cv"
    start_training(root, method="unet", data=[phantom], preset="tiny",
                   overrides=["epochs=1", "val_every=0", *QUIET], resume=False, max_steps=None,
                   max_minutes=None, console=None, folds=2)
    case = phantom / "Phantom-00002"
    outs = {}
    for name, run in (("cv", root), ("f0", root / "fold-0"), ("f1", root / "fold-1")):
        result = cli("predict", "--run", str(run), "--out", str(tmp_path / f"{name}.nii.gz"),
                     str(case), "--save-probabilities")
        assert result.returncode == 0, result.stderr
        outs[name] = probabilities(tmp_path / f"{name}_probabilities.nii.gz")
        if name == "cv":
            assert "the mean of 2 folds" in result.stdout
    assert np.allclose(outs["cv"], (outs["f0"] + outs["f1"]) / 2, atol=1e-5)
    assert not np.allclose(outs["f0"], outs["f1"], atol=1e-3)  # two different models
    (root / "fold-1" / "run.json").write_text(
        (root / "fold-1" / "run.json").read_text().replace('"finished"', '"stopped"'))
    partial = cli("predict", "--run", str(root), "--out", str(tmp_path / "p.nii.gz"), str(case))
    assert partial.returncode == 1 and "fold-1 stopped" in partial.stderr


def test_inputs_unlike_the_training_scans_are_warned_about(tmp_path, phantom, tiny_run):
    """5.5 mm slices on a run trained at the phantom's own spacing: warned and resampled to
    that spacing; a scan without background: warned; a phantom-like case: silent."""
    import warnings

    from contraseg.api import as_loaded_case
    from contraseg.engine.input_checks import warn_if_not_skull_stripped
    from contraseg.engine.predictor import Predictor
    from contraseg.errors import ContrasegWarning

    predictor = Predictor.from_run(tiny_run("unet", phantom), device="cpu")
    assert predictor.preprocess.target_spacing is None and predictor.training_spacing
    thick = np.diag([*predictor.training_spacing[:2], 5.5 * predictor.training_spacing[2], 1])
    brain = np.zeros((16, 16, 8))
    brain[4:12, 4:12, 2:6] = np.random.default_rng(0).normal(size=(8, 8, 4))
    with pytest.warns(ContrasegWarning, match="differ 5.5x from the run's training scans"):
        settings = predictor.settings_for(as_loaded_case({"t1": brain}, thick))
    assert settings.target_spacing == predictor.training_spacing
    with pytest.warns(ContrasegWarning, match="does not look skull-stripped"):
        warn_if_not_skull_stripped(as_loaded_case({"t1": brain + 5.0}))
    same = np.diag([*predictor.training_spacing, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert predictor.settings_for(as_loaded_case({"t1": brain}, same)) == predictor.preprocess
        warn_if_not_skull_stripped(as_loaded_case({"t1": brain}, same))


def test_a_raw_clinical_scan_is_predicted_with_one_line_warnings(tmp_path, phantom,
                                                                 shared_data, tiny_run):
    """The real TCGA scans before any preprocessing (0.9 x 0.9 x 5.5 mm, not skull-stripped,
    four grids): predicted, with a warning line for each problem."""
    raw = shared_data / "real" / "clinical-raw" / "TCGA-FG-6692"
    # 32^3 windows (the whole phantom): a head at 1 mm in 8x fewer windows than the tiny 16^3
    run = tiny_run("unet", phantom, "epochs=1", "val_every=0", "data.patch_size=[32,32,32]",
                   *QUIET)
    result = cli("predict", "--run", str(run), "--out", str(tmp_path / "raw.nii.gz"),
                 "--resample-to", "t1", str(raw))
    assert result.returncode == 0, result.stderr
    warnings_seen = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("does not look skull-stripped" in line for line in warnings_seen)
    assert any("5.5 mm" in line and "resampled" in line for line in warnings_seen)
    assert nib.load(tmp_path / "raw.nii.gz").shape == nib.load(raw / "t1.nii.gz").shape
