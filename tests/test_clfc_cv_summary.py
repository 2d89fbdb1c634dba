"""scripts/clfc_cv_summary.py (the README's CLFC cross-validation table) on hand-made reports,
among them the whole-tumour setting's, which scores WT only."""

from __future__ import annotations

import csv

from tests.conftest import REPO, load_script

summary = load_script(REPO / "scripts" / "clfc_cv_summary.py")
SUBSETS = ("t1", "t1+t1c+t2+flair")


def fake_report(out, name, regions, dice):
    """`dice(case_index)` for every case, subset and region; sensitivity = Dice; HD95 2."""
    report = out / f"report-{name}"
    report.mkdir(parents=True)
    with open(report / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["case", "subset", "region", "dice", "sensitivity",
                                         "hd95"])
        writer.writeheader()
        for i in range(6):
            for subset in SUBSETS:
                for region in regions:
                    writer.writerow({"case": f"c{i}", "subset": subset, "region": region,
                                     "dice": dice(i), "sensitivity": dice(i), "hd95": 2.0})


def test_whole_tumour_reports_give_wt_rows_only(tmp_path, capsys):
    fake_report(tmp_path, "full", ["WT"], lambda i: 0.80 + 0.01 * i)
    fake_report(tmp_path, "baseline1", ["WT"], lambda i: 0.70 + 0.01 * i)
    summary.main(tmp_path, ["full", "baseline1"])
    out = capsys.readouterr().out
    assert "| full | WT | 82.5 ± 1.9 |" in out
    assert "| baseline1 | WT | 72.5 ± 1.9 |" in out
    assert "| TC |" not in out and "vs baseline1 TC" not in out
    # six cases, each 10 points better: the smallest two-sided exact p, 2 / 2^6
    assert "- vs baseline1 WT (n 6): full +10.0 (p 0.0312); subsets +10.0 (p 0.0312)" in out


def test_three_regions_are_summarised_in_order(tmp_path, capsys):
    fake_report(tmp_path, "full", ["WT", "TC", "ET"], lambda i: 0.5)
    summary.main(tmp_path, ["full"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| full")]
    assert [row.split("|")[2].strip() for row in rows] == ["WT", "TC", "ET"]
