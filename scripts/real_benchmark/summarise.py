"""The README tables of the real-scan benchmark from the folder of scripts/real_benchmark.sh.

Prints markdown: (1) one row per method: all-modality and 15-subset-mean Dice WT / TC / ET
(with the ET post-processing), HD95 of the all-modality row, training minutes (every stage),
steps; (2) the DC-Seg Table-1 layout per region: the 15 subsets as rows (markers in the order
FLAIR, T1, T1c, T2 of the paper), one column per method, the average row; (3) the paired
comparisons on the 15-subset mean: mean difference, cases better / worse and the test's verdict.

Usage: python scripts/real_benchmark/summarise.py OUT
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

METHODS = ("unet", "rfnet", "dc-seg", "dcl-manet", "clfc", "swin-moco")
FIRST_STAGES = {"clfc": "introvae", "swin-moco": "pretrain"}  # trained inside the method's hour
REGIONS = ("WT", "TC", "ET")
PAPER_ORDER = ("flair", "t1", "t1c", "t2")  # DC-Seg Table 1 marks FLAIR, T1, T1c, T2
FULL = "t1+t1c+t2+flair"


def table(summary: dict, metric: str) -> dict[str, dict]:
    rows = next(t for t in summary["tables"] if t["metric"] == metric)["rows"]
    return {row["name"]: row["mean"] for row in rows}


def run_facts(folder: Path, method: str) -> tuple[float, str]:
    """(training minutes of every stage, steps of each stage)."""
    runs = [folder / FIRST_STAGES[method]] if method in FIRST_STAGES else []
    seconds, steps = 0.0, []
    for run in [*runs, folder / "run"]:
        info = json.loads((run / "run.json").read_text())
        seconds += float(info.get("train_seconds", float("nan")))
        steps.append(f"{info['step']:,}")
    return seconds / 60, " + ".join(steps)


def pct(value: float | None) -> str:
    return "–" if value is None or value != value else f"{100 * value:.1f}"


def methods_table(out: Path, summaries: dict[str, dict]) -> list[str]:
    lines = ["| method | all four: Dice WT / TC / ET (%) | 15-subset mean: Dice WT / TC / ET "
             "(%) | with ET post-processing: all four / 15-subset ET (%) | all four: HD95 "
             "WT / TC / ET (voxels: mm on BraTS) | training (min) | steps |", "|---" * 7 + "|"]
    for method, summary in summaries.items():
        dice, post, hd = (table(summary, m) for m in ("dice", "dice_postproc", "hd95"))
        minutes, steps = run_facts(out / method, method)
        lines.append(
            f"| {method} | {' / '.join(pct(dice[FULL][r]) for r in REGIONS)} | "
            f"{' / '.join(pct(dice['average'][r]) for r in REGIONS)} | "
            f"{pct(post[FULL]['ET'])} / {pct(post['average']['ET'])} | "
            f"{' / '.join(f'{hd[FULL][r]:.1f}' for r in REGIONS)} | {minutes:.0f} | {steps} |")
    return lines


def markers(subset: str) -> str:
    present = set(subset.split("+"))
    return "".join("●" if m in present else "○" for m in PAPER_ORDER)


def subset_tables(summaries: dict[str, dict]) -> list[str]:
    dice = {m: table(summary, "dice") for m, summary in summaries.items()}
    done = list(summaries)
    subsets = [s for s in dice[done[0]] if s != "average"]
    subsets.sort(key=lambda s: (s.count("+"), [PAPER_ORDER.index(m) for m in s.split("+")]))
    lines = []
    for region in REGIONS:
        lines += ["", f"{region} Dice (%), FLAIR T1 T1c T2:", "",
                  "| modalities | " + " | ".join(done) + " |", "|---" * (len(done) + 1) + "|"]
        for subset in [*subsets, "average"]:
            cells = [pct(dice[m].get(subset, {}).get(region)) for m in done]
            best = max((c for c in cells if c != "–"), key=float, default=None)
            cells = [f"**{c}**" if c == best else c for c in cells]
            name = "average" if subset == "average" else markers(subset)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def case_means(report: Path) -> dict[tuple[str, str], float]:
    """(case, region) -> the case's Dice averaged over its subsets (NaN skipped)."""
    values: dict[tuple[str, str], list[float]] = {}
    with (report / "metrics.csv").open() as handle:
        for row in csv.DictReader(handle):
            if (dice := float(row["dice"])) == dice:
                values.setdefault((row["case"], row["region"]), []).append(dice)
    return {key: sum(v) / len(v) for key, v in values.items()}


def comparison_lines(out: Path, only: set[str] | None = None) -> list[str]:
    """The paired comparisons archived in OUT (compare-B-vs-A.json); `only`: those whose two
    methods are both in it."""
    lines = ["| B vs A | cases | WT: B - A (points), cases B better / worse | TC | ET | "
             "test |", "|---" * 6 + "|"]
    for path in sorted(out.glob("compare-*-vs-*.json")):
        b, a = path.stem[len("compare-"):].split("-vs-")
        if only is not None and not {a, b} <= only:
            continue
        data = json.loads(path.read_text())
        mean_a, mean_b = (case_means(out / m / "report") for m in (a, b))
        cells, notes = [], set()
        for row in data["average"]:
            diffs = [mean_b[k] - mean_a[k] for k in mean_a if k[1] == row["region"]
                     and k in mean_b]
            p = "" if row["p_value"] is None else f", p {row['p_value']:.3f}"
            cells.append(f"{100 * row['mean_diff']:+.1f}, {sum(d > 0 for d in diffs)} / "
                         f"{sum(d < 0 for d in diffs)}{p}")
            notes.add(row["note"] if row["p_value"] is None else "Wilcoxon, Holm")
        lines.append(f"| {b} vs {a} | {data['average'][0]['n']} | " + " | ".join(cells)
                     + f" | {'; '.join(sorted(notes))} |")
    return lines


def main(out: Path) -> None:
    summaries = {m: json.loads(path.read_text()) for m in METHODS
                 if (path := out / m / "report" / "summary.json").is_file()}
    if not summaries:
        sys.exit(f"{out}: no finished method (no <method>/report/summary.json)")
    print("\n".join([*methods_table(out, summaries), *subset_tables(summaries), "",
                     *comparison_lines(out)]))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
