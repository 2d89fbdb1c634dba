"""Paired Wilcoxon comparison of two reports: against scipy, Holm by hand, degenerate groups."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rich.console import Console
from scipy import stats

from contraseg.errors import InputError
from contraseg.evaluation.report import write_metrics_csv
from contraseg.evaluation.stats import MIN_NONZERO, compare_reports, holm, print_comparison

CASES = [f"c{i}" for i in range(8)]
A_WT = np.array([0.81, 0.62, 0.93, 0.74, 0.55, 0.86, 0.77, 0.69])
DIFF_WT = np.array([0.05, -0.02, 0.07, 0.01, 0.09, -0.04, 0.03, 0.06])  # distinct, non-zero
A_TC = np.array([0.5, 0.6, 0.7, 0.4, 0.65, 0.55, 0.45, 0.35])
DIFF_TC = np.array([0.0, 0.1, 0.1, -0.1, 0.2, 0.3, 0.05, 0.15])  # a zero and ties


def _rows(values: dict[tuple[str, str], np.ndarray], cases=CASES) -> list[dict]:
    return [
        {"case": case, "subset": subset, "region": region, "dice": float(v[i]), "hd95": 1.0}
        for (subset, region), v in values.items()
        for i, case in enumerate(cases)
    ]


@pytest.fixture()
def reports(tmp_path):
    few = np.zeros(8)
    few[:4] = [0.1, 0.2, -0.1, 0.3]  # 4 non-zero differences only
    b_tc = A_TC + DIFF_TC
    b_tc[7] = math.nan  # dropped pair
    a_values = {("t1c", "WT"): A_WT, ("t1c", "TC"): A_TC,
                ("flair+t1c", "WT"): A_WT, ("flair+t1c", "TC"): A_TC}
    b_values = {("t1c", "WT"): A_WT + DIFF_WT, ("t1c", "TC"): A_TC.copy(),
                ("flair+t1c", "WT"): A_WT + few, ("flair+t1c", "TC"): b_tc}
    rows_a = _rows(a_values) + _rows({("t1c", "WT"): [0.5], ("t1c", "TC"): [0.4]}, ["only_a"])
    rows_b = _rows(b_values) + _rows({("t1c", "ET"): [0.5]}, ["only_b"])
    write_metrics_csv(rows_a, tmp_path / "a" / "metrics.csv")
    write_metrics_csv(rows_b, tmp_path / "b" / "metrics.csv")
    return tmp_path / "a", tmp_path / "b"


def _by_key(comparison):
    return {(r.subset, r.region): r for r in comparison.results}


def test_matches_scipy_wilcoxon(reports) -> None:
    comparison = compare_reports(*reports, metric="dice")
    result = _by_key(comparison)[("t1c", "WT")]
    expected = stats.wilcoxon(A_WT, A_WT + DIFF_WT)
    assert result.statistic == pytest.approx(float(expected.statistic))
    assert result.p_value == pytest.approx(float(expected.pvalue))
    assert result.n == 8 and result.n_nonzero == 8 and result.n_nan == 0
    assert result.mean_a == pytest.approx(A_WT.mean())
    assert result.mean_b == pytest.approx((A_WT + DIFF_WT).mean())
    assert result.mean_diff == pytest.approx(DIFF_WT.mean())


def test_zeros_ties_and_nan_pairs_match_scipy(reports) -> None:
    result = _by_key(compare_reports(*reports))[("flair+t1c", "TC")]
    a, b = A_TC[:7], (A_TC + DIFF_TC)[:7]
    expected = stats.wilcoxon(a, b, zero_method="wilcox")
    assert result.n == 7 and result.n_nan == 1 and result.n_nonzero == 6
    assert result.statistic == pytest.approx(float(expected.statistic))
    assert result.p_value == pytest.approx(float(expected.pvalue))


def test_degenerate_groups_give_nan_with_a_note(reports) -> None:
    results = _by_key(compare_reports(*reports))
    zeros = results[("t1c", "TC")]
    assert math.isnan(zeros.p_value) and math.isnan(zeros.p_holm)
    assert "all differences are zero" in zeros.note and zeros.mean_diff == 0
    few = results[("flair+t1c", "WT")]
    assert math.isnan(few.p_value) and few.n == 8 and few.n_nonzero == 4
    assert f"< {MIN_NONZERO}" in few.note


def test_holm_by_hand() -> None:
    adjusted = holm([0.01, 0.04, 0.03, math.nan, 0.005])
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3]) and adjusted[4] == pytest.approx(0.02)
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([]) == []


def test_comparison_applies_holm_across_tests(reports) -> None:
    results = _by_key(compare_reports(*reports))
    p1, p2 = results[("t1c", "WT")].p_value, results[("flair+t1c", "TC")].p_value
    assert [results[("t1c", "WT")].p_holm, results[("flair+t1c", "TC")].p_holm] == \
        pytest.approx(holm([p1, p2]))


def test_unpaired_rows_are_counted(reports) -> None:
    comparison = compare_reports(*reports)
    assert comparison.n_paired == 32
    assert (comparison.unpaired_a, comparison.unpaired_b) == (2, 1)
    assert [(r.subset, r.region) for r in comparison.results] == [
        ("t1c", "WT"), ("t1c", "TC"), ("flair+t1c", "WT"), ("flair+t1c", "TC")]


def test_to_dict_and_print(reports) -> None:
    comparison = compare_reports(*reports, metric="dice")
    data = json.loads(json.dumps(comparison.to_dict(), allow_nan=False))
    assert data["unpaired_a"] == 2 and data["results"][1]["p_value"] is None
    console = Console(record=True, width=220)
    print_comparison(comparison, console)
    text = console.export_text()
    assert "flair+t1c" in text and "all differences are zero" in text and "2 only in A" in text


def test_missing_metric_column_names_the_file(reports, tmp_path) -> None:
    write_metrics_csv([{"case": "c0", "subset": "t1c", "region": "WT", "iou": 0.5}],
                      tmp_path / "c" / "metrics.csv")
    with pytest.raises(InputError, match="no 'dice' column") as info:
        compare_reports(reports[0], tmp_path / "c")
    assert info.value.path == tmp_path / "c" / "metrics.csv"


def test_nothing_in_common_names_the_second_report(reports, tmp_path) -> None:
    write_metrics_csv(_rows({("t2", "WT"): A_WT}), tmp_path / "d" / "metrics.csv")
    with pytest.raises(InputError, match="nothing|no \\(case") as info:
        compare_reports(reports[0], tmp_path / "d")
    assert info.value.path == tmp_path / "d" / "metrics.csv"


def test_missing_report(tmp_path) -> None:
    with pytest.raises(InputError, match="no such metrics file"):
        compare_reports(tmp_path / "none", tmp_path / "none2")
