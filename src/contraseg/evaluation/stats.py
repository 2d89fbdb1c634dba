"""Paired comparison of two evaluation reports (the `contraseg compare` command).

Rows of the two metrics.csv files are paired by (case, subset, region). For each (subset, region)
a two-sided Wilcoxon signed-rank test runs on the paired values, with these conventions:

* Differences are B - A (the second report minus the first); `mean_diff` is their mean.
* Pairs where either value is NaN are dropped (counted in `n_nan`).
* Zero differences follow scipy's default ``zero_method="wilcox"``: they are discarded before
  ranking, and tied absolute differences get average ranks. scipy's ``method="auto"`` picks the
  exact null distribution for small samples without ties/zeros and the normal approximation
  otherwise.
* No test is run (p = NaN, with a note) when every difference is zero, or when fewer than
  :data:`MIN_NONZERO` non-zero differences remain: with 5 the smallest two-sided exact p is
  0.0625, so no result could reach 0.05.
* Holm's step-down correction is applied across every test with a finite p of one comparison.

Rows present in only one report are counted (`unpaired_a`, `unpaired_b`) and left out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from scipy import stats

from contraseg.errors import InputError
from contraseg.evaluation.report import KEY_COLUMNS, read_metrics_csv
from contraseg.utils.jsonio import json_safe

MIN_NONZERO = 6
ZERO_METHOD = "wilcox"
METRICS_FILE = "metrics.csv"


@dataclass(frozen=True)
class PairedResult:
    """The paired test of one (subset, region)."""

    subset: str
    region: str
    n: int
    n_nonzero: int
    n_nan: int
    mean_a: float
    mean_b: float
    mean_diff: float
    statistic: float
    p_value: float
    p_holm: float = math.nan
    note: str = ""


@dataclass(frozen=True)
class Comparison:
    """Every (subset, region) test of report B against report A for one metric."""

    metric: str
    report_a: Path
    report_b: Path
    results: list[PairedResult]
    n_paired: int
    unpaired_a: int
    unpaired_b: int
    conventions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form (NaN becomes null)."""
        return json_safe({
            "metric": self.metric,
            "report_a": str(self.report_a),
            "report_b": str(self.report_b),
            "n_paired": self.n_paired,
            "unpaired_a": self.unpaired_a,
            "unpaired_b": self.unpaired_b,
            "conventions": self.conventions,
            "results": [asdict(r) for r in self.results],
        })


def metrics_path(report: str | Path) -> Path:
    """A report folder's metrics.csv (a path to a CSV file is taken as it is)."""
    report = Path(report)
    return report / METRICS_FILE if report.is_dir() else report


def _load(report: str | Path, metric: str) -> tuple[Path, dict[tuple[str, ...], float]]:
    path = metrics_path(report)
    rows = read_metrics_csv(path)
    if rows and metric not in rows[0]:
        columns = ", ".join(k for k in rows[0] if k not in KEY_COLUMNS)
        raise InputError(path, f"no '{metric}' column (columns: {columns})")
    return path, {tuple(str(r[k]) for k in KEY_COLUMNS): float(r[metric]) for r in rows}


def wilcoxon_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, str]:
    """(statistic, p, note) of a two-sided paired Wilcoxon test; p is NaN when not testable.

    `a` and `b` hold finite values; see the module docstring for the conventions.
    """
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    nonzero = int(np.count_nonzero(diff))
    if diff.size and nonzero == 0:
        return math.nan, math.nan, "all differences are zero: not tested"
    if nonzero < MIN_NONZERO:
        return math.nan, math.nan, (
            f"{nonzero} non-zero difference(s) < {MIN_NONZERO}: not tested"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = stats.wilcoxon(a, b, zero_method=ZERO_METHOD, alternative="two-sided")
    note = "; ".join(dict.fromkeys(str(w.message) for w in caught))
    return float(result.statistic), float(result.pvalue), note


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values; NaN entries stay NaN and do not count as tests."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, math.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = order.size, 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _test_group(subset: str, region: str, pairs: list[tuple[float, float]]) -> PairedResult:
    kept = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
    a = [p[0] for p in kept]
    b = [p[1] for p in kept]
    statistic, p_value, note = wilcoxon_test(a, b)
    n_nonzero = sum(1 for x, y in kept if y - x != 0)
    return PairedResult(
        subset, region, len(kept), n_nonzero, len(pairs) - len(kept), _mean(a), _mean(b),
        _mean([y - x for x, y in kept]), statistic, p_value, note=note,
    )


def compare_reports(
    report_a_dir: str | Path, report_b_dir: str | Path, metric: str = "dice"
) -> Comparison:
    """Paired Wilcoxon tests of report B against report A per (subset, region), Holm-corrected.

    Each argument is a report folder holding metrics.csv (or the CSV itself). Groups keep the
    first report's (subset, region) order. Raises InputError naming the file for a missing file
    or metric column, and naming the second report when the two share no (case, subset, region).
    """
    path_a, values_a = _load(report_a_dir, metric)
    path_b, values_b = _load(report_b_dir, metric)
    common = [key for key in values_a if key in values_b]
    if not common:
        raise InputError(path_b, f"no (case, subset, region) in common with {path_a}")
    groups: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for key in common:
        groups.setdefault((key[1], key[2]), []).append((values_a[key], values_b[key]))
    results = [_test_group(s, r, pairs) for (s, r), pairs in groups.items()]
    adjusted = holm([r.p_value for r in results])
    results = [_with_holm(r, p) for r, p in zip(results, adjusted, strict=True)]
    return Comparison(
        metric, path_a, path_b, results, len(common),
        unpaired_a=len(values_a) - len(common), unpaired_b=len(values_b) - len(common),
        conventions={"test": "two-sided paired Wilcoxon signed-rank (scipy.stats.wilcoxon)",
                     "difference": "B - A", "zero_method": ZERO_METHOD,
                     "min_nonzero_differences": MIN_NONZERO, "correction": "Holm"},
    )


def _with_holm(result: PairedResult, p_holm: float) -> PairedResult:
    return PairedResult(**{**asdict(result), "p_holm": p_holm})


def _num(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


def print_comparison(comparison: Comparison, console: Console) -> None:
    """One table row per (subset, region), then the pairing counts and the conventions."""
    table = Table(title=escape(f"{comparison.metric}: B ({comparison.report_b}) vs A "
                               f"({comparison.report_a})"))
    for name in ("subset", "region", "n", "mean A", "mean B", "B - A", "W", "p", "p Holm"):
        table.add_column(name, justify="left" if name in ("subset", "region") else "right")
    table.add_column("note")
    for r in comparison.results:
        table.add_row(escape(r.subset), escape(r.region), str(r.n), _num(r.mean_a), _num(r.mean_b),
                      _num(r.mean_diff), _num(r.statistic, 1), _p(r.p_value), _p(r.p_holm),
                      escape(r.note))
    console.print(table)
    console.print(
        f"{comparison.n_paired} paired rows; left out: {comparison.unpaired_a} only in A, "
        f"{comparison.unpaired_b} only in B. Two-sided paired Wilcoxon signed-rank test "
        f"(zero_method={ZERO_METHOD}, fewer than {MIN_NONZERO} non-zero differences -> not "
        "tested), Holm correction across the tests.",
        highlight=False,
    )
