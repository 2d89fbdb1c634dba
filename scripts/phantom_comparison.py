"""Summarise scripts/phantom_comparison.sh: per method, the Dice averaged over the 15 subsets
and the cases (per seed, then mean and SD over seeds), and paired Wilcoxon signed-rank tests of
the per-(case, seed) subset-mean Dice between dc-seg and each other method.

Usage: python scripts/phantom_comparison.py OUT [REPORT]   (REPORT: report (default) or report12)
"""

from __future__ import annotations

import csv
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from scipy.stats import wilcoxon

REGIONS = ("WT", "TC", "ET")


def subset_means(metrics_csv: Path) -> dict[tuple[str, str], float]:
    """(case, region) -> Dice averaged over the subsets."""
    values = defaultdict(list)
    with open(metrics_csv) as f:
        for row in csv.DictReader(f):
            values[(row["case"], row["region"])].append(float(row["dice"]))
    return {key: sum(v) / len(v) for key, v in values.items()}


def main(out: Path, report: str) -> None:
    runs: dict[str, dict[int, dict]] = defaultdict(dict)
    for folder in sorted(out.iterdir()):
        match = re.fullmatch(r"(.+)-seed(\d+)", folder.name)
        if match and (folder / report / "metrics.csv").is_file():
            runs[match[1]][int(match[2])] = subset_means(folder / report / "metrics.csv")
    for method, seeds in runs.items():
        cells = []
        for region in REGIONS:
            per_seed = [100 * statistics.mean(v for (_, r), v in s.items() if r == region)
                        for s in seeds.values()]
            spread = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
            cells.append(f"{region} {statistics.mean(per_seed):.1f} +- {spread:.1f}")
        print(f"{method:<24} seeds {sorted(seeds)}: " + "  ".join(cells))
    for other in (m for m in runs if m != "dc-seg" and "dc-seg" in runs):
        shared = sorted(set(runs["dc-seg"]) & set(runs[other]))
        for region in REGIONS:
            a, b = [], []
            for seed in shared:
                for (case, r), v in runs[other][seed].items():
                    if r == region:
                        a.append(v)
                        b.append(runs["dc-seg"][seed][(case, r)])
            diff = statistics.mean(y - x for x, y in zip(a, b, strict=True))
            p = wilcoxon(a, b).pvalue if any(x != y for x, y in zip(a, b, strict=True)) else 1.0
            print(f"dc-seg - {other:<24} {region}: {100 * diff:+.2f} points, {len(a)} pairs, "
                  f"Wilcoxon p = {p:.3g}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "report")
