"""Patient-wise splits and cross-validation folds: how the cases are dealt (deterministic for
the seed), and where a cross-validation folder's folds are (`train --folds`: OUT/fold-K, each a
run whose run.json names its held-out cases)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contraseg.data.cases import CaseSpec
from contraseg.errors import ConfigError, InputError


def split_cases(ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic patient-wise split: a seeded permutation, the first part for validation."""
    order = [ids[i] for i in np.random.default_rng([seed, 7919]).permutation(len(ids))]
    n_val = int(round(len(ids) * val_fraction))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


def fold_of(ids: list[str], folds: int, seed: int) -> dict[str, int]:
    """Deterministic patient-wise folds: a seeded permutation of the sorted ids dealt round
    robin, so fold sizes differ by at most one and depend only on (ids, folds, seed)."""
    if folds < 2 or folds > len(ids):
        raise ConfigError(f"--folds {folds}: need 2 <= folds <= the {len(ids)} cases")
    ordered = sorted(ids)
    order = np.random.default_rng([seed, 104729]).permutation(len(ordered))
    return {ordered[i]: rank % folds for rank, i in enumerate(order)}


def fold_split(ids: list[str], fold: int, folds: int, val_fraction: float, seed: int
               ) -> dict[str, list[str]]:
    """Cross-validation split: fold `fold` is the test set; the other folds are split into
    training and validation (for the best checkpoint) like a plain run."""
    if not 0 <= fold < folds:
        raise ConfigError(f"--fold {fold}: must be in 0..{folds - 1}")
    assignment = fold_of(ids, folds, seed)
    rest = [i for i in sorted(ids) if assignment[i] != fold]
    train, val = split_cases(rest, val_fraction, seed)
    return {"train": train, "val": val,
            "test": sorted(i for i in ids if assignment[i] == fold)}


def fold_run_files(run: Path) -> list[Path]:
    """The fold-K/run.json files of a cross-validation root, in fold order; [] for anything
    else (a run folder, which has a run.json of its own, a checkpoint file, a missing path)."""
    run = Path(run)
    if not run.is_dir() or (run / "run.json").is_file():
        return []
    return sorted(run.glob("fold-*/run.json"), key=lambda p: int(p.parent.name.split("-")[1]))


def cross_validation_folds(run: str | Path) -> list[Path] | None:
    """The fold folders of a cross-validation root (fold-K/run.json, no run.json of its own),
    or None for any other path; refused unless every fold finished training."""
    run = Path(run)
    infos = fold_run_files(run)
    if not infos:
        return None
    unfinished = [f"{p.parent.name} {status}" for p in infos
                  if (status := json.loads(p.read_text()).get("status")) != "finished"]
    if unfinished:
        raise InputError(run, f"not every fold finished ({', '.join(unfinished)}): the "
                              "ensemble needs them all; give one fold's folder to use it alone")
    return [p.parent for p in infos]



@dataclass
class CrossValidationPlan:
    """[(run, cases)] to score, and why some folds or cases are left out ("" when none)."""

    plan: list[tuple[Path, list[CaseSpec]]]
    incomplete: str = ""


def cross_validation_plan(run: Path, data_name: str, cases: list[CaseSpec]
                          ) -> CrossValidationPlan:
    """A plain run scores every case; a folder of folds (`fold-K/run.json`) gives each FINISHED
    fold the cases of its held-out split (ids are `<data folder name>/<case>`). Folds that are
    missing or not finished are left out and named with the cases nobody scored, so a
    half-trained cross-validation is never reported as complete."""
    folds = fold_run_files(run)
    if not folds:
        return CrossValidationPlan([(run, cases)])  # Predictor.from_run says what is missing
    plan, problems, expected = [], [], 0
    for info_path in folds:
        info = json.loads(info_path.read_text())
        held_out = set(info["split"].get("test", []))
        if not held_out:
            raise InputError(info_path, "is not a cross-validation fold (no split['test'])")
        expected = max(expected, int(info.get("fold", {}).get("folds", 0)))
        if info.get("status") != "finished":
            problems.append(f"{info_path.parent.name} {info.get('status', 'unknown')} at step "
                            f"{info.get('step', '?')}")
            continue
        plan.append((info_path.parent,
                     [c for c in cases if f"{data_name}/{c.case_id}" in held_out]))
    started = {int(p.parent.name.split("-")[1]) for p in folds}
    problems += [f"fold-{k} not started" for k in range(expected) if k not in started]
    if not plan:
        raise InputError(run, "no finished cross-validation fold to evaluate (" +
                         "; ".join(problems) + ")")
    if not problems:
        return CrossValidationPlan(plan)
    scored = {c.case_id for _, fold_cases in plan for c in fold_cases}
    unscored = sorted(c.case_id for c in cases if c.case_id not in scored)
    return CrossValidationPlan(plan, (
        f"{len(plan)} of {max(expected, len(folds))} folds finished; left out: " +
        "; ".join(problems) + f"; {len(unscored)} case(s) not scored: " +
        (", ".join(unscored) or "none")))
