"""The comparison of two methods as a table on the terminal (`contraseg compare`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from contraseg.evaluation.stats import MIN_NONZERO, ZERO_METHOD, Comparison


def _num(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


def _pm(mean: float, sd: float) -> str:
    return f"{_num(mean)} ± {_num(sd)}"


def _side(name: str, paths: Sequence[Path]) -> str:
    return f"{name} ({paths[0]})" if len(paths) == 1 else f"{name} ({len(paths)} seeds)"


def print_comparison(comparison: Comparison, console: Console) -> None:
    """One table row per (subset, region), then the "average" rows, the pairing counts and the
    conventions. With several seeds on either side, each side gets its per-seed means and SD."""
    seeded = max(len(comparison.reports_a), len(comparison.reports_b)) > 1
    table = Table(title=escape(f"{comparison.metric}: {_side('B', comparison.reports_b)} vs "
                               f"{_side('A', comparison.reports_a)}"))
    columns = ["subset", "region", "n"]
    columns += (["A seeds", "A mean ± SD", "B seeds", "B mean ± SD"] if seeded
                else ["mean A", "mean B"])
    for name in [*columns, "B - A", "W", "p", "p Holm"]:
        table.add_column(name, justify="left" if name in ("subset", "region") else "right")
    table.add_column("note")
    rows = [*comparison.results, *comparison.average]
    for index, r in enumerate(rows):
        if seeded:
            means = [" ".join(_num(v) for v in r.seed_means_a), _pm(r.mean_a, r.sd_a),
                     " ".join(_num(v) for v in r.seed_means_b), _pm(r.mean_b, r.sd_b)]
        else:
            means = [_num(r.mean_a), _num(r.mean_b)]
        table.add_row(escape(r.subset), escape(r.region), str(r.n), *means, _num(r.mean_diff),
                      _num(r.statistic, 1), _p(r.p_value), _p(r.p_holm), escape(r.note),
                      end_section=index == len(comparison.results) - 1)
    console.print(table)
    if seeded:
        for name, paths in (("A", comparison.reports_a), ("B", comparison.reports_b)):
            console.print(escape(f"{name}: {', '.join(str(p) for p in paths)}"),
                          highlight=False)
    console.print(
        f"{comparison.n_paired} paired rows; left out: {comparison.unpaired_a} only in A, "
        f"{comparison.unpaired_b} only in B. Two-sided paired Wilcoxon signed-rank test "
        f"(zero_method={ZERO_METHOD}, fewer than {MIN_NONZERO} non-zero differences -> not "
        "tested). 'average': each case's mean over the subsets both methods scored (finite), "
        "then the same test. Holm correction within two families: the per-subset rows, and "
        "the average rows." + (
            " Seeds: mean and SD (ddof=1) over seeds of each seed's mean over the cases; the "
            "test ranks each case's value averaged over its method's seeds." if seeded else ""),
        highlight=False,
    )
