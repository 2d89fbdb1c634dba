"""A run folder's files and the rules of resuming: config.yaml (the resolved settings), run.json
(data, split, modalities, convention, status, provenance) and which settings may change when a
run is resumed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from contraseg.engine.config import TrainConfig, config_from_dict
from contraseg.errors import ConfigError, InputError
from contraseg.utils.fs import atomic_path

# settings a resumed run may change (a section, or one key of it: workers change no batch)
RESUMABLE_CHANGES = {"epochs", "val_every", "checkpoint_every", "keep_every_minutes", "device",
                     "log", "data.workers"}


def check_run_folder(out: Path, resume: bool) -> None:
    """A new run needs a folder without a run; a resumed one, its last checkpoint."""
    last = out / "checkpoints" / "last.pt"
    if resume and not last.is_file():
        raise InputError(out, "nothing to resume (no checkpoints/last.pt)")
    if not resume and last.exists():
        raise InputError(out, "already holds a run; pass --resume to continue it or "
                              "choose another --out")


def read_resumable(out: Path, config: TrainConfig) -> dict[str, Any]:
    """The run.json of the run in `out`, refused when `config` changes a setting that may not
    change on resume (named, with those that may)."""
    info = json.loads((out / "run.json").read_text())
    saved = config_from_dict(info["config"]).to_dict()
    changed = _diff(saved, config.to_dict())
    refused = sorted(k for k in changed if k.split(".")[0] not in RESUMABLE_CHANGES
                     and k not in RESUMABLE_CHANGES)
    if refused:
        raise ConfigError(f"--resume with settings that differ from the run's: "
                          f"{', '.join(refused)} (only {', '.join(sorted(RESUMABLE_CHANGES))} "
                          "may change)")
    return info


def write_run_files(out: Path, config: TrainConfig, info: dict[str, Any]) -> dict[str, Any]:
    """config.yaml and run.json, each written atomically; returns `info`."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    with atomic_path(out / "run.json") as tmp:
        tmp.write_text(json.dumps(info, indent=2))
    return info


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict) and key not in ("model", "loss_weights"):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(prefix + key)
    return out
