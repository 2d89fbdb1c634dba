"""The recipe comparison's scripts: the plain MONAI recipe (scripts/plain_monai_unet.py) on a
tiny BraTS 2018-named dataset, and the factor table (scripts/real_cv_table.py) on hand-made
cross-validation rows."""

from __future__ import annotations

import json
import sys

import nibabel as nib
import numpy as np
import pytest

from contraseg.evaluation.protocol import all_subsets, subset_name
from contraseg.evaluation.report import write_report
from tests.conftest import REPO, load_script

MODS = ("t1", "t1c", "t2", "flair")
FULL = "t1+t1c+t2+flair"
CASES = [f"c{i}" for i in range(8)]


def brats_case(root, case, rng):
    """A 24^3 case in BraTS 2018 naming: a bright ball (labels 2, 1, 4 inside out) in noise."""
    grid = np.indices((24, 24, 24)) - 12
    radius = np.sqrt((grid ** 2).sum(0))
    label = np.select([radius < 3, radius < 5, radius < 8], [4, 1, 2], 0).astype(np.uint8)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    (root / case).mkdir(parents=True)
    for modality in ("flair", "t1", "t1ce", "t2"):
        image = 100 + 10 * rng.standard_normal((24, 24, 24)) + 50 * (label > 0)
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine),
                 root / case / f"{case}_{modality}.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), root / case / f"{case}_seg.nii.gz")


def test_the_plain_recipe_trains_predicts_and_resumes(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for case in ("a", "b", "c"):
        brats_case(tmp_path / "brats", case, rng)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["a", "b"], "test": ["c"]}))
    plain = load_script(REPO / "scripts" / "plain_monai_unet.py")
    args = ["plain", "--data", str(tmp_path / "brats"), "--split", str(split), "--out",
            str(tmp_path / "out"), "--minutes", "0.001", "--cache", str(tmp_path / "cache")]
    monkeypatch.setattr(sys, "argv", args)
    plain.main()
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["steps"] >= 1 and info["train"] == ["a", "b"]
    written = nib.load(tmp_path / "out" / "pred" / "c.nii.gz")
    assert written.shape == (24, 24, 24)
    assert np.allclose(written.affine, np.diag([2.0, 2.0, 2.0, 1.0]))
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 4}
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["a.npz", "b.npz", "c.npz"]
    (tmp_path / "out" / "pred" / "c.nii.gz").unlink()
    monkeypatch.setattr(sys, "argv", [*args, "--resume"])
    plain.main()  # trained already: only the missing prediction is written
    assert json.loads((tmp_path / "out" / "run.json").read_text()) == info
    assert (tmp_path / "out" / "pred" / "c.nii.gz").is_file()


def fake_row(out, name, shift_et, subsets, steps, shift_wt=0.0):
    """Dice WT 0.8 + shift_wt x (1 + case index / 10), TC 0.6 and ET 0.5 + shift_et x (1 + case
    index / 10) on every case; the other subsets 0.2 lower. One seed, five folds of `steps`
    steps."""
    rows = []
    shifts = {"WT": shift_wt, "TC": 0.0, "ET": shift_et}
    for index, case in enumerate(CASES):
        for subset in subsets:
            drop = 0.0 if subset == FULL else 0.2
            for region, dice in (("WT", 0.8), ("TC", 0.6), ("ET", 0.5)):
                value = dice - drop + shifts[region] * (1 + index / 10)
                rows.append({"case": case, "subset": subset, "region": region, "dice": value})
    seed = out / name / "seed-0"
    write_report(seed / ("report" if len(subsets) > 1 else "report-full"), rows, MODS, {},
                 metrics=("dice",))
    for fold in range(5):
        (seed / f"fold-{fold}").mkdir(parents=True)
        (seed / f"fold-{fold}" / "run.json").write_text(json.dumps({"step": steps + fold}))
    (out / name / "command.json").write_text(json.dumps(
        {"command": f"/somewhere/real_cv.py /tmp/cv {name} --seeds 0", "commit": "f" * 40}))


def test_the_factor_table_and_its_archive(tmp_path, capsys, monkeypatch):
    every = [subset_name(s) for s in all_subsets(MODS)]
    fake_row(tmp_path / "cv", "plain", 0.0, [FULL], 790)
    fake_row(tmp_path / "cv", "preset", -0.05, every, 600)
    fake_row(tmp_path / "cv", "fixed", 0.0, every, 880)
    fake_row(tmp_path / "cv", "aside", 0.0, [FULL], 880)
    fake_row(tmp_path / "cv", "specialist", 0.0, ["flair"], 880, shift_wt=0.05)
    table = load_script(REPO / "scripts" / "real_cv_table.py")
    names = ["plain", "preset", "fixed", "aside@preset", "specialist@fixed"]
    monkeypatch.setattr(sys, "argv", ["table", str(tmp_path / "cv"), *names, "--archive",
                                      str(tmp_path / "kept")])
    table.main()
    printed = capsys.readouterr().out
    # ET of `preset`: 0.5 - 0.05 x (1 + mean index 0.35) = 0.4325; 8 cases all lower: p 0.0078
    # (exact, 2 / 2^8); 15-subset means: WT (0.8 + 14 x 0.6) / 15 = 0.613, ET 0.246
    assert "Reference `plain` (1 seeds, 792 steps a fold), all four modalities: WT 0.800, " \
           "TC 0.600, ET 0.500" in printed
    assert ("| `preset` | 1 | 602 | 0.800 / 0.600 / 0.432 | - / - / - | +0.000 (p nan) / +0.000 "
            "(p nan) / -0.068 (p 0.0078) | 0.613 / 0.413 / 0.246 | - / - / - | 0.600 |") in printed
    assert ("| `fixed` | 1 | 882 | 0.800 / 0.600 / 0.500 | +0.000 (p nan) / +0.000 (p nan) / "
            "+0.068 (p 0.0078) | +0.000 (p nan) / +0.000 (p nan) / +0.000 (p nan) | "
            "0.613 / 0.413 / 0.313 | +0.000 (p nan) / +0.000 (p nan) / +0.067 (p 0.0078) |"
            ) in printed
    # a row off the main line is compared with its base, not with the row above
    assert ("| `aside` (base `preset`) | 1 | 882 | 0.800 / 0.600 / 0.500 | +0.000 (p nan) / "
            "+0.000 (p nan) / +0.068 (p 0.0078) |") in printed
    # a row scored on FLAIR alone only (a specialist): its FLAIR WT against its base's
    assert ("| `specialist` (base `fixed`) | 1 | 882 | - | - / - / - | - / - / - | - | "
            "- / - / - | 0.668 | +0.068 (p 0.0078) |") in printed
    assert "0.600 | - |" in printed and "0.600 | +0.000 (p nan) |" in printed
    assert ("- `fixed`: `python scripts/real_cv.py OUT fixed --seeds 0` (commit `fffffff`)"
            in printed)
    monkeypatch.setattr(sys, "argv", ["table", str(tmp_path / "kept"), *names])
    table.main()
    assert capsys.readouterr().out == printed  # the archive holds all the table needs


def test_an_inference_row_reuses_another_rows_trained_folds(tmp_path):
    cv = load_script(REPO / "scripts" / "real_cv.py")
    source = tmp_path / "trained" / "seed-0"
    for fold in range(cv.FOLDS):
        (source / f"fold-{fold}").mkdir(parents=True)
        (source / f"fold-{fold}" / "run.json").write_text(json.dumps({"status": "finished"}))
    args = type("Args", (), {"out": tmp_path, "reuse": "trained"})
    folder = tmp_path / "no-et-rule" / "seed-0"
    folder.mkdir(parents=True)
    cv.link_folds(args, folder, 0)
    assert json.loads((folder / "fold-4" / "run.json").read_text()) == {"status": "finished"}
    assert (folder / "fold-4").resolve() == (source / "fold-4").resolve()
    (source / "fold-2" / "run.json").write_text(json.dumps({"status": "stopped"}))
    with pytest.raises(RuntimeError, match="fold-2: not finished; run row trained first"):
        cv.link_folds(args, tmp_path / "other" / "seed-0", 0)



def test_a_specialist_row_trains_on_its_modalities_with_the_same_case_keys(tmp_path):
    """--modalities flair: the manifest of the 21 cases with FLAIR only and the same root, so
    contraseg keys the cases (and draws the folds) as for the full rows."""
    cv = load_script(REPO / "scripts" / "real_cv.py")
    full = {"root": "/data/brats2018", "modalities": ["flair", "t1", "t1c", "t2"],
            "files": {"images": {m: f"{{case}}/{{case}}_{m}.nii.gz"
                                 for m in ("flair", "t1", "t1c", "t2")},
                      "label": "{case}/{case}_seg.nii.gz"},
            "cases": ["A", "B"], "labels": "brats2020"}
    (tmp_path / "data" / "all").mkdir(parents=True)
    (tmp_path / "data" / "all" / "contraseg.json").write_text(json.dumps(full))
    args = type("Args", (), {"out": tmp_path, "modalities": None})
    assert cv.data_folder(args) == tmp_path / "data" / "all"
    args.modalities = ["flair"]
    folder = cv.data_folder(args)
    assert folder == tmp_path / "data" / "all-flair"
    written = json.loads((folder / "contraseg.json").read_text())
    assert written == {**full, "modalities": ["flair"],
                       "files": {"images": {"flair": "{case}/{case}_flair.nii.gz"},
                                 "label": "{case}/{case}_seg.nii.gz"}}
    args.modalities = ["flair", "pd"]
    with pytest.raises(SystemExit, match="pd not among flair, t1, t1c, t2"):
        cv.data_folder(args)
