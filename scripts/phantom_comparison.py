"""Summarise scripts/phantom_comparison.sh: per method (run folders METHOD-seedS), the Dice
averaged over the cases for the full-modality subset and over the 15 subsets (per seed, then
mean and SD over seeds), and paired Wilcoxon signed-rank tests of the per-(case, seed)
subset-mean Dice between the reference method and each other method.

Usage: python scripts/phantom_comparison.py OUT [REPORT] [REFERENCE]
    REPORT: report (default) or report12; REFERENCE: dc-seg (default), dcl-manet, ...
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


def read_dice(metrics_csv: Path) -> tuple[dict, dict]:
    """(case, region) -> Dice averaged over the subsets, and the Dice with every modality."""
    values, full = defaultdict(list), {}
    with open(metrics_csv) as f:
        rows = list(csv.DictReader(f))
    widest = max(len(row["subset"].split("+")) for row in rows)
    for row in rows:
        values[(row["case"], row["region"])].append(float(row["dice"]))
        if len(row["subset"].split("+")) == widest:
            full[(row["case"], row["region"])] = float(row["dice"])
    return {key: sum(v) / len(v) for key, v in values.items()}, full


def region_cells(per_seed_tables: list[dict]) -> str:
    cells = []
    for region in REGIONS:
        per_seed = [100 * statistics.mean(v for (_, r), v in table.items() if r == region)
                    for table in per_seed_tables]
        spread = statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0
        seeds = " ".join(f"{v:.1f}" for v in per_seed)
        cells.append(f"{region} {statistics.mean(per_seed):.1f} +- {spread:.1f} ({seeds})")
    return "  ".join(cells)


def main(out: Path, report: str, reference: str) -> None:
    subsets: dict[str, dict[int, dict]] = defaultdict(dict)
    full: dict[str, dict[int, dict]] = defaultdict(dict)
    for folder in sorted(out.iterdir()):
        match = re.fullmatch(r"(.+)-seed(\d+)", folder.name)
        if match and (folder / report / "metrics.csv").is_file():
            seed = int(match[2])
            subsets[match[1]][seed], full[match[1]][seed] = read_dice(
                folder / report / "metrics.csv")
    print("Dice (%), mean +- SD over seeds (per seed in brackets)")
    for method, seeds in subsets.items():
        order = sorted(seeds)
        print(f"{method:<26} seeds {order}")
        print(f"  {'15-subset mean':<16} " + region_cells([seeds[s] for s in order]))
        print(f"  {'all modalities':<16} " + region_cells([full[method][s] for s in order]))
    if reference not in subsets:
        return
    for other in (m for m in subsets if m != reference):
        shared = sorted(set(subsets[reference]) & set(subsets[other]))
        for region in REGIONS:
            a, b = [], []
            for seed in shared:
                for (case, r), v in subsets[other][seed].items():
                    if r == region:
                        a.append(v)
                        b.append(subsets[reference][seed][(case, r)])
            diff = statistics.mean(y - x for x, y in zip(a, b, strict=True))
            p = wilcoxon(a, b).pvalue if any(x != y for x, y in zip(a, b, strict=True)) else 1.0
            print(f"{reference} - {other:<26} {region}: {100 * diff:+.2f} points, {len(a)} "
                  f"pairs, Wilcoxon p = {p:.3g}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "report",
         sys.argv[3] if len(sys.argv) > 3 else "dc-seg")
