"""evaluate / predict / compare on a tiny trained run, through the command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from contraseg.data.phantom import write_phantom
from contraseg.engine.runs import start_training
from tests.conftest import QUIET
from tests.runners import cli


@pytest.fixture(scope="module")
def trained(make_phantom, tiny_run) -> tuple[Path, Path]:
    """A tiny U-Net run (with its curves: the report shows them) and its phantom."""
    data = make_phantom(cases=3, size=32, seed=5)
    return tiny_run("unet", data, "epochs=1", "val_every=0"), data


def test_evaluate_writes_every_subset_region_and_case(trained, tmp_path):
    run, data = trained
    result = cli("evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "r" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:3] == ["case", "subset", "region"]
    assert {"dice", "hd95", "assd", "vs", "sensitivity", "specificity", "dice_postproc"} <= set(
        rows[0])
    assert len(rows) == 3 * 15 * 3  # cases x subsets x regions
    assert len({r["subset"] for r in rows}) == 15 and "t1+t1c+t2+flair" in {
        r["subset"] for r in rows}
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)
    html = (tmp_path / "r" / "report.html").read_text()
    assert "data:image/png;base64" in html and "hd95" in html.lower()
    assert len(list((tmp_path / "r" / "overlays").glob("*.png"))) == 2
    assert (tmp_path / "r" / "summary.md").is_file()
    # the run behind the figures: its facts and training curves
    notes = json.loads((tmp_path / "r" / "summary.json").read_text())["notes"]
    assert notes["preset"] == "tiny" and notes["training"].startswith("finished at step ")
    assert notes["training cases"] == "2 train, 1 val" and "contraseg" in notes["versions"]
    assert (tmp_path / "r" / "figures" / "progress.png").is_file()


def test_evaluate_selected_subsets(trained, tmp_path):
    run, data = trained
    result = cli("evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "r"),
                 "--subsets", "flair,t1c+flair", "--overlays", "0", "--figures")
    assert result.returncode == 0, result.stderr
    assert "unet has no disentangled representations" in " ".join(result.stderr.split())
    figures = sorted(p.name for p in (tmp_path / "r" / "figures").iterdir())
    assert figures == ["progress.png"]  # the run's curves, no representation figure
    with open(tmp_path / "r" / "metrics.csv") as f:
        subsets = {r["subset"] for r in csv.DictReader(f)}
    assert subsets == {"flair", "t1c+flair"}
    bad = cli("evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "x"),
              "--subsets", "flair,adc")
    assert bad.returncode == 1 and "adc" in bad.stderr and "Traceback" not in bad.stderr


def test_compare_two_reports(trained, tmp_path):
    run, data = trained
    for name, blend in (("a", "gaussian"), ("b", "constant")):
        assert cli("evaluate", "--run", str(run), "--data", str(data), "--out",
                   str(tmp_path / name), "--blend", blend, "--overlays", "0",
                   "--subsets", "full,flair").returncode == 0  # two subsets: pairs across them
    result = cli("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["n_paired"] == 3 * 2 * 3


def test_a_run_without_validation_is_evaluated_with_its_last_weights(trained, tmp_path):
    run, data = trained  # val_every=0: no validation, so no best.pt
    assert not (run / "checkpoints" / "best.pt").exists()
    best = cli("evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "b"),
               "--which", "best")
    assert best.returncode == 1 and "did not validate" in best.stderr
    assert "--which last" in best.stderr and not (tmp_path / "b").exists()
    middle = cli("predict", "--run", str(run), "--out", str(tmp_path / "m.nii.gz"),
                 str(data / "Phantom-00000"), "--which", "middle")
    assert middle.returncode == 1 and "'middle'" in middle.stderr
    assert "Traceback" not in middle.stderr and not (tmp_path / "m.nii.gz").exists()
    auto = cli("evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "r"),
               "--overlays", "0", "--subsets", "full")
    assert auto.returncode == 0, auto.stderr
    notes = json.loads((tmp_path / "r" / "summary.json").read_text())["notes"]
    steps = json.loads((run / "run.json").read_text())["step"]
    assert notes["checkpoint"] == f"{run / 'checkpoints' / 'last.pt'} (step {steps})"
    assert f"last.pt (step {steps})" in (tmp_path / "r" / "summary.md").read_text()
    one = cli("predict", "--run", str(run), "--out", str(tmp_path / "p.nii.gz"),
              str(data / "Phantom-00000"))
    assert one.returncode == 0, one.stderr
    assert f"last.pt(step{steps})" in "".join(one.stdout.split())


def test_evaluate_takes_and_records_the_inference_settings(trained, tmp_path):
    run, data = trained
    result = cli("evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "r"),
                 "--overlap", "0.1", "--tta", "--blend", "constant", "--blend-space",
                 "probabilities", "--et-min-voxels", "300", "--subsets", "full",
                 "--overlays", "0")
    assert result.returncode == 0, result.stderr
    conventions = json.loads((tmp_path / "r" / "summary.json").read_text())["conventions"]
    assert conventions["inference"] | {"window": None} == {
        "window": None, "overlap": 0.1, "blend": "constant", "blend_space": "probabilities",
        "tta_flips": True, "sw_batch_size": 2, "bf16": False}
    assert "300 mm^3" in conventions["et_postprocessing"]
    bad = cli("evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "x"),
              "--blend", "median")
    assert bad.returncode == 1 and "median" in bad.stderr and "gaussian" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_the_brats_et_rule_leaves_the_small_phantom_alone(trained, tmp_path):
    """The 500-voxel rule is BraTS's (whole-head scans): on a 32 mm phantom it is not applied,
    so the post-processed columns equal the raw ones (it turned 94% ET Dice into HD95 373)."""
    run, data = trained
    result = cli("evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "r"),
                 "--overlays", "0", "--subsets", "full,flair")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "r" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["et_rule_voxels"]) == 0 for r in rows)
    assert all(r["dice_postproc"] == r["dice"] and r["hd95_postproc"] == r["hd95"] for r in rows)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert "not applied to 3 of 3 cases" in summary["conventions"]["et_postprocessing"]
    assert "| †" not in (tmp_path / "r" / "summary.md").read_text().replace("0 †", "| †")


def test_evaluate_scores_finished_folds_only_and_names_the_rest(tmp_path):
    write_phantom(tmp_path / "ph", cases=3, size=32, seed=6)
    for fold in (0, 1):
        start_training(tmp_path / "cv", method="unet", data=[tmp_path / "ph"], preset="tiny",
                       overrides=["epochs=1", "val_every=0", "data.val_fraction=0", *QUIET],
                       resume=False, max_steps=None, max_minutes=None, console=None,
                       folds=3, fold=fold)
    info_path = tmp_path / "cv" / "fold-1" / "run.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps(info | {"status": "stopped", "step": 1}))
    held_out = json.loads((tmp_path / "cv" / "fold-0" / "run.json").read_text())["split"]["test"]
    result = cli("evaluate", "--run", str(tmp_path / "cv"), "--data", str(tmp_path / "ph"),
                 "--out", str(tmp_path / "r"), "--overlays", "0", "--subsets", "full")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "r" / "metrics.csv") as f:
        cases = {r["case"] for r in csv.DictReader(f)}
    assert {f"ph/{c}" for c in cases} == set(held_out)
    note = json.loads((tmp_path / "r" / "summary.json").read_text())["notes"]["cross-validation"]
    assert note.startswith("1 of 3 folds finished")
    assert "fold-1 stopped at step 1" in note and "fold-2 not started" in note
    missing = sorted({"Phantom-00000", "Phantom-00001", "Phantom-00002"} - cases)
    assert note.endswith(f"2 case(s) not scored: {', '.join(missing)}")
    assert "incomplete cross-validation" in " ".join(result.stderr.split())


def _case_files(data: Path, case: str) -> dict[str, Path]:
    folder = data / case
    return {m: folder / f"{case}-{s}.nii.gz"
            for m, s in (("t1", "t1n"), ("t1c", "t1c"), ("t2", "t2w"), ("flair", "t2f"))}


def test_predict_from_a_subset_of_modalities(trained, tmp_path):
    run, data = trained
    files = _case_files(data, "Phantom-00001")
    before = {m: p.read_bytes() for m, p in files.items()}
    out = tmp_path / "pred.nii.gz"
    result = cli("predict", "--run", str(run), "--out", str(out),
                 "--t1c", str(files["t1c"]), "--flair", str(files["flair"]))
    assert result.returncode == 0, result.stderr
    pred, ref = nib.load(out), nib.load(files["flair"])
    assert pred.shape == ref.shape and np.allclose(pred.affine, ref.affine)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2, 3}
    assert all(files[m].read_bytes() == before[m] for m in files)  # inputs untouched
    # what made it: the modalities used and the checkpoint's step; a line while it works
    assert f"with t1c, flair and {run / 'checkpoints' / 'last.pt'} (step " in result.stdout
    assert "segmenting Phantom-00001 from t1c, flair" in result.stderr


def test_predict_a_case_folder_and_a_dataset(trained, tmp_path):
    run, data = trained
    one = cli("predict", "--run", str(run), "--out", str(tmp_path / "one.nii.gz"),
              str(data / "Phantom-00002"))
    assert one.returncode == 0, one.stderr
    many = cli("predict", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "all"))
    assert many.returncode == 0, many.stderr
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [
        f"Phantom-0000{i}.nii.gz" for i in range(3)]


def test_evaluate_with_the_wrong_label_convention_names_the_file_and_the_fix(trained,
                                                                          tmp_path):
    run, data = trained  # phantom labels are BraTS 2023 (1, 2, 3)
    result = cli("evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "r"),
                 "--labels", "brats2020", "--subsets", "full", "--overlays", "0")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    line, = result.stderr.strip().splitlines()
    assert "-seg.nii.gz: label values [3] are not in convention brats2020" in line
    assert line.endswith("try --labels brats2023") and not (tmp_path / "r").exists()


def test_evaluate_external_predictions_reproduces_the_runs_own_figures(trained, tmp_path):
    """The run's predictions (raw, no ET rule) given back as an external folder score exactly
    what `evaluate --run --subsets full` scores, every metric and row; compare accepts both."""
    run, data = trained
    assert cli("predict", "--run", str(run), "--data", str(data), "--out",
               str(tmp_path / "preds"), "--et-min-voxels", "0").returncode == 0
    own = cli("evaluate", "--run", str(run), "--data", str(data), "--out",
              str(tmp_path / "own"), "--subsets", "full", "--overlays", "0")
    external = cli("evaluate", "--pred", str(tmp_path / "preds"), "--data", str(data),
                   "--out", str(tmp_path / "ext"), "--overlays", "1")
    assert own.returncode == 0 and external.returncode == 0, own.stderr + external.stderr

    def rows(report):
        with open(tmp_path / report / "metrics.csv") as handle:
            return list(csv.DictReader(handle))

    assert rows("ext") == rows("own") and len(rows("ext")) == 3 * 3
    assert len(list((tmp_path / "ext" / "overlays").glob("*.png"))) == 1
    compared = cli("compare", str(tmp_path / "own"), str(tmp_path / "ext"), "--json")
    average = json.loads(compared.stdout)["average"]
    assert all(row["mean_diff"] == 0 for row in average)
    # a manifest listing FLAIR first still names the subset in the run's order, so they pair
    listed = tmp_path / "flair-first"
    listed.mkdir()
    files = {"t2f": "flair", "t1n": "t1", "t1c": "t1c", "t2w": "t2"}
    (listed / "contraseg.json").write_text(json.dumps({
        "root": str(data), "modalities": list(files.values()), "labels": "brats2023",
        "cases": sorted(p.name for p in data.iterdir() if p.is_dir()),
        "files": {"images": {m: f"{{case}}/{{case}}-{s}.nii.gz" for s, m in files.items()},
                  "label": "{case}/{case}-seg.nii.gz"}}))
    assert cli("evaluate", "--pred", str(tmp_path / "preds"), "--data", str(listed), "--out",
               str(tmp_path / "listed"), "--overlays", "0").returncode == 0
    assert rows("listed") == rows("own")


def test_evaluate_external_predictions_refuses_what_it_cannot_score(trained, tmp_path):
    run, data = trained
    preds = tmp_path / "preds"
    preds.mkdir()
    label = nib.load(data / "Phantom-00000" / "Phantom-00000-seg.nii.gz")
    nib.save(label, preds / "Phantom-00000.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj)[:-1], label.affine),
             preds / "Phantom-00001.nii.gz")
    base = ["evaluate", "--data", str(data), "--out", str(tmp_path / "r")]
    for args, problem in (
            (["--pred", str(preds)], "no prediction for 1 of 3 labelled cases (Phantom-00002)"),
            (["--pred", str(preds), "--run", str(run)], "give --run (a contraseg run) or --pred"),
            (["--pred", str(preds), "--overlap", "0.5"], "--overlap: for --run only")):
        result = cli(*base, *args)
        assert result.returncode == 1 and problem in result.stderr, result.stderr
    nib.save(label, preds / "Phantom-00002.nii.gz")
    result = cli(*base, "--pred", str(preds))
    assert result.returncode == 1 and "Phantom-00001.nii.gz: is not on the grid" in result.stderr
    assert not (tmp_path / "r").exists()


def test_et_min_voxels_0_turns_the_rule_of_the_postproc_columns_off(trained, tmp_path):
    """An explicit 0 is obeyed and said (it used to fall back to the peers' 500)."""
    run, data = trained
    result = cli("evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "r"),
                 "--subsets", "full", "--overlays", "0", "--et-min-voxels", "0")
    assert result.returncode == 0, result.stderr
    conventions = json.loads((tmp_path / "r" / "summary.json").read_text())["conventions"]
    assert "the ET rule is off (--et-min-voxels 0)" in conventions["et_postprocessing"]


def test_predict_output_folders_get_one_file_per_case(trained, tmp_path):
    """An existing folder, or a path with a trailing slash, means <folder>/<case>.nii.gz; the
    case is named after the input files' common prefix (or the case folder)."""
    run, data = trained
    files = _case_files(data, "Phantom-00001")
    existing = tmp_path / "existing"
    existing.mkdir()
    for out in (str(existing), f"{tmp_path / 'new'}/"):
        result = cli("predict", "--run", str(run), "--out", out,
                     "--t1c", str(files["t1c"]), "--flair", str(files["flair"]))
        assert result.returncode == 0, result.stderr
        assert [p.name for p in Path(out).iterdir()] == ["Phantom-00001.nii.gz"]
    folder = cli("predict", "--run", str(run), "--out", f"{tmp_path / 'f'}/",
                 str(data / "Phantom-00002"))
    assert folder.returncode == 0, folder.stderr
    assert (tmp_path / "f" / "Phantom-00002.nii.gz").is_file()


@pytest.mark.parametrize(("out", "extra", "problem"), [
    ("seg", (), "must be a .nii.gz or .nii file, or a folder"),
    ("seg.mha", (), "must be a .nii.gz or .nii file, or a folder"),
    ("blocker/seg.nii.gz", (), "blocker: is a file, not a folder"),
    ("all.nii.gz", ("--data",), "batch mode (--data) writes one <case>.nii.gz per case"),
])
def test_predict_refuses_a_bad_output_before_any_work(tmp_path, out, extra, problem):
    """The run does not even exist: the output path is checked first, and nothing is written."""
    (tmp_path / "blocker").write_text("a file")
    image = tmp_path / "case-t1c.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), image)
    inputs = [*extra, str(tmp_path)] if extra else ["--t1c", str(image)]
    before = sorted(tmp_path.rglob("*"))
    result = cli("predict", "--run", str(tmp_path / "no-run"), "--out", str(tmp_path / out),
                 *inputs)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0] and "no-run" not in lines[0]
    assert sorted(tmp_path.rglob("*")) == before


def test_predict_refuses_unknown_modalities_and_other_grids(trained, tmp_path):
    run, data = trained
    files = _case_files(data, "Phantom-00000")
    unknown = cli("predict", "--run", str(run), "--out", str(tmp_path / "x.nii.gz"),
                  f"adc={files['t1']}")
    assert unknown.returncode == 1 and "adc" in unknown.stderr
    assert str(files["t1"]) in unknown.stderr and "Traceback" not in unknown.stderr
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20), np.float32), np.eye(4)), small)
    grid = cli("predict", "--run", str(run), "--out", str(tmp_path / "y.nii.gz"),
               "--t1c", str(files["t1c"]), "--flair", str(small))
    assert grid.returncode == 1 and str(small) in grid.stderr and "shape" in grid.stderr
    assert not (tmp_path / "x.nii.gz").exists() and not (tmp_path / "y.nii.gz").exists()


class Evil:
    """Any class: a checkpoint that names one is refused by weights_only loading."""


def test_predict_refuses_a_tampered_checkpoint(trained, tmp_path):
    import torch

    fake = tmp_path / "fake.pt"
    torch.save({"format": "contraseg.checkpoint", "payload": Evil()}, fake)
    result = cli("predict", "--run", str(fake), "--out", str(tmp_path / "z.nii.gz"),
                 "t1=" + str(_case_files(trained[1], "Phantom-00000")["t1"]))
    assert result.returncode == 1 and "refused" in result.stderr and str(fake) in result.stderr


def test_output_labels_follow_the_input_convention(trained, tmp_path):
    from contraseg.data.labels import custom_convention, get_convention
    from contraseg.engine.predictor import Predictor

    run, data = trained
    predictor = Predictor.from_run(run, device="cpu")
    assert predictor.convention.name == "brats2023"
    assert predictor.output_convention(get_convention("brats2020")).name == "brats2020"
    assert predictor.output_convention(None) is predictor.convention
    other = custom_convention({1: "tumour"})  # other classes: the run's values are kept
    assert predictor.output_convention(other) is predictor.convention
    out = tmp_path / "as2020.nii.gz"
    flair = _case_files(data, "Phantom-00000")["flair"]
    result = cli("predict", "--run", str(run), "--out", str(out), f"flair={flair}",
                 "--labels", "brats2020")
    assert result.returncode == 0, result.stderr
    assert set(np.unique(np.asarray(nib.load(out).dataobj))) <= {0, 1, 2, 4}
