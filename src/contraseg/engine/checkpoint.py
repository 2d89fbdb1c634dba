"""Checkpoints: one `.pt` file of plain data (tensors, numbers, strings, lists, dicts).

Written atomically; read with `torch.load(weights_only=True)`, so a file carrying pickled
objects is refused instead of executed. Each checkpoint carries what is needed to rebuild the
method and use it correctly: method name, resolved config, modality names (channel order),
label convention, preprocessing and spacing, versions, and for resuming the epoch, step,
optimizer state and RNG state.

A run folder holds `run.json` (the same metadata, readable), `config.yaml`, `log.jsonl`, and
`checkpoints/last.pt` and `checkpoints/best.pt`.
"""

from __future__ import annotations

import pickle
import platform
import re
from pathlib import Path
from typing import Any

import monai
import torch

from contraseg._version import __version__
from contraseg.errors import ConfigError, InputError
from contraseg.utils.fs import atomic_path

FORMAT = "contraseg.checkpoint"
FORMAT_VERSION = 1
META_KEYS = ("method", "config", "modalities", "label_convention", "preprocess", "spacing",
             "versions", "epoch", "step")


def versions() -> dict[str, str]:
    return {"contraseg": __version__, "torch": str(torch.__version__),
            "monai": str(monai.__version__), "python": platform.python_version()}


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` (plain data only) atomically, stamped with the format and versions."""
    missing = [k for k in META_KEYS if k not in payload and k != "versions"]
    if missing:
        raise ValueError(f"checkpoint payload lacks {missing}")
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(),
            **payload}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return Path(path)


def _looks_like_torch_save(path: Path) -> bool:
    """torch.save writes a zip archive (PK..), older versions a pickle stream (0x80)."""
    with path.open("rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; anything else is an InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint not found")
    if not _looks_like_torch_save(path):
        raise InputError(path, "not a checkpoint (give a run folder or its checkpoints/*.pt)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = next((line.split("error:", 1)[1].split(" was not")[0].strip()
                       for line in str(exc).splitlines() if "WeightsUnpickler error:" in line),
                      "unsafe content")
        raise InputError(path, "refused: holds pickled objects other than plain data "
                               f"(torch.load weights_only: {reason[:160]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(path, f"not a readable checkpoint ({str(exc).splitlines()[0][:160]})")\
            from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(path, "not a contraseg checkpoint")
    if data.get("format_version") != FORMAT_VERSION:
        raise InputError(path, f"checkpoint format {data.get('format_version')} is not "
                               f"supported by contraseg {__version__} (format {FORMAT_VERSION})")
    return data


CHECKPOINT_CHOICES = ("auto", "best", "last")
SNAPSHOT = re.compile(r"minute-\d+")  # the weights kept every keep_every_minutes of training


def snapshot_name(minutes: float) -> str:
    """The checkpoint name of the weights kept after `minutes` of training."""
    return f"minute-{round(minutes)}"


def find_checkpoint(run: str | Path, which: str = "auto") -> Path:
    """`run` may be a run folder or a checkpoint file (taken as it is, whatever `which`).

    `which` for a folder: "best" (chosen on validation; refused when the run never validated),
    "last" (the end of training, what the papers report), or "auto": best.pt when the run
    validated, else last.pt. A run without validation writes no best.pt, so "auto" never picks
    weights that no validation chose. "minute-M": the weights kept after M minutes of training
    (`keep_every_minutes`), a point of the run's learning curve.
    """
    snapshot = SNAPSHOT.fullmatch(which) is not None
    if which not in CHECKPOINT_CHOICES and not snapshot:
        raise ConfigError(f"--which {which!r}: expected one of {', '.join(CHECKPOINT_CHOICES)} "
                          "or minute-M")
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise InputError(run, "no such run folder or checkpoint file")
    folder = run / "checkpoints"
    if snapshot:
        if not (folder / f"{which}.pt").is_file():
            kept = sorted(p.stem for p in folder.glob("minute-*.pt"))
            raise InputError(run, f"has no checkpoints/{which}.pt (kept: "
                                  f"{', '.join(kept) or 'none; see keep_every_minutes'})")
        return folder / f"{which}.pt"
    best, last = folder / "best.pt", folder / "last.pt"
    if not best.is_file() and not last.is_file():
        raise InputError(run, "holds no checkpoint (checkpoints/best.pt or last.pt)")
    if which == "best" and not best.is_file():
        raise InputError(run, "has no best checkpoint: the run did not validate "
                              "(data.val_fraction 0 or val_every 0); use --which last")
    if which == "last" and not last.is_file():
        raise InputError(run, "has no checkpoints/last.pt")
    return best if which == "best" or (which == "auto" and best.is_file()) else last


def describe_checkpoint(meta: dict[str, Any]) -> str:
    """'<path> (step N)': which weights a prediction or report used."""
    return f"{meta.get('path', '?')} (step {meta.get('step', '?')})"


def load_method(run: str | Path, which: str = "auto", device: str | torch.device = "cpu"):
    """Rebuild the method of a run (or checkpoint file) with its weights, in eval mode.

    Returns (method, meta): meta is the checkpoint without the model and optimizer tensors.
    """
    from contraseg.data.labels import LabelConvention
    from contraseg.models.base import memory_format
    from contraseg.models.registry import build_method, get_entry

    path = find_checkpoint(run, which)
    data = load_checkpoint(path)
    labels = data["label_convention"]  # None for a generator
    num_classes = LabelConvention.from_dict(labels).num_classes if labels else 1
    config = data["config"]
    get_entry(data["method"], (data.get("method_source") or {}).get("module"))
    method = build_method(data["method"], tuple(data["modalities"]), num_classes,
                          config.get("model"), config.get("loss_weights"))
    try:
        method.load_state_dict(data["model"], strict=True)
    except RuntimeError as exc:
        raise InputError(path, f"weights do not fit method {data['method']} "
                               f"({str(exc).splitlines()[0][:160]})") from None
    meta = {k: v for k, v in data.items() if k not in ("model", "optimizer", "rng")}
    meta["path"] = str(path)
    method.to(memory_format=memory_format(method, config.get("channels_last", True)))
    return method.to(device).eval(), meta


def read_init_weights(source: str | Path) -> dict[str, torch.Tensor]:
    """The state dict `--init` starts from: a contraseg run folder or checkpoint (its model),
    or any other torch file of plain tensors (a timm / torchvision state dict, possibly under
    "state_dict" or "model", "module." prefixes dropped). Read with weights_only=True."""
    path = Path(source)
    if path.is_dir():
        return load_checkpoint(find_checkpoint(path))["model"]
    if not path.is_file():
        raise InputError(path, "--init: no such file or run folder")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(path, f"--init: not a readable weights file "
                               f"({str(exc).splitlines()[0][:160]})") from None
    if isinstance(data, dict) and data.get("format") == FORMAT:
        return load_checkpoint(path)["model"]
    while isinstance(data, dict) and len(data) <= 3 and any(
            isinstance(data.get(k), dict) for k in ("state_dict", "model", "module")):
        data = next(data[k] for k in ("state_dict", "model", "module")
                    if isinstance(data.get(k), dict))
    if not isinstance(data, dict) or not data or not all(
            isinstance(v, torch.Tensor) for v in data.values()):
        raise InputError(path, "--init: holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in data.items()}


def load_init(method, init: str | Path, console=None) -> dict:
    """Start `method` from the weights of `init` (transfer learning: a run, a checkpoint or a
    timm / torchvision file; `Method.load_init` copies what fits); returns the summary for
    run.json, refused when nothing fits. `console`: where to say what was loaded."""
    report = method.load_init(read_init_weights(init))
    summary = {"source": str(Path(init).resolve()),
               "loaded": len(report["loaded"]), "skipped": report["skipped"],
               **{k: v for k, v in report.items() if k not in ("loaded", "skipped")}}
    if not report["loaded"]:
        raise InputError(init, "--init: no tensor fits the model "
                               f"({len(report['skipped'])} skipped)")
    if console is not None:
        console.print(f"init: {summary['loaded']} tensors from {init}, "
                      f"{len(summary['skipped'])} skipped")
    return summary
