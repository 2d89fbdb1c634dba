"""Keep the evidence of a real-scan benchmark without its checkpoints or predictions.

Copies, from the folder of scripts/real_benchmark.sh, what summarise.py and `contraseg
compare` read: each finished method's report/summary.json and report/metrics.csv, its
learning curve (curve.json), the run.json of each of its training stages and the compare-*.json
files, into DEST with the
same layout (a few hundred kB: no image, no checkpoint). `summarise.py DEST` then rebuilds the
README tables, and `contraseg compare DEST/A/report DEST/B/report` re-tests any pair.
`--commit` records the commit the rows were trained on in DEST/<method>/provenance.json
(rows may come from different sessions, and so from different commits); `--methods` keeps
only those methods' rows (and the compare files between two of them), so a row archived
earlier from the same OUT on another commit keeps its provenance.

Usage: python scripts/real_benchmark/archive.py OUT DEST [--commit SHA] [--methods M ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

REPORT_FILES = ("summary.json", "metrics.csv")
STAGES = ("run", "introvae", "pretrain")  # summarise.FIRST_STAGES and the segmenter's run


def finished_methods(out: Path, only: list[str] | None = None) -> list[Path]:
    found = sorted(p.parent.parent for p in out.glob("*/report/summary.json"))
    return [m for m in found if only is None or m.name in only]


def _compares(out: Path, methods: list[Path]) -> list[Path]:
    """compare-B-vs-A.json files whose B and A are both among `methods`."""
    names = {m.name for m in methods}
    return [c for c in out.glob("compare-*.json")
            if any(c.stem == f"compare-{b}-vs-{a}" for a in names for b in names)]


def files_to_keep(out: Path, only: list[str] | None = None) -> list[Path]:
    methods = finished_methods(out, only)
    keep = _compares(out, methods)  # summary.md: summarise.py rebuilds it
    for method in methods:
        keep += [method / "report" / name for name in REPORT_FILES]
        keep += [curve] if (curve := method / "curve.json").is_file() else []
        keep += [run for stage in STAGES if (run := method / stage / "run.json").is_file()]
    return keep


def archive(out: Path, dest: Path, commit: str | None,
            only: list[str] | None = None) -> list[Path]:
    if not finished_methods(out, only):
        which = f" among {', '.join(only)}" if only else ""
        raise SystemExit(f"{out}: no finished method{which} (no <method>/report/summary.json)")
    copied = []
    for source in files_to_keep(out, only):
        target = dest / source.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        copied.append(target)
    if commit:
        for method in finished_methods(out, only):
            target = dest / method.name / "provenance.json"
            target.write_text(json.dumps({"commit": commit}, indent=2) + "\n")
            copied.append(target)
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--commit", help="the commit the rows were trained and evaluated on")
    parser.add_argument("--methods", nargs="+", help="archive only these methods' rows")
    args = parser.parse_args()
    for path in archive(args.out, args.dest, args.commit, args.methods):
        print(path)


if __name__ == "__main__":
    main()
