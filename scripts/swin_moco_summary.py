"""Summarise scripts/swin_moco_phantom.sh: the MoCo loss of the first and last pre-training
epochs, then for the pre-trained and the from-scratch Swin-Unets (run folders VARIANT-seedS)
the held-out scores with every modality (Dice per region, mIoU and MPA over all classes, MedPy's
HD95 of the first region, in the report's units: what the authors' downstream/test.py reports
as HD) and the mean Dice over every subset, per region. The regions are the reports' own: WT,
TC, ET on the brain phantom (15 subsets), TUMOUR on the parotid phantom (7 subsets).

Cases, not (case, seed) pairs, are the paired units (as in scripts/phantom_comparison.py and
`contraseg compare A1 A2 --vs B1 B2`): each case's value is averaged over its variant's seeds,
then the two-sided paired Wilcoxon test of contraseg.evaluation.stats runs over the cases (none
below 6 non-zero differences). The seeds of a variant must score the same cases.

Usage: python scripts/swin_moco_summary.py OUT
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from contraseg.evaluation.stats import wilcoxon_test


def regions_of(report: Path) -> tuple[str, ...]:
    """The regions a report scores, in its order (WT, TC, ET; or TUMOUR)."""
    with open(report / "metrics.csv") as handle:
        return tuple(dict.fromkeys(r["region"] for r in csv.DictReader(handle)))


def measures(regions: tuple[str, ...]) -> tuple[str, ...]:
    return (*(f"dice_{r}" for r in regions), "miou", "mpa", f"hd95_{regions[0]}",
            *(f"sub_{r}" for r in regions))


def units_of(report: Path) -> str:
    """The distance units of a report (voxel when its summary.json does not say)."""
    summary = report / "summary.json"
    if not summary.is_file():
        return "voxel"
    return str(json.loads(summary.read_text()).get("conventions", {}).get("units", "voxel"))


def read(report: Path) -> dict[str, dict[str, float]]:
    """case -> measure -> value; measures: dice_R, miou, mpa, hd95_R of the first region (the
    subset with every modality) and sub_R (Dice averaged over the subsets)."""
    with open(report / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    first = rows[0]["region"]
    widest = max(len(r["subset"].split("+")) for r in rows)
    out: dict = defaultdict(dict)
    subsets: dict = defaultdict(list)
    for r in rows:
        subsets[(r["case"], r["region"])].append(float(r["dice"]))
        if len(r["subset"].split("+")) == widest:
            out[r["case"]][f"dice_{r['region']}"] = float(r["dice"])
            out[r["case"]]["miou"] = float(r["case_miou"])
            out[r["case"]]["mpa"] = float(r["case_mpa"])
            if r["region"] == first:
                out[r["case"]][f"hd95_{first}"] = float(r["hd95"])
    for (case, region), values in subsets.items():
        out[case][f"sub_{region}"] = statistics.mean(values)
    return dict(out)


def seed_averaged(reports: list[Path]) -> dict[str, dict[str, float]]:
    """case -> measure -> the mean over the seeds' reports (NaN seeds skipped)."""
    per_seed = [read(report) for report in reports]
    cases = set(per_seed[0])
    for report, scored in zip(reports, per_seed, strict=True):
        if set(scored) != cases:
            sys.exit(f"error: {report}: scores other cases than {reports[0]}; every seed of a "
                     "variant must score the same cases")
    averaged = {}
    for case in sorted(cases):
        averaged[case] = {}
        for m in measures(regions_of(reports[0])):
            kept = [s[case][m] for s in per_seed if not math.isnan(s[case][m])]
            averaged[case][m] = statistics.mean(kept) if kept else math.nan
    return averaged


def reports_of(out: Path, variant: str) -> list[Path]:
    """The evaluated runs' report folders of one variant, by seed."""
    return [run / "report" for run in sorted(out.glob(f"{variant}-seed*"))
            if (run / "report" / "metrics.csv").is_file()]


def main(out: Path) -> None:
    log = [json.loads(line) for line in (out / "moco" / "log.jsonl").read_text().splitlines()]
    print(f"MoCo loss: epoch {log[0]['epoch']} {log[0]['loss']['moco']:.3f} -> epoch "
          f"{log[-1]['epoch']} {log[-1]['loss']['moco']:.3f}")
    reports = {v: reports_of(out, v) for v in ("pretrained", "scratch")}
    if not all(reports.values()):
        sys.exit(f"error: {out}: needs evaluated pretrained-seed* and scratch-seed* runs")
    values = {v: seed_averaged(r) for v, r in reports.items()}
    cases = sorted(set(values["pretrained"]) & set(values["scratch"]))
    print(f"{len(cases)} cases, seeds: pre-trained {len(reports['pretrained'])}, scratch "
          f"{len(reports['scratch'])}; each case averaged over its seeds")
    first_report = reports["pretrained"][0]
    print(f"HD95 in {units_of(first_report)}")
    print("| measure | pre-trained | scratch | difference | Wilcoxon p (cases) |")
    print("|---|---|---|---|---|")
    for m in measures(regions_of(first_report)):
        pairs = [(values["pretrained"][c][m], values["scratch"][c][m]) for c in cases]
        pairs = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        _, p_value, note = wilcoxon_test(b, a)
        scale = 1.0 if m.startswith("hd") else 100.0
        shown = f"{p_value:.3g}" if not math.isnan(p_value) else f"- ({note})"
        print(f"| {m} | {scale * statistics.mean(a):.1f} | {scale * statistics.mean(b):.1f} | "
              f"{scale * (statistics.mean(a) - statistics.mean(b)):+.1f} | {shown} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
