"""The papers' tables shipped as data: read as printed, and consistent with themselves."""

from __future__ import annotations

import statistics

import pytest

from contraseg.errors import ConfigError
from contraseg.evaluation.paper_tables import load_paper_table, paper_table_files
from contraseg.evaluation.protocol import all_subsets, subset_name


def test_the_shipped_tables():
    assert sorted(paper_table_files()) == ["clfc", "dc-seg-brats2020", "dc-seg-wmh",
                                           "rfnet-brats2018"]
    with pytest.raises(ConfigError, match="did you mean 'dc-seg-brats2020'"):
        load_paper_table("dc-seg-brats2021")


def test_dcseg_table1_holds_every_subset_and_its_average_row():
    table = load_paper_table("dc-seg-brats2020")
    assert table["split"] == "rfnet-brats2020" and table["unit"] == "percent"
    subsets = {subset_name(s) for s in all_subsets(("t1", "t1c", "t2", "flair"))}
    for method, cells in table["methods"].items():
        assert set(cells) == subsets, method
        for region in ("WT", "TC", "ET"):  # the printed average is the mean of the rows
            mean = statistics.fmean(cells[s][region] for s in subsets)
            assert mean == pytest.approx(table["average"][method][region], abs=0.02), (
                method, region)
    assert table["methods"]["DC-Seg"]["t1+t1c+t2+flair"] == {"WT": 90.95, "TC": 86.46,
                                                             "ET": 81.52}
    assert table["methods"]["RFNet"]["flair"] == {"WT": 87.32, "TC": 69.19, "ET": 38.15}


def test_clfc_table1_as_printed():
    table = load_paper_table("clfc")
    assert table["methods"]["Ours"]["brats2019"]["dice"] == {"mean": 91.86, "sd": 4.63}
    assert set(table["methods"]) == {"nnU-Net", "Baseline-1", "Baseline-2", "Ours"}


def _report(folder, method: str, split: str | None, value: float = 0.9):
    import json

    from contraseg.evaluation.metrics_csv import write_metrics_csv

    subsets = [subset_name(s) for s in all_subsets(("t1", "t1c", "t2", "flair"))]
    rows = [{"case": f"c{k}", "subset": s, "region": r, "dice": value}
            for k in range(3) for s in subsets for r in ("WT", "TC", "ET")]
    folder.mkdir()
    write_metrics_csv(rows, folder / "metrics.csv")
    notes = {"method": method, **({"split": split} if split else {})}
    (folder / "summary.json").write_text(json.dumps({"notes": notes}))
    return folder


def test_a_report_beside_the_paper_with_its_protocol_differences(tmp_path):
    from tests.runners import cli

    report = _report(tmp_path / "dcseg", "dc-seg", "rfnet-brats2020:1")
    done = cli("compare", str(report), "--paper", "dc-seg-brats2020", "--json")
    assert done.returncode == 0, done.stderr
    import json

    result = json.loads(done.stdout)
    assert result["method"] == "DC-Seg" and len(result["rows"]) == 45
    full = next(r for r in result["rows"] if r["subset"] == "t1+t1c+t2+flair"
                and r["region"] == "WT")
    assert full["ours"] == pytest.approx(90.0) and full["difference"] == pytest.approx(-0.95)
    assert not any(d.startswith("split") for d in result["protocol_differences"])
    other = _report(tmp_path / "rfnet", "rfnet", None)
    beside = json.loads(cli("compare", str(other), "--paper", "dc-seg-brats2020",
                            "--json").stdout)
    assert beside["method"] == "RFNet"
    assert beside["protocol_differences"][0].startswith("split: the paper's is rfnet-brats2020")
    shown = cli("compare", str(other), "--paper", "dc-seg-brats2020")
    assert shown.returncode == 0 and "post-processing" in shown.stdout
    refused = cli("compare", str(report), str(other), "--paper", "dc-seg-brats2020")
    assert refused.returncode == 1 and "give one REPORT" in refused.stderr


def test_rfnet_brats2018_averages_beside_a_report(tmp_path):
    from contraseg.evaluation.paper_compare import compare_with_paper

    table = load_paper_table("rfnet-brats2018")
    assert table["methods"]["RFNet"] == {"WT": 85.67, "TC": 76.53, "ET": 57.12}
    report = _report(tmp_path / "r", "rfnet", "rfnet-brats2018:2", value=0.8)
    result = compare_with_paper([report, report], "rfnet-brats2018")
    assert result.method == "RFNet"
    assert [(r["subset"], r["region"]) for r in result.rows] == [
        ("average", "WT"), ("average", "TC"), ("average", "ET")]
    assert result.rows[0]["difference"] == pytest.approx(80.0 - 85.67)
