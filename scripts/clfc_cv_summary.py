"""Summarise scripts/clfc_cv.sh: per variant (report-NAME/metrics.csv), the paper's Table 1
figures with every modality (patient-wise Dice, sensitivity, HD95: mean and SD over the cases)
and the Dice averaged over the 15 modality subsets, then paired Wilcoxon signed-rank tests of
the per-case Dice of the full model against each baseline (full modalities, and subset means).

Usage: python scripts/clfc_cv_summary.py OUT [NAMES...]   (default: the variants of the run,
full baseline1 baseline2 then gate if present; the first is the reference)
"""

from __future__ import annotations

import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from contraseg.evaluation.stats import wilcoxon_test

REGIONS = ("WT", "TC", "ET")


def read(report: Path) -> tuple[dict, dict]:
    """(case, region) -> {metric: value} with every modality; (case, region) -> subset-mean
    Dice."""
    with open(report / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    widest = max(len(r["subset"].split("+")) for r in rows)
    full, subsets = {}, defaultdict(list)
    for r in rows:
        key = (r["case"], r["region"])
        subsets[key].append(float(r["dice"]))
        if len(r["subset"].split("+")) == widest:
            full[key] = {m: float(r[m]) for m in ("dice", "sensitivity", "hd95")}
    return full, {k: statistics.mean(v) for k, v in subsets.items()}


def regions_of(full: dict) -> list[str]:
    """The regions a report scores: WT only under data.whole_tumour=true."""
    return [region for region in REGIONS if any(key[1] == region for key in full)]


def cell(values: list[float], scale: float = 100.0) -> str:
    return f"{scale * statistics.mean(values):.1f} ± {scale * statistics.stdev(values):.1f}"


def main(out: Path, names: list[str]) -> None:
    data = {name: read(out / f"report-{name}") for name in names}
    print("| variant | region | Dice (%) | sensitivity (%) | HD95 (vox) | 15-subset Dice (%) |")
    print("|---|---|---|---|---|---|")
    for name, (full, subsets) in data.items():
        for region in regions_of(full):
            keys = sorted(k for k in full if k[1] == region)
            print(f"| {name} | {region} | {cell([full[k]['dice'] for k in keys])} | "
                  f"{cell([full[k]['sensitivity'] for k in keys])} | "
                  f"{cell([full[k]['hd95'] for k in keys], 1.0)} | "
                  f"{cell([subsets[k] for k in keys])} |")
    reference = names[0]
    ref_full, ref_sub = data[reference]
    print(f"\nPaired Wilcoxon, {reference} minus each other variant (per-case Dice, n cases):")
    for name in names[1:]:
        full, subsets = data[name]
        for region in regions_of(ref_full):
            keys = sorted(k for k in full if k[1] == region and k in ref_full)
            parts = []
            for label, a, b in (("full", [ref_full[k]["dice"] for k in keys],
                                 [full[k]["dice"] for k in keys]),
                                ("subsets", [ref_sub[k] for k in keys],
                                 [subsets[k] for k in keys])):
                diff = [x - y for x, y in zip(a, b, strict=True)]
                p = wilcoxon_test(b, a)[1]  # the project's test: NaN under 6 non-zero diffs
                parts.append(f"{label} {100 * statistics.mean(diff):+.1f} (p {p:.3g})")
            print(f"- vs {name} {region} (n {len(keys)}): " + "; ".join(parts))


if __name__ == "__main__":
    args = sys.argv[1:]
    found = [n for n in ("full", "baseline1", "baseline2", "gate")
             if (Path(args[0]) / f"report-{n}" / "metrics.csv").is_file()]
    main(Path(args[0]), args[1:] or found)
