"""Every results table of the README and the docs, generated from the archived evidence in
results/, so that no table can drift from what was measured.

A table lives in a Markdown file between two markers:

    <!-- results: NAME -->
    ... (written by this script) ...
    <!-- /results -->

and NAME is one of BLOCKS below. `python scripts/results_tables.py` rewrites every block of
README.md, docs/**/*.md and results/**/README.md in place; `--check` writes nothing and exits 1
naming each block whose text differs from its evidence (the test suite runs it).

The real-scan tables hold the rows of one commit only: when results/real-brats2018 holds rows
of several commits, the tables show the commit with the most rows and name the methods left
out, so rows of different code never share a table.

Usage: python scripts/results_tables.py [--check]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REAL = REPO / "results" / "real-brats2018"
CV = REPO / "results" / "real-cv"
BUDGETS = REPO / "src" / "contraseg" / "configs" / "useful_budgets.json"
PERFORMANCE = REPO / "results" / "performance"
BLOCK = re.compile(r"(<!-- results: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results -->)",
                   re.DOTALL)
# the recipe's factor rows (results/real-cv): the plain recipe, then the main line of factors,
# then factors tried off it (NAME@BASE)
FACTOR_REFERENCE = "plain-10"
FACTOR_ROWS = ["preset-10", "budget-10", "nodrop-10", "sampledice-10", "noaug-10", "const-10",
               "nocrop-10", "regions-10@budget-10", "blend-10@budget-10",
               "chainblend-10@const-10"]
ACCEPTANCE_REFERENCE, ACCEPTANCE_ROWS = "plain-25", ["fixed-25", "uniform-25@fixed-25"]


@functools.cache  # each block loads the same two scripts; load each once
def _script(relative: str):
    path = REPO / "scripts" / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def commit_of(method_folder: Path) -> str:
    provenance = method_folder / "provenance.json"
    return json.loads(provenance.read_text()).get("commit", "?") if provenance.is_file() else "?"


@functools.cache  # three blocks show the same rows: read the archive once
def real_rows(real: Path = REAL) -> tuple[str, dict[str, dict], list[str]]:
    """(commit, {method: summary} of that commit's rows in the benchmark's order, methods
    whose row is of another commit or missing). The commit is the one most rows share."""
    summarise = _script("real_benchmark/summarise.py")
    found = {m: real / m for m in summarise.METHODS
             if (real / m / "report" / "summary.json").is_file()}
    if not found:
        raise SystemExit(f"{real}: no archived method row")
    commits = Counter(commit_of(folder) for folder in found.values())
    commit = max(commits, key=lambda c: (commits[c], c))
    kept = {m: json.loads((f / "report" / "summary.json").read_text())
            for m, f in found.items() if commit_of(f) == commit}
    return commit, kept, [m for m in summarise.METHODS if m not in kept]


def _commit_line(commit: str, left_out: list[str]) -> list[str]:
    line = f"All rows: commit `{commit}`."
    if left_out:
        line += (" No row on this commit yet: " + ", ".join(f"`{m}`" for m in left_out)
                 + " (run `scripts/real_benchmark.sh OUT " + " ".join(left_out) + "`).")
    return [line, ""]


def real_summary() -> list[str]:
    summarise = _script("real_benchmark/summarise.py")
    commit, kept, left_out = real_rows()
    return [*_commit_line(commit, left_out), *summarise.methods_table(REAL, kept)]


def real_subsets() -> list[str]:
    summarise = _script("real_benchmark/summarise.py")
    commit, kept, _ = real_rows()
    return [f"Commit `{commit}`.", *summarise.subset_tables(kept)]


def real_comparisons() -> list[str]:
    summarise = _script("real_benchmark/summarise.py")
    commit, kept, _ = real_rows()
    lines = summarise.comparison_lines(REAL, only=set(kept))
    return [f"Commit `{commit}`.", "", *lines]


def _cv_table(reference: str, rows: list[str]) -> list[str]:
    table = _script("real_cv_table.py")
    return table.table_lines(CV, reference, table.build_rows(CV, reference, rows))


def recipe_factors() -> list[str]:
    return _cv_table(FACTOR_REFERENCE, FACTOR_ROWS)


def recipe_acceptance() -> list[str]:
    return _cv_table(ACCEPTANCE_REFERENCE, ACCEPTANCE_ROWS)


def useful_budgets() -> list[str]:
    budgets = json.loads(BUDGETS.read_text())
    lines = ["| method | beats the plain recipe's 25-minute score after | within | "
             "score at the end | commit |", "|---|---|---|---|---|"]
    for method, entry in budgets["methods"].items():
        after = ("not within the run" if entry["minutes"] is None
                 else f"{entry['minutes']:g} min ({entry['steps']:,} steps)")
        lines.append(f"| `{method}` | {after} | {entry['within_minutes']:g} min | "
                     f"{entry['score_at_end']:.3f} | `{entry['commit']}` |")
    return lines


def performance() -> list[str]:
    """One table per machine and date (results/performance/*.json, scripts/performance.py);
    utilisation columns where the bench counted FLOPs."""
    lines = []
    for path in sorted(PERFORMANCE.glob("*.json")):
        record = json.loads(path.read_text())
        facts = record["machine"]
        where = facts["cuda_device"] or facts["processor"]
        peaks = _peaks(record["methods"].values())
        lines += [f"**{where}, {facts['cores']} cores, torch {facts['torch']}, "
                  f"{record['date']}** (`{record['command']}`; evidence: "
                  f"`results/performance/{path.name}`)" + peaks, "",
                  "| method | parameters | precision | training step (s) | voxels / s | "
                  "one 240 x 240 x 155 case, all four modalities (s) | the 15 subsets in one "
                  "pass (s; of its FLOP floor / of its timed floor) | peak memory (GB) | "
                  "share of the conv peak: training / inference |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for method, bench in record["methods"].items():
            lines.append(
                f"| `{method}` | {bench['parameters']:,} | "
                f"{'float32' if bench['amp'] == 'none' else bench['amp']} | "
                f"{bench['train_step']['median_s']:.2f} | "
                f"{bench['train_voxels_per_s'] / 1e6:.2f} M | "
                f"{bench['infer_case_all_modalities']['median_s']:.1f} | {_subsets(bench)} | "
                f"{bench['peak_rss_mb'] / 1024:.1f} | {_shares(bench)} |")
        lines.append("")
    return lines or ["No machine measured yet: run `python scripts/performance.py`."]


def _peaks(benches) -> str:
    """The machine's peaks as the first method's bench measured them (each bench times its
    own; their spread says how steady the machine was)."""
    found = [b["utilisation"]["peak"] for b in benches if "utilisation" in b]
    if not found:
        return ""
    conv = [p["conv3d"]["flops_per_s"] / 1e9 for p in found]
    matmul = [p["matmul"]["flops_per_s"] / 1e9 for p in found]
    return (f"; peak of a 3D convolution {min(conv):.0f}-{max(conv):.0f} GFLOP/s and of a "
            f"matrix product {min(matmul):.0f}-{max(matmul):.0f} GFLOP/s over the benches")


def _subsets(bench: dict) -> str:
    """The 15-subset pass: seconds, and its multiple of one subset's against the floors."""
    floor = bench.get("infer_15_subsets_vs_floor")
    if not floor:
        return "–"
    timed = floor.get("of_time_floor")
    return (f"{bench['infer_case_15_subsets']['median_s']:.1f} ({floor['of_floor']:.2f}x / "
            + (f"{timed:.2f}x)" if timed is not None else "–)"))


def _shares(bench: dict) -> str:
    use = bench.get("utilisation")
    if not use:
        return "–"
    train = use["train_step"]["of_conv3d_peak"]
    infer = use.get("infer_case_all_modalities", {}).get("of_conv3d_peak")
    return f"{train:.2f} / {infer:.2f}" if infer is not None else f"{train:.2f} / –"


BLOCKS: dict[str, Callable[[], list[str]]] = {
    "real-scans-summary": real_summary,
    "real-scans-subsets": real_subsets,
    "real-scans-comparisons": real_comparisons,
    "recipe-factors": recipe_factors,
    "recipe-acceptance": recipe_acceptance,
    "useful-budgets": useful_budgets,
    "performance": performance,
}


def pages(repo: Path = REPO) -> list[Path]:
    return [repo / "README.md", *sorted((repo / "docs").rglob("*.md")),
            *sorted((repo / "results").rglob("README.md"))]


def regenerate(text: str, source: Path, cache: dict[str, str]) -> str:
    """`text` with every block rewritten; an unknown block name is an error."""
    def body(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise SystemExit(f"{source}: unknown results block {name!r} (known: "
                             f"{', '.join(BLOCKS)})")
        if name not in cache:
            cache[name] = "\n".join(BLOCKS[name]()) + "\n"
        return match.group(1) + cache[name] + match.group(4)
    return BLOCK.sub(body, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a table differs from its evidence")
    args = parser.parse_args()
    cache: dict[str, str] = {}
    stale = []
    for page in pages():
        text = page.read_text()
        new = regenerate(text, page, cache)
        if new != text:
            stale.append(page.relative_to(REPO))
            if not args.check:
                page.write_text(new)
    if args.check and stale:
        sys.exit("results tables differ from their evidence in: " + ", ".join(map(str, stale))
                 + " (run python scripts/results_tables.py)")
    print(f"{len(cache)} results tables, {len(stale)} file(s) "
          + ("to update" if args.check else "updated"))


if __name__ == "__main__":
    main()
