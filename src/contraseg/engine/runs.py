"""Starting and resuming runs from the command line's arguments."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from contraseg.engine.config import apply_overrides, load_config
from contraseg.errors import ConfigError, InputError


def start_training(out: Path, *, method: str | None, data: list[Path], preset: str,
                   overrides: list[str], resume: bool, max_steps: int | None,
                   max_minutes: float | None, console: Console) -> dict:
    """Resolve the config (a new run, or the run's own when resuming) and train."""
    from contraseg.engine.train import Trainer

    if resume:
        info_path = Path(out) / "run.json"
        if not info_path.is_file():
            raise InputError(out, "nothing to resume (no run.json)")
        info = json.loads(info_path.read_text())
        if method is not None and method != info["method"]:
            raise ConfigError(f"--method {method}: the run in {out} trains {info['method']}")
        # only some settings may change on resume (epochs, ...): the Trainer checks which
        config = apply_overrides(info["config"], overrides)
        data = data or [Path(d) for d in info["data"]]
    else:
        if method is None:
            raise ConfigError("--method is required for a new run (see `contraseg methods`)")
        if not data:
            raise ConfigError("--data is required for a new run")
        config = load_config(method, preset, overrides)
    trainer = Trainer(config, data, out, resume=resume, console=console)
    return trainer.run(max_steps=max_steps, max_minutes=max_minutes)

