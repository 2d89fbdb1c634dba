"""The papers' tables shipped as data: read as printed, and consistent with themselves."""

from __future__ import annotations

import statistics

import pytest

from contraseg.errors import ConfigError
from contraseg.evaluation.paper_tables import load_paper_table, paper_table_files
from contraseg.evaluation.protocol import all_subsets, subset_name


def test_the_shipped_tables():
    assert sorted(paper_table_files()) == ["clfc", "dc-seg-brats2020", "dc-seg-wmh"]
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
