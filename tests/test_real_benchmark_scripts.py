"""scripts/real_benchmark/summarise.py (the README tables) and archive.py (the evidence kept in
the repository) on a hand-made benchmark folder: two methods, two cases, 15 subsets."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from contraseg.cli import app
from contraseg.evaluation.protocol import all_subsets, subset_name
from contraseg.evaluation.report import write_report
from tests.conftest import REPO, load_script

MODS = ("t1", "t1c", "t2", "flair")
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
