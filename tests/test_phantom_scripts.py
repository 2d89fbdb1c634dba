"""scripts/swin_moco_summary.py (the README's pre-trained vs scratch table) on hand-made run
folders: cases, averaged over seeds, are the paired units of its Wilcoxon tests."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import REPO, load_script

SUBSETS = ("t1", "t1+t2", "t1+t1c+t2+flair")
summary = load_script(REPO / "scripts" / "swin_moco_summary.py")


def fake_run(out, variant, seed, cases, dice, regions=("WT", "TC", "ET"), subsets=SUBSETS,
             units=None):
    """One evaluated run: `dice(case_index)` on every subset and region, mIoU = MPA = Dice,
    HD95 10 (voxels, or `units` written in summary.json)."""
    report = out / f"{variant}-seed{seed}" / "report"
    report.mkdir(parents=True)
    if units:
        (report / "summary.json").write_text(json.dumps({"conventions": {"units": units}}))
    with open(report / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["case", "subset", "region", "dice", "hd95",
                                         "case_miou", "case_mpa"])
        writer.writeheader()
        for i, case in enumerate(cases):
            value = dice(i)
            for subset in subsets:
                for region in regions:
                    writer.writerow({"case": case, "subset": subset, "region": region,
                                     "dice": value, "hd95": 10.0, "case_miou": value,
                                     "case_mpa": value})


def fake_pretraining(out):
    (out / "moco").mkdir(parents=True)
    lines = [{"epoch": 0, "loss": {"moco": 13.5}}, {"epoch": 49, "loss": {"moco": 10.5}}]
    (out / "moco" / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def table(capsys) -> dict[str, list[str]]:
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and not line.startswith("| measure")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_seven_cases_better_after_pretraining_give_the_exact_p(tmp_path, capsys):
    cases = [f"c{i}" for i in range(7)]
    for seed in (0, 1):
        # seed 0 and seed 1 differ, so only the seed average makes the differences below
        fake_run(tmp_path, "scratch", seed, cases, lambda i: 0.50)
        fake_run(tmp_path, "pretrained", seed, cases,
                 lambda i, s=seed: 0.50 + 0.01 * (i + 1) + (0.02 if s else -0.02))
    fake_pretraining(tmp_path)
    summary.main(tmp_path)
    rows = table(capsys)
    # 7 positive distinct differences: exact two-sided p = 2 / 2^7
    assert rows["dice_WT"] == ["54.0", "50.0", "+4.0", "0.0156"]
    assert rows["sub_ET"][3] == "0.0156"
    assert rows["hd95_WT"][:3] == ["10.0", "10.0", "+0.0"]
    assert rows["hd95_WT"][3].startswith("- (all differences are zero")


def test_four_cases_are_not_tested_whatever_the_number_of_seeds(tmp_path, capsys):
    cases = [f"c{i}" for i in range(4)]
    for seed in (0, 1, 2):  # 12 (case, seed) pairs, but only 4 cases
        fake_run(tmp_path, "scratch", seed, cases, lambda i: 0.5)
        fake_run(tmp_path, "pretrained", seed, cases, lambda i: 0.6 + 0.01 * i)
    fake_pretraining(tmp_path)
    summary.main(tmp_path)
    assert table(capsys)["dice_TC"][3] == "- (4 non-zero difference(s) < 6: not tested)"


def test_seeds_of_one_variant_scoring_other_cases_are_refused(tmp_path):
    fake_run(tmp_path, "scratch", 0, ["a", "b"], lambda i: 0.5)
    fake_run(tmp_path, "scratch", 1, ["a", "c"], lambda i: 0.5)
    fake_run(tmp_path, "pretrained", 0, ["a", "b"], lambda i: 0.5)
    fake_pretraining(tmp_path)
    with pytest.raises(SystemExit, match="scratch-seed1/report: scores other cases"):
        summary.main(tmp_path)


def test_a_parotid_report_is_summarised_on_its_own_region_and_units(tmp_path, capsys):
    cases = [f"p{i}" for i in range(6)]
    for seed in (0, 1, 2):
        for variant, base in (("scratch", 0.4), ("pretrained", 0.5)):
            fake_run(tmp_path, variant, seed, cases, lambda i, b=base: b + 0.01 * i,
                     regions=("TUMOUR",), subsets=("stir", "t1+t2", "t1+t2+stir"), units="mm")
    fake_pretraining(tmp_path)
    summary.main(tmp_path)
    printed = capsys.readouterr().out
    assert "HD95 in mm" in printed
    rows = {line.split("|")[1].strip(): line for line in printed.splitlines()
            if line.startswith("| ") and not line.startswith("| measure")}
    assert sorted(rows) == ["dice_TUMOUR", "hd95_TUMOUR", "miou", "mpa", "sub_TUMOUR"]
    # 6 equal positive differences: the exact two-sided p of 6 ties is 2 / 2^6
    assert "| 52.5 | 42.5 | +10.0 | 0.0312 |" in rows["dice_TUMOUR"]
