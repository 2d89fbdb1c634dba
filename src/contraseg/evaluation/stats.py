"""Paired comparison of evaluation reports (the `contraseg compare` command).

Method A and method B each bring one report (metrics.csv) or several, one per training seed.
Rows are paired by (case, subset, region) and two kinds of test run, each a two-sided Wilcoxon
signed-rank test on per-case values:

* one per (subset, region), on the paired per-case values (the `results`);
* one per region on each case's mean over the subsets, the rows with subset ``"average"`` (the
  `average`; evaluation.summary's tables call the mean over subsets "average", the papers'
  headline row). A case's mean runs over the subsets where both methods have a finite value for
  that case and region, so both sides average the same subsets; a subset one report lacks, or
  where either side is NaN, is left out of that case's mean, and a case left with no subset
  counts as a NaN pair. The note says over how many subsets the case means ran.

Conventions of the test:

* Differences are B - A (the second method minus the first); `mean_diff` is their mean.
* Pairs where either value is NaN are dropped (counted in `n_nan`).
* Zero differences follow scipy's default ``zero_method="wilcox"``: they are discarded before
  ranking, and tied absolute differences get average ranks. scipy's ``method="auto"`` picks the
  exact null distribution for small samples without ties/zeros and the normal approximation
  otherwise.
* No test is run (p = NaN, with a note) when every difference is zero, or when fewer than
  :data:`MIN_NONZERO` non-zero differences remain: with 5 the smallest two-sided exact p is
  0.0625, so no result could reach 0.05.
* Holm's step-down correction runs within two families, separately: the per-subset tests
  (every (subset, region) with a finite p) and the average rows (one test per region). The
  average rows are the papers' primary claim, so they are not diluted by the many per-subset
  tests; the per-subset family is the secondary, per-scenario one.

Several seeds per method: every report of one method must hold the same (case, subset, region)
rows, or InputError names the first report that lacks cases (or rows) another one has. Then:

* the test ranks each case's value averaged over the method's seeds (NaN seeds skipped; NaN only
  when every seed is NaN), so cases, not (case, seed) pairs, are the paired units;
* `seed_means_a` holds, per seed, the mean over the tested cases (NaN values skipped); `mean_a`
  and `sd_a` are their mean and sample SD (ddof=1, NaN for a single seed). The same for B; the
  two methods may have different numbers of seeds.

With one report per method this is the plain paired test of two reports. Rows present in only
one method's reports are counted (`unpaired_a`, `unpaired_b`) and left out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from contraseg.errors import InputError
from contraseg.evaluation.metrics_csv import KEY_COLUMNS, read_metrics_csv
from contraseg.utils.jsonio import json_safe

MIN_NONZERO = 6
ZERO_METHOD = "wilcox"
METRICS_FILE = "metrics.csv"
AVERAGE = "average"

Key = tuple[str, ...]  # (case, subset, region)


@dataclass(frozen=True)
class PairedResult:
    """The paired test of one (subset, region), or of one region's "average" row.

    `mean_a` and `mean_b` are means over seeds of the per-seed means `seed_means_a/_b` (with one
    seed: the mean over the tested cases); `sd_a`, `sd_b` their sample SD over seeds.
    """

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
    seed_means_a: tuple[float, ...] = ()
    sd_a: float = math.nan
    seed_means_b: tuple[float, ...] = ()
    sd_b: float = math.nan


@dataclass(frozen=True)
class Comparison:
    """Every test of method B against method A for one metric: the per-(subset, region) tests
    (`results`, one Holm family) and the per-region "average" rows (`average`, another)."""

    metric: str
    reports_a: tuple[Path, ...]
    reports_b: tuple[Path, ...]
    results: list[PairedResult]
    n_paired: int
    unpaired_a: int
    unpaired_b: int
    average: list[PairedResult] = field(default_factory=list)
    conventions: dict = field(default_factory=dict)

    @property
    def report_a(self) -> Path:
        """Method A's first report."""
        return self.reports_a[0]

    @property
    def report_b(self) -> Path:
        """Method B's first report."""
        return self.reports_b[0]

    def to_dict(self) -> dict:
        """JSON-ready form (NaN becomes null); `report_a`/`report_b` are each side's first."""
        return json_safe({
            "metric": self.metric,
            "report_a": str(self.report_a),
            "report_b": str(self.report_b),
            "reports_a": [str(p) for p in self.reports_a],
            "reports_b": [str(p) for p in self.reports_b],
            "seeds_a": len(self.reports_a),
            "seeds_b": len(self.reports_b),
            "n_paired": self.n_paired,
            "unpaired_a": self.unpaired_a,
            "unpaired_b": self.unpaired_b,
            "conventions": self.conventions,
            "results": [asdict(r) for r in self.results],
            "average": [asdict(r) for r in self.average],
        })


@dataclass(frozen=True)
class Seeds:
    """One method's reports, one per training seed, holding the same (case, subset, region) rows
    (the first report's order)."""

    paths: tuple[Path, ...]
    values: tuple[dict[Key, float], ...]

    def averaged(self) -> dict[Key, float]:
        """Each row's value averaged over the seeds (NaN seeds skipped; NaN when all are)."""
        return {key: _nanmean([v[key] for v in self.values]) for key in self.values[0]}


@dataclass(frozen=True)
class SeedStats:
    """A method's score over seeds: one mean over cases per seed, their mean and sample SD."""

    per_seed: tuple[float, ...]
    mean: float
    sd: float


def metrics_path(report: str | Path) -> Path:
    """A report folder's metrics.csv (a path to a CSV file is taken as it is)."""
    report = Path(report)
    return report / METRICS_FILE if report.is_dir() else report


def _load(report: str | Path, metric: str) -> tuple[Path, dict[Key, float]]:
    path = metrics_path(report)
    rows = read_metrics_csv(path)
    if rows and metric not in rows[0]:
        columns = ", ".join(k for k in rows[0] if k not in KEY_COLUMNS)
        raise InputError(path, f"no '{metric}' column (columns: {columns})")
    return path, {tuple(str(r[k]) for k in KEY_COLUMNS): float(r[metric]) for r in rows}


def _few(items: Sequence, limit: int = 3) -> str:
    shown = ", ".join(i if isinstance(i, str) else "/".join(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def load_seeds(reports: Sequence[str | Path], metric: str = "dice") -> Seeds:
    """One method's reports (folders or metrics.csv files), one per seed.

    Raises InputError naming the report for a missing file or metric column, and naming the
    first report that lacks cases another report of the method has (or, with the same cases,
    (case, subset, region) rows another has): no seed average is taken over unequal cases.
    """
    if not reports:
        raise ValueError("load_seeds needs at least one report")
    loaded = [_load(report, metric) for report in reports]
    for what, key in (("case(s)", lambda k: k[0]), ("(case, subset, region) row(s)", tuple)):
        items = [set(map(key, values)) for _, values in loaded]
        union = list(dict.fromkeys(key(k) for _, values in loaded for k in values))
        for (path, _), have in zip(loaded, items, strict=True):
            lacks = [item for item in union if item not in have]
            if lacks:
                other = next(p for (p, _), its in zip(loaded, items, strict=True)
                             if lacks[0] in its)
                raise InputError(path, f"lacks {what} {_few(lacks)} that {other} has; every "
                                       "seed of a method must score the same cases")
    return Seeds(tuple(path for path, _ in loaded), tuple(values for _, values in loaded))


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


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def seed_stats(per_seed: Sequence[float]) -> SeedStats:
    """Mean and sample SD (ddof=1; NaN below two values) of per-seed means, NaN seeds skipped."""
    values = tuple(float(v) for v in per_seed)
    kept = [v for v in values if not math.isnan(v)]
    sd = float(np.std(kept, ddof=1)) if len(kept) > 1 else math.nan
    return SeedStats(values, _nanmean(kept), sd)


def _case_stats(seeds: Seeds, cases: Sequence[Sequence[Key]]) -> SeedStats:
    """Per seed, each case's mean over its rows then the mean over cases (NaN skipped)."""
    return seed_stats([
        _nanmean([_nanmean([values[key] for key in rows]) for rows in cases])
        for values in seeds.values
    ])


def _groups(keys: Sequence[Key]) -> tuple[dict, dict]:
    """Rows by (subset, region), one row per case; and by region, the rows of each case."""
    cells: dict[tuple[str, str], list[list[Key]]] = {}
    average: dict[str, dict[str, list[Key]]] = {}
    for key in keys:
        case, subset, region = key
        cells.setdefault((subset, region), []).append([key])
        average.setdefault(region, {}).setdefault(case, []).append(key)
    return cells, {region: list(by_case.values()) for region, by_case in average.items()}


def describe_seeds(seeds: Seeds) -> dict[tuple[str, str], SeedStats]:
    """One method's mean ± SD over seeds per (subset, region), then per ("average", region)
    (each case's mean over its subsets, then over cases); NaN values are skipped."""
    cells, average = _groups(list(seeds.values[0]))
    described = {cell: _case_stats(seeds, cases) for cell, cases in cells.items()}
    described.update({(AVERAGE, r): _case_stats(seeds, cases) for r, cases in average.items()})
    return described


def _subset_note(counts: Sequence[int]) -> str:
    if not counts:
        return ""
    low, high = min(counts), max(counts)
    if low == high:
        return f"mean over {low} subset{'s' if low > 1 else ''}"
    return f"mean over {low}-{high} subsets per case"


def _test(subset: str, region: str, cases: Sequence[Sequence[Key]], side_a: Seeds,
          side_b: Seeds, avg_a: dict[Key, float], avg_b: dict[Key, float]) -> PairedResult:
    """Test one group: each case's rows are averaged (over seeds, then over its rows where both
    methods are finite); a case with no such row is a NaN pair."""
    usable = [[k for k in rows if not (math.isnan(avg_a[k]) or math.isnan(avg_b[k]))]
              for rows in cases]
    kept = [rows for rows in usable if rows]
    a = [float(np.mean([avg_a[k] for k in rows])) for rows in kept]
    b = [float(np.mean([avg_b[k] for k in rows])) for rows in kept]
    statistic, p_value, note = wilcoxon_test(a, b)
    if subset == AVERAGE:
        note = "; ".join(n for n in (_subset_note([len(r) for r in kept]), note) if n)
    stats_a, stats_b = _case_stats(side_a, kept), _case_stats(side_b, kept)
    return PairedResult(
        subset, region, len(kept), sum(1 for x, y in zip(a, b, strict=True) if y - x != 0),
        len(cases) - len(kept), stats_a.mean, stats_b.mean,
        _nanmean([y - x for x, y in zip(a, b, strict=True)]), statistic, p_value, note=note,
        seed_means_a=stats_a.per_seed, sd_a=stats_a.sd,
        seed_means_b=stats_b.per_seed, sd_b=stats_b.sd,
    )


def compare_seeds(
    reports_a: Sequence[str | Path], reports_b: Sequence[str | Path], metric: str = "dice"
) -> Comparison:
    """Method B (one report per seed) against method A: paired Wilcoxon tests per (subset,
    region) and per region on each case's mean over the subsets (the "average" rows), on
    seed-averaged per-case values; Holm within each of the two families.

    Groups keep method A's first report's order. Raises InputError naming the file for a
    missing file or metric column, a report that lacks cases (or rows) another report of its
    method has, and method B's first report when the methods share no (case, subset, region).
    """
    side_a, side_b = load_seeds(reports_a, metric), load_seeds(reports_b, metric)
    avg_a, avg_b = side_a.averaged(), side_b.averaged()
    common = [key for key in avg_a if key in avg_b]
    if not common:
        raise InputError(side_b.paths[0],
                         f"no (case, subset, region) in common with {side_a.paths[0]}")
    cells, average = _groups(common)
    results = _with_holm([_test(s, r, cases, side_a, side_b, avg_a, avg_b)
                          for (s, r), cases in cells.items()])
    averages = _with_holm([_test(AVERAGE, r, cases, side_a, side_b, avg_a, avg_b)
                           for r, cases in average.items()])
    return Comparison(
        metric, side_a.paths, side_b.paths, results, len(common),
        unpaired_a=len(avg_a) - len(common), unpaired_b=len(avg_b) - len(common),
        average=averages,
        conventions={
            "test": "two-sided paired Wilcoxon signed-rank (scipy.stats.wilcoxon)",
            "difference": "B - A", "zero_method": ZERO_METHOD,
            "min_nonzero_differences": MIN_NONZERO,
            "correction": "Holm, separately within two families: the per-subset tests "
                          "(results) and the average rows, one per region (average)",
            "average": "per region, each case's mean over the subsets where both methods are "
                       "finite, then the same test",
            "seeds": "the test ranks each case's value averaged over its method's seeds (NaN "
                     "seeds skipped); seed_means are per-seed means over the tested cases, "
                     "mean and sd (ddof=1) are over seeds",
        },
    )


def compare_reports(
    report_a_dir: str | Path, report_b_dir: str | Path, metric: str = "dice"
) -> Comparison:
    """Paired Wilcoxon tests of report B against report A per (subset, region) and on each
    case's mean over the subsets ("average" rows), Holm-corrected within each family.

    Each argument is a report folder holding metrics.csv (or the CSV itself); this is
    :func:`compare_seeds` with one seed per method.
    """
    return compare_seeds([report_a_dir], [report_b_dir], metric=metric)


def _with_holm(results: list[PairedResult]) -> list[PairedResult]:
    adjusted = holm([r.p_value for r in results])
    return [PairedResult(**{**asdict(r), "p_holm": p}) for r, p in zip(results, adjusted,
                                                                         strict=True)]


