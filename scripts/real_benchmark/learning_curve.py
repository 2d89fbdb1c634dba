"""A method's minimum useful budget: its learning curve on the 5 test cases of the fixed split,
from the weights a real-benchmark run kept every few minutes (`keep_every_minutes`), against
the plain MONAI recipe's 25-minute score on the same cases.

Every kept snapshot (RUN/checkpoints/minute-M.pt) and the last weights are scored with all four
modalities (`contraseg evaluate --which minute-M --subsets full`, fixed protocol, raw Dice);
a point's score is the mean of its WT, TC and ET Dice over the cases. The first point whose
score reaches the reference's is the minimum useful budget: its training minutes and steps.
A point's minutes count every stage a user trains to get there: a method with a first stage
beside its run (CLFC's `introvae`, Swin-MoCo's `pretrain`) adds that stage's training time.
A point is scored once (its report is kept beside the run), so the script resumes.

Usage: python scripts/real_benchmark/learning_curve.py RUN DATA REFERENCE [--json FILE]
  RUN: a training run with minute-M snapshots; DATA: the labelled test cases (the benchmark's
  data/test); REFERENCE: a report folder (metrics.csv) of the plain recipe on those cases
  e.g. python scripts/real_benchmark/learning_curve.py bench/dc-seg/run bench/data/test \\
           bench/plain-25/report --json bench/dc-seg/curve.json
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import subprocess
from pathlib import Path

FULL = "t1+t1c+t2+flair"
REGIONS = ("WT", "TC", "ET")
FIRST_STAGES = ("introvae", "pretrain")  # folders beside RUN (scripts/real_benchmark.sh)


def region_means(report: Path) -> dict[str, float]:
    """Mean raw Dice per region over the cases, all four modalities."""
    with (report / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["subset"] == FULL]
    if not rows:
        raise SystemExit(f"{report / 'metrics.csv'}: no row with all four modalities")
    return {region: statistics.fmean(float(r["dice"]) for r in rows if r["region"] == region)
            for region in REGIONS}


def score(means: dict[str, float]) -> float:
    return statistics.fmean(means[r] for r in REGIONS)


def snapshots(run: Path) -> list[str]:
    """minute-M checkpoints in training order, then "last"."""
    kept = sorted(run.glob("checkpoints/minute-*.pt"),
                  key=lambda p: int(re.fullmatch(r"minute-(\d+)", p.stem)[1]))
    return [p.stem for p in kept] + ["last"]


def first_stage_minutes(run: Path) -> float:
    """Training minutes of the stages trained before RUN (beside it), 0 when there are none."""
    infos = [run.parent / name / "run.json" for name in FIRST_STAGES]
    return sum(float(json.loads(info.read_text())["train_seconds"])
               for info in infos if info.is_file()) / 60


def point(run: Path, data: Path, which: str, before: float = 0.0) -> dict:
    """Score one snapshot (evaluated once, then read back); its minutes add `before`, the
    minutes of the stages trained first."""
    from contraseg.engine.checkpoint import find_checkpoint, load_checkpoint

    report = run.parent / "curve" / which
    if not (report / "metrics.csv").is_file():
        subprocess.run(["contraseg", "evaluate", "--run", str(run), "--data", str(data),
                        "--out", str(report), "--which", which, "--subsets", "full",
                        "--overlays", "0"], check=True, stdout=subprocess.DEVNULL)
    meta = load_checkpoint(find_checkpoint(run, which))
    info = json.loads((run / "run.json").read_text())
    minutes = (float(which.split("-")[1]) if which != "last"
               else info.get("train_seconds", float("nan")) / 60)
    means = region_means(report)
    return {"which": which, "minutes": before + minutes, "step": int(meta["step"]), **means,
            "score": score(means)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("reference", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    reference = region_means(args.reference)
    before = first_stage_minutes(args.run)
    curve = [point(args.run, args.data, which, before) for which in snapshots(args.run)]
    useful = next((p for p in curve if p["score"] >= score(reference)), None)
    print(f"reference {args.reference}: " + " / ".join(f"{reference[r]:.3f}" for r in REGIONS)
          + f" (mean {score(reference):.3f})"
          + (f"; minutes include {before:.0f} of the first stage" if before else "") + "\n")
    print("| weights | minutes | steps | WT | TC | ET | mean |\n|---|---|---|---|---|---|---|")
    for p in curve:
        print(f"| {p['which']} | {p['minutes']:.0f} | {p['step']} | "
              + " | ".join(f"{p[r]:.3f}" for r in REGIONS) + f" | {p['score']:.3f} |")
    print("\n" + (f"reaches the reference after {useful['minutes']:.0f} minutes "
                  f"({useful['step']} steps)" if useful else
                  f"does not reach the reference within {curve[-1]['minutes']:.0f} minutes"))
    if args.json:
        args.json.write_text(json.dumps({"reference": {**reference, "score": score(reference)},
                                         "first_stage_minutes": before, "curve": curve,
                                         "useful": useful}, indent=2) + "\n")


if __name__ == "__main__":
    main()
