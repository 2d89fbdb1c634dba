"""`contraseg reproduce`: a paper's protocol in one command.

For each fold (or draw) of a published split: train the method's preset on that fold's parts
(`train --split NAME:k`), score the fold's test cases on every modality subset (`evaluate
--split NAME:k`); then set the mean over the folds beside every paper table printed on that
split (`compare --paper`), in OUT/paper.md and OUT/paper.json. Every step is skipped when its
result exists and a stopped training resumes, so the command resumes where it stopped.
`--dry-run` prints the steps' commands and an estimate of their time and memory on this
machine from one measured training step and the network's FLOPs (marked as an estimate).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from contraseg.data.splits import load_split, parse_split, read_split_file, split_files
from contraseg.engine.config import load_config
from contraseg.evaluation.paper_compare import compare_with_paper
from contraseg.evaluation.paper_tables import load_paper_table, paper_table_files
from contraseg.models.registry import get_entry
from contraseg.utils.fs import atomic_path
from contraseg.utils.jsonio import dumps


@dataclass(frozen=True)
class Fold:
    """One fold of the protocol: its split name, run folder and report folder."""

    split: str  # NAME:k
    run: Path
    report: Path

    def trained(self) -> bool:
        info = self.run / "run.json"
        return info.is_file() and json.loads(info.read_text()).get("status") == "finished"

    def scored(self) -> bool:
        return (self.report / "metrics.csv").is_file()


def plan(split: str, out: Path) -> list[Fold]:
    """The folds of `split` (NAME or a split file; every fold of it, or NAME:k alone)."""
    base, k = parse_split(split)
    path = split_files().get(base, Path(base))
    count = len(read_split_file(path)["folds"]) if path.is_file() else 0
    if count == 0:
        load_split(base)  # says why (no list published, or no such split)
    chosen = list(range(1, count + 1)) if k is None else [k]
    return [Fold(f"{base}:{i}", out / f"fold-{i}", out / f"fold-{i}" / "report")
            for i in chosen]


def paper_tables_for(split: str) -> list[str]:
    """The paper tables printed on this split (DC-Seg's Table 1 on rfnet-brats2020, ...)."""
    base = split.split(":")[0]
    return [name for name in sorted(paper_table_files())
            if load_paper_table(name).get("split") == base]


def commands(method: str, data: Path, preset: str, overrides: list[str],
             folds: list[Fold]) -> list[list[str]]:
    sets = [word for item in overrides for word in ("--set", item)]
    steps = []
    for fold in folds:
        steps.append(["contraseg", "train", "--method", method, "--preset", preset, "--data",
                      str(data), "--split", fold.split, "--out", str(fold.run), *sets])
        steps.append(["contraseg", "evaluate", "--run", str(fold.run), "--data", str(data),
                      "--split", fold.split, "--out", str(fold.report), "--which", "last",
                      "--overlays", "0"])
    return steps


def reproduce(method: str, data: Path, split: str, out: Path, *, preset: str = "paper",
              overrides: list[str] | None = None, device: str = "auto",
              console: Console | None = None) -> Path:
    """Run every missing step of the protocol, then write OUT/paper.md; returns its path."""
    from contraseg.engine.evaluate import evaluate_run

    overrides = list(overrides or [])
    check_objective(method, preset, overrides)
    folds = plan(split, Path(out))
    for fold in folds:
        if not fold.trained():
            _train(fold, method, Path(data), preset, overrides, console)
        if not fold.scored():
            evaluate_run(fold.run, Path(data), fold.report, split=fold.split, which="last",
                         overlays=0, device=device, console=console)
    return write_paper_tables(folds, Path(out), split)


def _train(fold: Fold, method: str, data: Path, preset: str, overrides: list[str],
           console: Console | None) -> None:
    """Train the fold, or resume it from its last checkpoint."""
    from contraseg.engine.runs import start_training

    if (fold.run / "checkpoints" / "last.pt").is_file():
        start_training(fold.run, method=None, data=[], preset=preset, overrides=[],
                       resume=True, max_steps=None, max_minutes=None, console=console)
        return
    start_training(fold.run, method=method, data=[data], preset=preset,
                   overrides=[*overrides, f"split={json.dumps(fold.split)}"], resume=False,
                   max_steps=None, max_minutes=None, console=console)


def check_objective(method: str, preset: str, overrides: list[str]) -> None:
    """Refuse, before anything runs, settings that would disable the method's objective (a
    contrastive term needs two samples a batch)."""
    config = load_config(method, preset, overrides)
    get_entry(config.method).cls.check_batch_size(config.loss_weights, config.data.batch_size)


def write_paper_tables(folds: list[Fold], out: Path, split: str) -> Path:
    """OUT/paper.json and OUT/paper.md: the mean over the folds beside each paper table."""
    reports = [fold.report for fold in folds]
    results = [compare_with_paper(reports, name) for name in paper_tables_for(split)]
    lines = [f"# {split}: this run beside the papers", "",
             f"The mean over {len(folds)} fold(s) of each cell (Dice, %), beside the figure "
             "the paper printed.", ""]
    if not results:
        lines.append(f"No paper table shipped with contraseg is printed on {split} "
                     f"(tables: {', '.join(sorted(paper_table_files()))}).")
    for result in results:
        lines += [f"## {result.paper}: {result.method}", "",
                  "| subset | region | this run | paper | difference |", "|---|---|---|---|---|"]
        for row in result.rows:
            ours = "-" if row["ours"] is None else f"{row['ours']:.2f}"
            diff = "-" if row["difference"] is None else f"{row['difference']:+.2f}"
            lines.append(f"| {row['subset']} | {row['region']} | {ours} | {row['paper']:.2f} "
                         f"| {diff} |")
        lines += [""] + [f"- {d}" for d in result.differences] + [""]
    with atomic_path(out / "paper.json") as tmp:
        tmp.write_text(dumps({"split": split, "tables": [r.to_dict() for r in results]}) + "\n")
    with atomic_path(out / "paper.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return out / "paper.md"


def dry_run(method: str, data: Path, split: str, out: Path, *, preset: str = "paper",
            overrides: list[str] | None = None, device: str = "cpu") -> list[str]:
    """Every step's command, then the estimate (one training step measured here, the steps
    of the preset, the sliding window's FLOPs at the measured rate), as lines to print."""
    from contraseg.bench import bench_method

    overrides = list(overrides or [])
    check_objective(method, preset, overrides)
    folds = plan(split, Path(out))
    lines = [shlex.join(c) for c in commands(method, Path(data), preset, overrides, folds)]
    config = load_config(method, preset, overrides)
    timing = bench_method(method, device=device, preset=preset, steps=2, infer=False,
                          subsets=True, utilisation=False, overrides=overrides)
    step_s = timing["train_step"]["median_s"]
    flops = timing["window_flops"]
    steps = config.total_steps
    test_cases = len(load_split(folds[0].split).test)
    # a training step is about three forward passes; a window's 15-subset pass costs the
    # encoder once and the decoder per subset (bench's FLOP count)
    forward_rate = 3 * (flops["encode"] + flops["decode_per_subset"]) * \
        config.data.batch_size / step_s
    windows = _windows_per_case(config)
    evaluate_s = test_cases * windows * (flops["encode"] + 15 * flops["decode_per_subset"]) \
        / forward_rate * (8 if config.infer.tta_flips else 1)
    budget_s = 60 * config.budget_minutes if config.budget_minutes else steps * step_s
    lines += ["", f"estimate (measured here: one {method} {preset} step "
                  f"{step_s:.2f} s on {device}; not a promise):",
              f"- training: {steps} steps a fold x {len(folds)} fold(s): about "
              f"{_hours(budget_s * len(folds))}, peak memory about "
              f"{timing['train_peak_rss_mb']:.0f} MiB",
              f"- evaluation: {test_cases} test cases x 15 subsets a fold "
              f"({windows} windows a case): about {_hours(evaluate_s * len(folds))}"]
    return lines


def _windows_per_case(config) -> int:
    """Sliding windows over a 240 x 240 x 155 BraTS case at the preset's patch and overlap."""
    import math

    patch = [int(p) for p in config.data.patch_size]
    step = [max(1, int(p * (1 - config.infer.overlap))) for p in patch]
    return math.prod(max(1, math.ceil((n - p) / s) + 1) if n > p else 1
                     for n, p, s in zip((240, 240, 155), patch, step, strict=False))


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"
