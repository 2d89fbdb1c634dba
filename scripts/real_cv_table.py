"""The factor table of the cross-validation runs of scripts/real_cv.py, as Markdown.

Rows in the order given: each row's mean Dice over the 21 cases with all four modalities
(each case averaged over the seeds first), its 15-subset mean where it was scored on every
subset, its WT from FLAIR alone where that subset was scored, the steps each fold trained,
and the paired effect of the row against its base (the row above it, or BASE when the row is
given as NAME@BASE: a factor tried off the main line) and against the REFERENCE row (the
plain recipe): the difference of the seed-averaged case means (row - other) and the
two-sided Wilcoxon signed-rank p over the cases (contraseg's `compare_seeds`; raw p, no
multiple-test correction, so a "no loss" reads on the strict side).

Usage: python scripts/real_cv_table.py OUT REFERENCE NAME[@BASE] [NAME ...] [--json FILE]
           [--archive DEST]
  e.g. python scripts/real_cv_table.py runs/cv plain preset no-dropout no-dropout+fp32 \
          regions@preset
--archive copies the evidence of these rows (command.json, each seed's metrics.csv and
summary.json, each fold's run.json and split.json: no image, no checkpoint) into DEST with the
same layout, so the table can be rebuilt from DEST (results/real-cv in the repository).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import statistics
from pathlib import Path

from contraseg.errors import InputError
from contraseg.evaluation.stats import compare_seeds

FULL = "t1+t1c+t2+flair"
FLAIR = "flair"
REGIONS = ("WT", "TC", "ET")
AVERAGE = "average"


def reports(out: Path, name: str, every_subset: bool = False) -> list[Path]:
    """A row's reports, one per seed, of the first kind every seed has: scored on every subset
    (SEED/report), on all four modalities (SEED/report-full), or on chosen subsets
    (SEED/report-<subsets>). `every_subset`: SEED/report only (empty when a seed lacks it)."""
    seeds = sorted((out / name).glob("seed-*"))
    kinds = ["report"] if every_subset else ["report", "report-full", *sorted(
        {p.name for s in seeds for p in s.glob("report-*")})]
    for kind in kinds:
        found = [s / kind / "metrics.csv" for s in seeds]
        if found and all(f.is_file() for f in found):
            return found
    if every_subset:
        return []
    raise SystemExit(f"{out / name}: no report that every seed has (seed-*/report*/metrics.csv)")


def flair_alone_wt(found: list[Path]) -> float | None:
    """Mean WT Dice from FLAIR alone over the cases (each averaged over the seeds), if scored."""
    per_case: dict[str, list[float]] = {}
    for path in found:
        with path.open() as handle:
            for row in csv.DictReader(handle):
                if row["subset"] == FLAIR and row["region"] == "WT":
                    per_case.setdefault(row["case"], []).append(float(row["dice"]))
    if not per_case:
        return None
    return statistics.mean(statistics.mean(v) for v in per_case.values())


def steps(out: Path, name: str) -> float:
    """Median training steps of a fold, over every fold of every seed."""
    counts = []
    for info in (out / name).glob("seed-*/fold-*/run.json"):
        data = json.loads(info.read_text())
        counts.append(data.get("step", data.get("steps")))
    return statistics.median(c for c in counts if c is not None) if counts else float("nan")


def effects(base: list[Path], row: list[Path]) -> dict:
    """Per region: row - base on all four modalities, on FLAIR alone and on the 15-subset
    mean, with p, where both rows were scored so (none when they share no subset: a FLAIR
    specialist against the plain recipe)."""
    try:
        comparison = compare_seeds(base, row)
    except InputError:
        return {}
    out = {}
    for result in [*comparison.results, *comparison.average]:
        if result.subset in (FULL, FLAIR, AVERAGE):
            out[(result.subset, result.region)] = {
                "diff": result.mean_diff, "p": result.p_value, "a": result.mean_a,
                "b": result.mean_b, "n": result.n}
    return out


def subset_cells(found: dict) -> dict:
    """The effects on all four modalities and on FLAIR alone (not the 15-subset means)."""
    return {key: value for key, value in found.items() if key[0] in (FULL, FLAIR)}


def means(by_region: dict) -> str:
    """WT / TC / ET means, or "-" where the row was not scored so."""
    return " / ".join(f"{by_region[r]:.3f}" for r in REGIONS) if by_region else "-"


def fmt(effect: dict | None) -> str:
    if effect is None:
        return "-"
    return f"{effect['diff']:+.3f} (p {effect['p']:.2g})"


EVIDENCE = ("command.json", "seed-*/report*/metrics.csv", "seed-*/report*/summary.json",
            "seed-*/fold-*/run.json", "seed-*/fold-*/split.json")


def portable(record: dict) -> tuple[str, str]:
    """The row's command as anyone can run it (the repository's script, the folder as OUT)
    and the commit it ran on (short; "+changes" kept)."""
    words = record["command"].split()
    commit = record.get("commit", "unrecorded")
    short = commit[:7] + commit[40:] if len(commit) >= 40 else commit
    return f"python scripts/real_cv.py OUT {shlex.join(words[2:])}", short


def archive(out: Path, dest: Path, names: list[str]) -> None:
    for name in names:
        for pattern in EVIDENCE:
            for source in sorted((out / name).glob(pattern)):
                target = dest / source.relative_to(out)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)


def build_rows(out: Path, reference_name: str, names: list[str]) -> list[dict]:
    """Each row's means, its effects against its base and against the reference."""
    reference = reports(out, reference_name)
    rows, previous, previous_every = [], None, None
    for given in names:
        name, _, base = given.partition("@")
        if base:
            previous = reports(out, base)
            previous_every = reports(out, base, every_subset=True)
        mine, every = reports(out, name), reports(out, name, every_subset=True)
        versus_plain = effects(reference, mine)
        versus_previous = subset_cells(effects(previous, mine)) if previous else {}
        own = subset_cells(effects(mine, mine))  # the row's own means (b) per group
        if every and previous_every:  # the 15-subset means, when both rows were scored so
            versus_previous |= {k: v for k, v in effects(previous_every, every).items()
                                if k[0] == AVERAGE}
        own |= {k: v for k, v in effects(every, every).items() if k[0] == AVERAGE} if every \
            else {}
        command, commit = portable(json.loads((out / name / "command.json").read_text()))
        rows.append({"name": name, "base": base or None, "seeds": len(mine),
                     "steps": steps(out, name), "command": command, "commit": commit,
                     "full": {r: own[(FULL, r)]["b"] for r in REGIONS if (FULL, r) in own},
                     "subsets": {r: own[(AVERAGE, r)]["b"] for r in REGIONS} if every else {},
                     "flair_wt": flair_alone_wt(mine),
                     "vs_previous": {f"{s}/{r}": v for (s, r), v in versus_previous.items()},
                     "vs_reference": {r: versus_plain[(FULL, r)] for r in REGIONS
                                      if (FULL, r) in versus_plain}})
        previous, previous_every = mine, every
    return rows


def table_lines(out: Path, reference_name: str, rows: list[dict]) -> list[str]:
    """The reference's line, the factor table and each row's command, as Markdown lines."""
    reference = reports(out, reference_name)
    ref_means = effects(reference, reference)
    lines = [f"Reference `{reference_name}` ({len(reference)} seeds, "
             f"{steps(out, reference_name):.0f} steps a fold), all four modalities: " + ", ".join(
                 f"{r} {ref_means[(FULL, r)]['b']:.3f}" for r in REGIONS), "",
             "| row | seeds | steps a fold | all four: WT / TC / ET | vs its base: WT / TC / ET "
             "| vs reference: WT / TC / ET | 15-subset mean: WT / TC / ET "
             "| 15-subset mean vs its base: WT / TC / ET | FLAIR alone: WT "
             "| FLAIR alone vs its base: WT |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        above = row["vs_previous"]
        base = f" (base `{row['base']}`)" if row["base"] else ""
        lines.append(
            f"| `{row['name']}`{base} | {row['seeds']} | {row['steps']:.0f} | "
            + means(row["full"]) + " | "
            + " / ".join(fmt(above.get(f"{FULL}/{r}")) for r in REGIONS) + " | "
            + " / ".join(fmt(row["vs_reference"].get(r)) for r in REGIONS) + " | "
            + means(row["subsets"]) + " | "
            + " / ".join(fmt(above.get(f"{AVERAGE}/{r}")) if row["subsets"] else "-"
                         for r in REGIONS) + " | "
            + ("-" if row["flair_wt"] is None else f"{row['flair_wt']:.3f}") + " | "
            + fmt(above.get(f"{FLAIR}/WT")) + " |")
    command, commit = portable(json.loads((out / reference_name / "command.json").read_text()))
    lines += ["", "Commands:", "", f"- `{reference_name}`: `{command}` (commit `{commit}`)"]
    lines += [f"- `{row['name']}`: `{row['command']}` (commit `{row['commit']}`)" for row in rows]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("reference")
    parser.add_argument("names", nargs="+")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--archive", type=Path, default=None, metavar="DEST")
    args = parser.parse_args()
    if args.archive:
        archive(args.out, args.archive, [args.reference, *{
            part for given in args.names for part in given.split("@")}])
    rows = build_rows(args.out, args.reference, args.names)
    print("\n".join(table_lines(args.out, args.reference, rows)))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
