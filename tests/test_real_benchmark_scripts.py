"""scripts/real_benchmark/summarise.py (the README tables) and archive.py (the evidence kept in
the repository) on a hand-made benchmark folder: two methods, two cases, 15 subsets; the
learning curves and the minimum useful budgets `contraseg methods` shows."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from contraseg.cli import app
from contraseg.evaluation.protocol import all_subsets, subset_name
from contraseg.evaluation.report import write_report
from contraseg.models.budgets import UsefulBudget, load_budgets
from tests.conftest import REPO, load_script

MODS = ("t1", "t1c", "t2", "flair")
FULL = "t1+t1c+t2+flair"
CASES = [f"c{i}" for i in range(8)]
SCRIPTS = REPO / "scripts" / "real_benchmark"


def fake_method(out, method, shift, seconds, steps):
    """Dice 0.6 / 0.5 / 0.4 (WT / TC / ET) on case c0 and 0.2 higher on c1, + `shift`; the
    all-four subset 0.1 higher still; HD95 5 mm; the ET rule sets ET to 0 on c0."""
    rows = []
    for case, base in (("c0", 0.0), ("c1", 0.2)):
        for subset in map(subset_name, all_subsets(MODS)):
            bonus = 0.1 if subset == "t1+t1c+t2+flair" else 0.0
            for region, dice in (("WT", 0.6), ("TC", 0.5), ("ET", 0.4)):
                value = dice + base + bonus + shift
                post = 0.0 if (case, region) == ("c0", "ET") else value
                rows.append({"case": case, "subset": subset, "region": region, "dice": value,
                             "hd95": 5.0, "dice_postproc": post})
    write_report(out / method / "report", rows, MODS, {},
                 metrics=("dice", "hd95", "dice_postproc"))
    (out / method / "run").mkdir(parents=True)
    (out / method / "run" / "run.json").write_text(
        json.dumps({"status": "finished", "train_seconds": seconds, "step": steps}))


def test_summarise_tables_and_the_archive_rebuilds_them(tmp_path, capsys):
    out = tmp_path / "bench"
    fake_method(out, "unet", 0.0, 3300.0, 14400)
    fake_method(out, "dc-seg", 0.05, 3240.0, 1800)
    compare = CliRunner().invoke(app, ["compare", str(out / "unet" / "report"),
                                       str(out / "dc-seg" / "report"), "--json"])
    assert compare.exit_code == 0, compare.output
    (out / "compare-dc-seg-vs-unet.json").write_text(compare.stdout)

    summarise = load_script(SCRIPTS / "summarise.py")
    summarise.main(out)
    tables = capsys.readouterr().out
    # all four: (0.7 + 0.9) / 2 = 80 % WT; 15-subset mean 70.7 %; ET after the rule: c0 is 0
    assert ("| unet | 80.0 / 70.0 / 60.0 | 70.7 / 60.7 / 50.7 | 35.0 / 30.3 | 5.0 / 5.0 / 5.0 "
            "| 55 | 14,400 |") in tables
    assert "| dc-seg | 85.0 / 75.0 / 65.0 | 75.7 / 65.7 / 55.7 |" in tables
    assert "| ●●●● | 80.0 | **85.0** |" in tables  # WT of the all-four subset, best in bold
    assert "| dc-seg vs unet | 2 | +5.0, 2 / 0" in tables  # both cases better

    dest = tmp_path / "kept"
    archive = load_script(SCRIPTS / "archive.py")
    archive.archive(out, dest, commit="abc123")
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert kept == ["compare-dc-seg-vs-unet.json", "dc-seg/provenance.json",
                    "dc-seg/report/metrics.csv", "dc-seg/report/summary.json",
                    "dc-seg/run/run.json", "unet/provenance.json", "unet/report/metrics.csv",
                    "unet/report/summary.json", "unet/run/run.json"]
    summarise.main(dest)
    assert capsys.readouterr().out == tables

    # a later row of one method, on another commit, leaves the other's provenance alone
    archive.archive(out, dest, commit="def456", only=["dc-seg"])
    assert json.loads((dest / "unet" / "provenance.json").read_text()) == {"commit": "abc123"}
    assert json.loads((dest / "dc-seg" / "provenance.json").read_text()) == {"commit": "def456"}
    alone = tmp_path / "alone"
    archive.archive(out, alone, commit=None, only=["dc-seg"])
    assert sorted(str(p.relative_to(alone)) for p in alone.rglob("*") if p.is_file()) == [
        "dc-seg/report/metrics.csv", "dc-seg/report/summary.json", "dc-seg/run/run.json"]


def test_the_learning_curve_finds_the_first_snapshot_that_reaches_the_reference(
        tmp_path, capsys, monkeypatch):
    from contraseg.engine.checkpoint import META_KEYS, save_checkpoint

    run = tmp_path / "dc-seg" / "run"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"train_seconds": 1800.0}))
    # minute-5, minute-10, minute-20 and last: mean Dice 0.50, 0.66, 0.70, 0.72 (WT+0.1, ET-0.1)
    for which, step, dice in (("minute-10", 200, 0.66), ("minute-5", 100, 0.5),
                              ("minute-20", 400, 0.7), ("last", 600, 0.72)):
        save_checkpoint(run / "checkpoints" / f"{which}.pt",
                        {key: None for key in META_KEYS} | {"step": step})
        rows = [{"case": c, "subset": FULL, "region": r, "dice": dice + shift}
                for c in CASES for r, shift in (("WT", 0.1), ("TC", 0.0), ("ET", -0.1))]
        write_report(tmp_path / "dc-seg" / "curve" / which, rows, MODS, {}, metrics=("dice",))
    reference = [{"case": c, "subset": FULL, "region": r, "dice": 0.68} for c in CASES
                 for r in ("WT", "TC", "ET")]
    write_report(tmp_path / "plain", reference, MODS, {}, metrics=("dice",))
    curve = load_script(REPO / "scripts" / "real_benchmark" / "learning_curve.py")
    monkeypatch.setattr(sys, "argv", ["curve", str(run), str(tmp_path / "data"),
                                      str(tmp_path / "plain"), "--json", str(tmp_path / "c.json")])
    curve.main()  # every point has its report already: nothing is evaluated
    printed = capsys.readouterr().out
    assert "| minute-5 | 5 | 100 | 0.600 | 0.500 | 0.400 | 0.500 |" in printed
    assert "| last | 30 | 600 | 0.820 | 0.720 | 0.620 | 0.720 |" in printed
    assert "reaches the reference after 20 minutes (400 steps)" in printed
    kept = json.loads((tmp_path / "c.json").read_text())
    assert [p["which"] for p in kept["curve"]] == ["minute-5", "minute-10", "minute-20", "last"]
    assert kept["reference"]["score"] == pytest.approx(0.68)

    # the packaged budgets that `contraseg methods` shows, from the archived curves
    (tmp_path / "dc-seg" / "curve.json").write_text(json.dumps(kept))
    (tmp_path / "dc-seg" / "provenance.json").write_text(json.dumps({"commit": "abc1234"}))
    slow = {**kept, "curve": kept["curve"][:2], "useful": None}  # 0.66 at most, over 10 min
    (tmp_path / "rfnet").mkdir()
    (tmp_path / "rfnet" / "curve.json").write_text(json.dumps(slow))
    writer = load_script(REPO / "scripts" / "real_benchmark" / "useful_budgets.py")
    monkeypatch.setattr(sys, "argv", ["budgets", str(tmp_path), "--out",
                                      str(tmp_path / "budgets.json")])
    writer.main()
    found = load_budgets((tmp_path / "budgets.json").read_text())
    assert found["dc-seg"] == UsefulBudget(20.0, 400, 30.0, "abc1234")
    assert found["dc-seg"].describe() == "20 min, 400 steps"
    assert found["rfnet"].describe() == "not within 10 min"


def test_a_learning_curve_counts_the_minutes_of_the_first_stage(tmp_path):
    """CLFC's generator and Swin-MoCo's pre-training are part of what a user trains."""
    curve = load_script(REPO / "scripts" / "real_benchmark" / "learning_curve.py")
    run = tmp_path / "swin-moco" / "run"
    run.mkdir(parents=True)
    assert curve.first_stage_minutes(run) == 0
    (tmp_path / "swin-moco" / "pretrain").mkdir()
    (tmp_path / "swin-moco" / "pretrain" / "run.json").write_text(
        json.dumps({"train_seconds": 1230.0}))
    assert curve.first_stage_minutes(run) == pytest.approx(20.5)


def test_methods_lists_the_measured_useful_budgets(monkeypatch):
    monkeypatch.setattr("contraseg.models.budgets.load_budgets",
                        lambda: {"unet": UsefulBudget(8.0, 700, 55.0),
                                 "dc-seg": UsefulBudget(None, None, 55.0)})
    result = CliRunner().invoke(app, ["methods"], terminal_width=200)
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[1:] if line.strip()}
    assert "8 min, 700 steps" in lines["unet"]
    assert "not within 55 min" in lines["dc-seg"]
    assert " - " in lines["rfnet"]  # not measured


def test_the_packaged_budgets_name_only_registered_methods():
    from contraseg.models.registry import list_methods

    assert set(load_budgets()) <= set(list_methods())
