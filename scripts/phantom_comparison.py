"""Summarise scripts/phantom_comparison.sh: per method (run folders METHOD-seedS), the Dice
averaged over the cases for the 15-subset mean ("average") and the full-modality subset, per seed
then mean and SD over seeds; then, for the reference method against each other method, the
paired Wilcoxon signed-rank test of the per-case 15-subset mean averaged over each method's seeds
(contraseg.evaluation.stats: the "average" rows of `contraseg compare A1 A2 --vs B1 B2`).

Cases, not (case, seed) pairs, are the paired units, so with the demo's 4 held-out phantoms no
test runs (fewer than 6 non-zero differences); EXTRA_TEST=1's 12 phantoms give p-values.

Usage: python scripts/phantom_comparison.py OUT [REPORT] [REFERENCE]
    REPORT: report (default) or report12; REFERENCE: dc-seg (default), dcl-manet, ...
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

from contraseg.evaluation.stats import (
    AVERAGE,
    METRICS_FILE,
    SeedStats,
    compare_seeds,
    describe_seeds,
    load_seeds,
)


def cell(region: str, stats: SeedStats) -> str:
    """`WT 80.8 +- 9.4 (86.4 70.6 85.3)`: mean +- SD over seeds (no SD for one seed)."""
    spread = "" if math.isnan(stats.sd) else f" +- {100 * stats.sd:.1f}"
    seeds = " ".join(f"{100 * v:.1f}" for v in stats.per_seed)
    return f"{region} {100 * stats.mean:.1f}{spread} ({seeds})"


def find_runs(out: Path, report: str) -> dict[str, dict[int, Path]]:
    """method -> seed -> report folder, for every OUT/METHOD-seedS/REPORT/metrics.csv."""
    runs: dict[str, dict[int, Path]] = {}
    for folder in sorted(out.iterdir()):
        match = re.fullmatch(r"(.+)-seed(\d+)", folder.name)
        if match and (folder / report / METRICS_FILE).is_file():
            runs.setdefault(match[1], {})[int(match[2])] = folder / report
    return {method: dict(sorted(seeds.items())) for method, seeds in runs.items()}


def main(out: Path, report: str, reference: str) -> None:
    runs = find_runs(out, report)
    print("Dice (%), mean +- SD over seeds of the mean over cases (per seed in brackets)")
    for method, seeds in runs.items():
        described = describe_seeds(load_seeds(list(seeds.values())))
        full = max((s for s, _ in described if s != AVERAGE), key=lambda s: len(s.split("+")))
        print(f"{method:<26} seeds {list(seeds)}")
        for label, subset in (("15-subset mean", AVERAGE), ("all modalities", full)):
            cells = [cell(r, stats) for (s, r), stats in described.items() if s == subset]
            print(f"  {label:<16} " + "  ".join(cells))
    if reference not in runs:
        return
    print(f"\n{reference} - other: paired Wilcoxon on each case's 15-subset mean averaged over "
          "each method's seeds (Holm over the regions)")
    for other in (m for m in runs if m != reference):
        comparison = compare_seeds(list(runs[other].values()), list(runs[reference].values()))
        for r in comparison.average:
            p = "p = -" if math.isnan(r.p_value) else (
                f"p = {r.p_value:.3g} (Holm {r.p_holm:.3g})")
            print(f"{reference} - {other:<26} {r.region}: {100 * r.mean_diff:+.2f} points, "
                  f"{r.n} cases, {p}" + (f"  [{r.note}]" if r.note else ""))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "report",
         sys.argv[3] if len(sys.argv) > 3 else "dc-seg")
