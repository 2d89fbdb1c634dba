"""Summarise scripts/swin_moco_phantom.sh: the MoCo loss of the first and last pre-training
epochs, then for the pre-trained and the from-scratch Swin-Unets (run folders VARIANT-seedS)
the held-out scores with every modality (Dice per region, mIoU and MPA over all classes, HD
of the whole tumour in voxels) and the 15-subset mean Dice, averaged over cases and seeds, with
paired Wilcoxon tests over the (case, seed) pairs.

Usage: python scripts/swin_moco_summary.py OUT
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from scipy.stats import wilcoxon

REGIONS = ("WT", "TC", "ET")


def read(report: Path) -> dict[tuple[str, str], dict[str, float]]:
    """(case, measure) -> value; measures: dice_R, hd95_WT (MedPy hd95 in voxels, what the
    authors' downstream/test.py reports as HD), miou, mpa (all modalities), sub_R
    (Dice averaged over the subsets)."""
    with open(report / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    widest = max(len(r["subset"].split("+")) for r in rows)
    out: dict = defaultdict(dict)
    subsets: dict = defaultdict(list)
    for r in rows:
        subsets[(r["case"], r["region"])].append(float(r["dice"]))
        if len(r["subset"].split("+")) == widest:
            out[r["case"]][f"dice_{r['region']}"] = float(r["dice"])
            out[r["case"]]["miou"] = float(r["case_miou"])
            out[r["case"]]["mpa"] = float(r["case_mpa"])
            if r["region"] == "WT":
                out[r["case"]]["hd95_WT"] = float(r["hd95"])
    for (case, region), values in subsets.items():
        out[case][f"sub_{region}"] = statistics.mean(values)
    return out


def main(out: Path) -> None:
    log = [json.loads(line) for line in (out / "moco" / "log.jsonl").read_text().splitlines()]
    print(f"MoCo loss: epoch {log[0]['epoch']} {log[0]['loss']['moco']:.3f} -> epoch "
          f"{log[-1]['epoch']} {log[-1]['loss']['moco']:.3f}")
    pairs: dict[str, dict[tuple[str, str], dict]] = {}
    for variant in ("pretrained", "scratch"):
        pairs[variant] = {}
        for run in sorted(out.glob(f"{variant}-seed*")):
            if not (run / "report" / "metrics.csv").is_file():
                continue  # not evaluated (yet)
            for case, values in read(run / "report").items():
                pairs[variant][(run.name.split("-seed")[1], case)] = values
    measures = [*(f"dice_{r}" for r in REGIONS), "miou", "mpa", "hd95_WT",
                *(f"sub_{r}" for r in REGIONS)]
    keys = sorted(set(pairs["pretrained"]) & set(pairs["scratch"]))
    print(f"{len(keys)} (seed, case) pairs")
    print("| measure | pre-trained | scratch | difference | Wilcoxon p |")
    print("|---|---|---|---|---|")
    for m in measures:
        a = [pairs["pretrained"][k][m] for k in keys]
        b = [pairs["scratch"][k][m] for k in keys]
        scale = 1.0 if m.startswith("hd") else 100.0
        diff = [x - y for x, y in zip(a, b, strict=True)]
        p = wilcoxon(a, b).pvalue if any(diff) else float("nan")
        print(f"| {m} | {scale * statistics.mean(a):.1f} | {scale * statistics.mean(b):.1f} | "
              f"{scale * statistics.mean(diff):+.1f} | {p:.3g} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
