"""Starting and resuming runs from the command line's arguments."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from rich.console import Console

from contraseg.engine.config import apply_overrides, load_config
from contraseg.errors import ConfigError, ContrasegError, ContrasegWarning, InputError
from contraseg.models.registry import canonical_name, get_entry


def start_training(out: Path, *, method: str | None, data: list[Path], preset: str,
                   overrides: list[str], resume: bool, max_steps: int | None,
                   max_minutes: float | None, console: Console | None,
                   folds: int | None = None, fold: int | None = None) -> dict:
    """Resolve the config (a new run, or the run's own when resuming) and train.

    With `folds`, patient-wise cross-validation: fold k trains in `out/fold-k` with fold k held
    out (all folds in turn, or only `fold`); `--resume` continues the folds that have started
    and starts the others. Returns the last run's run.json.
    """
    if fold is not None and folds is None:
        raise ConfigError("--fold needs --folds (the number of folds)")
    if folds is None:
        return _start_one(Path(out), method, data, preset, overrides, resume, max_steps,
                          max_minutes, console, None)
    if folds < 2:
        raise ConfigError(f"--folds {folds}: at least 2")
    if any(item.split("=", 1)[0].strip() == "split" for item in overrides):
        raise ConfigError("--split and --folds: give one (a published split, or folds dealt "
                          "by contraseg)")
    if fold is not None and not 0 <= fold < folds:
        raise ConfigError(f"--fold {fold}: must be in 0..{folds - 1}")
    info: dict = {}
    for k in [fold] if fold is not None else range(folds):
        folder = Path(out) / f"fold-{k}"
        # a fold stopped before its first checkpoint has nothing to resume: it starts again
        started = (folder / "checkpoints" / "last.pt").is_file()
        info = _start_one(folder, method, data, preset, overrides, resume and started,
                          max_steps, max_minutes, console, (k, folds))
    return info


DEFAULT_PRESET = "fast"
PHANTOM_CASE = re.compile(r"(Phantom|Parotid)-\d{5}")  # the names `contraseg data phantom` gives


def default_preset(data: list[Path]) -> str:
    """The preset of a run started without --preset: `fast`, which is sized for the phantom;
    on other scans a one-line warning names the presets sized for them."""
    if not all(_is_phantom(folder) for folder in data):
        warnings.warn(f"no --preset: `{DEFAULT_PRESET}` is sized for the synthetic phantom "
                      "(minutes on a CPU); for real scans give --preset cpu (an hour on a CPU) "
                      "or --preset paper (the publication's settings, for a GPU)",
                      ContrasegWarning, stacklevel=2)
    return DEFAULT_PRESET


def _is_phantom(folder: Path) -> bool:
    from contraseg.data.layouts import discover

    try:
        cases = discover(folder).cases
    except ContrasegError:
        return True  # unreadable: the run itself reports it, in its own words
    return all(PHANTOM_CASE.fullmatch(case.case_id) for case in cases)


def _start_one(out: Path, method: str | None, data: list[Path], preset: str,
               overrides: list[str], resume: bool, max_steps: int | None,
               max_minutes: float | None, console: Console | None,
               fold: tuple[int, int] | None) -> dict:
    from contraseg.engine.train import Trainer

    if resume:
        info_path = Path(out) / "run.json"
        if not info_path.is_file():
            raise InputError(out, "nothing to resume (no run.json)")
        info = json.loads(info_path.read_text())
        get_entry(info["method"], (info.get("method_source") or {}).get("module"))
        if method is not None and canonical_name(method) != info["method"]:
            raise ConfigError(f"--method {method}: the run in {out} trains {info['method']}")
        saved_fold = info.get("fold")
        if fold is not None and saved_fold != {"index": fold[0], "folds": fold[1]}:
            raise ConfigError(f"--resume: {out} is not fold {fold[0]} of {fold[1]}")
        # only some settings may change on resume (epochs, ...): the Trainer checks which
        config = apply_overrides(info["config"], overrides)
        data = data or [Path(d) for d in info["data"]]
    else:
        if method is None:
            raise ConfigError("--method is required for a new run (see `contraseg methods`)")
        if not data:
            raise ConfigError("--data is required for a new run")
        config = load_config(method, preset, overrides)
    trainer = Trainer(config, data, out, resume=resume, console=console, fold=fold)
    return trainer.run(max_steps=max_steps, max_minutes=max_minutes)
