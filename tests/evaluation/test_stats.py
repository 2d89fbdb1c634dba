"""Paired Wilcoxon comparison of reports: against scipy, Holm by hand, degenerate groups, the
"average" rows (each case's mean over the subsets) and several seeds per method."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rich.console import Console
from scipy import stats

from contraseg.errors import InputError
from contraseg.evaluation.comparison_table import print_comparison
from contraseg.evaluation.metrics_csv import write_metrics_csv
from contraseg.evaluation.stats import (
    MIN_NONZERO,
    compare_reports,
    compare_seeds,
    describe_seeds,
    holm,
    load_seeds,
)

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


# --- the "average" rows: each case's mean over the subsets ---------------------------------------

X = np.array([0.60, 0.70, 0.80, 0.65, 0.75, 0.55, 0.85])  # A's per-case mean over the subsets
D = np.array([0.05, -0.01, 0.08, 0.03, 0.12, 0.02, -0.04])  # B - A, distinct and non-zero
CASES7 = [f"c{i}" for i in range(7)]


def _write(path, values: dict[tuple[str, str], np.ndarray], cases=CASES7):
    write_metrics_csv(_rows(values, cases), path / "metrics.csv")
    return path


@pytest.fixture()
def subset_reports(tmp_path):
    """Three subsets whose per-case mean is X (A) and X + D (B); A's t1c of c2 is NaN and B has
    a subset (t2) that A lacks, both of which the average must leave out."""
    y = X + D
    a_t1c = X - 0.1
    a_t1c[2] = math.nan
    a = _write(tmp_path / "a", {("flair", "WT"): X + 0.1, ("t1c", "WT"): a_t1c,
                                ("flair+t1c", "WT"): X})
    b = _write(tmp_path / "b", {("flair", "WT"): y - 0.05, ("t1c", "WT"): y + 0.05,
                                ("flair+t1c", "WT"): y, ("t2", "WT"): np.zeros(7)})
    return a, b


def test_average_row_tests_each_cases_mean_over_the_common_subsets(subset_reports) -> None:
    comparison = compare_reports(*subset_reports)
    assert [(r.subset, r.region) for r in comparison.average] == [("average", "WT")]
    average = comparison.average[0]
    # by hand: the mean over flair, t1c, flair+t1c is X for A and X + D for B, except case c2,
    # whose t1c is NaN in A: its mean runs over flair and flair+t1c only, on both sides
    a = np.array([0.60, 0.70, 0.85, 0.65, 0.75, 0.55, 0.85])  # 0.85 = (0.90 + 0.80) / 2
    b = np.array([0.65, 0.69, 0.855, 0.68, 0.87, 0.57, 0.81])  # 0.855 = (0.83 + 0.88) / 2
    expected = stats.wilcoxon(a, b)
    assert average.n == 7 and average.n_nan == 0 and average.n_nonzero == 7
    assert average.mean_a == pytest.approx(a.mean())
    assert average.mean_b == pytest.approx(b.mean())
    assert average.mean_diff == pytest.approx((b - a).mean())
    assert average.statistic == pytest.approx(float(expected.statistic))
    assert average.p_value == pytest.approx(float(expected.pvalue))
    assert average.note.startswith("mean over 2-3 subsets per case")
    assert average.p_holm == pytest.approx(average.p_value)  # a family of one test
    assert comparison.unpaired_b == 7  # B's t2 rows


def test_average_row_mean_of_one_case_by_hand(tmp_path) -> None:
    a = _write(tmp_path / "a", {("flair", "TC"): [0.2], ("t1c", "TC"): [0.5],
                                ("t2", "TC"): [math.nan], ("t1", "TC"): [0.9]}, ["c0"])
    b = _write(tmp_path / "b", {("flair", "TC"): [0.4], ("t1c", "TC"): [0.6],
                                ("t2", "TC"): [0.1]}, ["c0"])
    average = compare_reports(a, b).average[0]
    # common and finite on both sides: flair and t1c (t1 only in A, t2 NaN in A)
    assert average.mean_a == pytest.approx(0.35) and average.mean_b == pytest.approx(0.5)
    assert average.n == 1 and math.isnan(average.p_value)
    assert average.note.startswith("mean over 2 subsets")


def test_case_with_no_finite_subset_is_a_nan_pair_of_the_average(tmp_path) -> None:
    a = _write(tmp_path / "a", {("flair", "ET"): [0.2, math.nan]}, ["c0", "c1"])
    b = _write(tmp_path / "b", {("flair", "ET"): [0.4, 0.3]}, ["c0", "c1"])
    average = compare_reports(a, b).average[0]
    assert (average.n, average.n_nan) == (1, 1) and average.mean_a == pytest.approx(0.2)


def test_average_rows_are_their_own_holm_family(reports) -> None:
    comparison = compare_reports(*reports)
    averages = {r.region: r for r in comparison.average}
    assert list(averages) == ["WT", "TC"]
    p = [averages["WT"].p_value, averages["TC"].p_value]
    assert [averages["WT"].p_holm, averages["TC"].p_holm] == pytest.approx(holm(p))
    per_subset = [r.p_value for r in comparison.results]
    assert [r.p_holm for r in comparison.results] == pytest.approx(holm(per_subset),
                                                                   nan_ok=True)


# --- several seeds per method -----------------------------------------------------------------

BASE_A = np.array([0.50, 0.60, 0.70, 0.80, 0.90, 0.70])  # mean 0.70
DIFF6 = np.array([0.07, -0.02, 0.03, -0.05, 0.04, -0.01])  # mean 0.01, distinct |d|
CASES6 = [f"c{i}" for i in range(6)]
A_OFFSETS = (0.0, 0.02, 0.04)  # seed means 0.70, 0.72, 0.74: mean 0.72, SD 0.02
B_OFFSETS = (0.0, 0.04)  # seed means 0.71, 0.75: mean 0.73, SD 0.04 / sqrt(2)


@pytest.fixture()
def seed_reports(tmp_path):
    """Method A with 3 seeds, B with 2; flair+t1c is flair + 0.1 on every case and seed."""
    def method(name, base, offsets):
        return [_write(tmp_path / f"{name}{k}", {("flair", "WT"): base + o,
                                                  ("flair+t1c", "WT"): base + o + 0.1}, CASES6)
                for k, o in enumerate(offsets)]
    return method("a", BASE_A, A_OFFSETS), method("b", BASE_A + DIFF6, B_OFFSETS)


def test_mean_and_sd_over_seeds_by_hand(seed_reports) -> None:
    comparison = compare_seeds(*seed_reports)
    flair = _by_key(comparison)[("flair", "WT")]
    assert flair.seed_means_a == pytest.approx((0.70, 0.72, 0.74))
    assert flair.mean_a == pytest.approx(0.72) and flair.sd_a == pytest.approx(0.02)
    assert flair.seed_means_b == pytest.approx((0.71, 0.75))
    assert flair.mean_b == pytest.approx(0.73) and flair.sd_b == pytest.approx(0.04 / 2 ** 0.5)
    average = comparison.average[0]  # each case's mean over the two subsets: + 0.05
    assert average.seed_means_a == pytest.approx((0.75, 0.77, 0.79))
    assert average.mean_a == pytest.approx(0.77) and average.sd_a == pytest.approx(0.02)
    assert average.mean_b == pytest.approx(0.78)


def test_test_ranks_the_seed_averaged_case_scores(seed_reports) -> None:
    comparison = compare_seeds(*seed_reports)
    # each case averaged over its method's seeds: A = BASE_A + 0.02, B = BASE_A + DIFF6 + 0.02
    a, b = BASE_A + 0.02, BASE_A + DIFF6 + 0.02
    expected = stats.wilcoxon(a, b)
    for result in (_by_key(comparison)[("flair", "WT")], comparison.average[0]):
        assert result.n == 6 and result.n_nonzero == 6  # cases, not (case, seed) pairs
        assert result.statistic == pytest.approx(float(expected.statistic))
        assert result.p_value == pytest.approx(float(expected.pvalue))
        assert result.mean_diff == pytest.approx(0.01)
    assert comparison.n_paired == 12
    data = json.loads(json.dumps(comparison.to_dict(), allow_nan=False))
    assert (data["seeds_a"], data["seeds_b"]) == (3, 2)
    assert data["reports_b"] == [str(p / "metrics.csv") for p in seed_reports[1]]
    assert data["average"][0]["subset"] == "average"
    assert data["average"][0]["seed_means_b"] == pytest.approx([0.76, 0.80])


def test_nan_seed_is_skipped_in_the_seed_average(tmp_path) -> None:
    a0 = _write(tmp_path / "a0", {("flair", "WT"): [0.4, 0.6]}, ["c0", "c1"])
    a1 = _write(tmp_path / "a1", {("flair", "WT"): [math.nan, 0.8]}, ["c0", "c1"])
    b = _write(tmp_path / "b", {("flair", "WT"): [0.5, 0.5]}, ["c0", "c1"])
    result = compare_seeds([a0, a1], [b]).results[0]
    assert result.n == 2 and result.n_nan == 0
    assert result.seed_means_a == pytest.approx((0.5, 0.8))  # seed 1: c1 only
    assert result.mean_diff == pytest.approx(((0.5 - 0.4) + (0.5 - 0.7)) / 2)


def test_describe_seeds_of_one_method(seed_reports) -> None:
    described = describe_seeds(load_seeds(seed_reports[0]))
    assert list(described) == [("flair", "WT"), ("flair+t1c", "WT"), ("average", "WT")]
    assert described[("flair+t1c", "WT")].per_seed == pytest.approx((0.80, 0.82, 0.84))
    assert described[("average", "WT")].mean == pytest.approx(0.77)
    assert described[("average", "WT")].sd == pytest.approx(0.02)


def test_two_report_form_is_one_seed_per_method(reports) -> None:
    old, new = compare_reports(*reports), compare_seeds([reports[0]], [reports[1]])
    data = old.to_dict()
    assert new.to_dict() == data
    assert data["report_a"] == str(reports[0] / "metrics.csv") and data["seeds_a"] == 1
    first = data["results"][0]
    assert first["seed_means_a"] == [first["mean_a"]] and first["sd_a"] is None
    console = Console(record=True, width=220)
    print_comparison(old, console)
    text = console.export_text()
    assert "mean A" in text and "A seeds" not in text and "average" in text


def test_print_with_seeds_shows_the_seed_columns(seed_reports) -> None:
    console = Console(record=True, width=250)
    print_comparison(compare_seeds(*seed_reports), console)
    text = console.export_text()
    assert "B (2 seeds) vs A (3 seeds)" in text
    assert "A seeds" in text and "B mean ± SD" in text and "0.7000 0.7200 0.7400" in text
    assert "0.7200 ± 0.0200" in text
    assert "two families" in text


def test_seed_report_lacking_cases_is_refused(seed_reports, tmp_path) -> None:
    short = _write(tmp_path / "short", {("flair", "WT"): BASE_A[:5],
                                        ("flair+t1c", "WT"): BASE_A[:5]}, CASES6[:5])
    with pytest.raises(InputError, match="lacks case\\(s\\) c5 that") as info:
        compare_seeds([*seed_reports[0], short], seed_reports[1])
    assert info.value.path == short / "metrics.csv"
    with pytest.raises(InputError, match="lacks case\\(s\\) c5 that .*b0") as info:
        compare_seeds(seed_reports[0], [short, *seed_reports[1]])  # named first or not
    assert info.value.path == short / "metrics.csv"
    one_subset = _write(tmp_path / "one", {("flair", "WT"): BASE_A}, CASES6)
    with pytest.raises(InputError, match="lacks \\(case, subset, region\\) row") as info:
        compare_seeds(seed_reports[0], [seed_reports[1][0], one_subset])
    assert info.value.path == one_subset / "metrics.csv" and "c0/flair+t1c/WT" in str(info.value)
