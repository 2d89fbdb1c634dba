"""Options that several verbs share, declared once."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

# closed sets of values: typer lists them in --help and refuses others before anything runs
# (StrEnum members are the strings themselves for the code below the command line)
Units = StrEnum("Units", ["voxel", "mm"])  # StrEnum's functional form: value = name
Hd95 = StrEnum("Hd95", ["brats", "monai"])
EmptyPolicy = StrEnum("EmptyPolicy", ["brats", "nan"])
Blend = StrEnum("Blend", ["gaussian", "constant"])
BlendSpace = StrEnum("BlendSpace", ["logits", "probabilities"])
ExportFormat = StrEnum("ExportFormat", ["torchscript", "onnx"])
Amp = StrEnum("Amp", ["none", "bf16", "fp16", "auto"])

UnitsOption = Annotated[Units, typer.Option(help="Distance units: voxel (BraTS) or mm.")]

WhichOption = Annotated[str, typer.Option(
    help="auto (best when the run validated, else last), best or last checkpoint, or "
         "minute-M: the weights kept after M minutes of training (keep_every_minutes).")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a setting: key=value (repeat).")]

# inference settings of predict and evaluate (None: the run's own, from its config)
OverlapOption = Annotated[float | None, typer.Option(
    min=0.0, max=0.99, help="Sliding-window overlap (0-1); default: the run's.")]
TtaOption = Annotated[bool | None, typer.Option(
    help="Average over the 8 flips; default: the run's.")]
EtMinOption = Annotated[int | None, typer.Option(
    min=0, help="Predicted ET under this many voxels of a 1 mm grid (500 for BraTS; scaled to "
                "the voxel size, off under a 100 mm field of view) becomes necrosis; 0: off.")]
BlendOption = Annotated[Blend | None, typer.Option(
    help="Window weights: gaussian or constant; default: the run's.")]
BlendSpaceOption = Annotated[BlendSpace | None, typer.Option(
    help="Blend window logits or softmax probabilities (RFNet's released inference averages "
         "probabilities uniformly); default: the run's.")]


def infer_overrides(overlap: float | None, tta: bool | None, et_min_voxels: int | None,
                    blend: Blend | None, blend_space: BlendSpace | None) -> dict:
    """The inference options of predict / evaluate as InferConfig changes (None: the run's)."""
    return {"overlap": overlap, "tta_flips": tta, "et_min_voxels": et_min_voxels,
            "blend": None if blend is None else str(blend),
            "blend_space": None if blend_space is None else str(blend_space)}


# the options of train and pretrain
OutRunOption = Annotated[Path, typer.Option(
    "--out", help="Run folder (config, log, checkpoints).")]
PresetOption = Annotated[str, typer.Option(
    help="paper (the publication's settings), cpu (real scans on a CPU in an hour), fast "
         "(minutes on the phantom) or tiny (smoke tests).")]
ResumeOption = Annotated[bool, typer.Option(help="Continue the run in --out.")]
MaxStepsOption = Annotated[
    int | None, typer.Option(min=0, help="Stop after this many steps in all.")]
MaxMinutesOption = Annotated[
    float | None, typer.Option(min=0, help="Stop after this many minutes.")]
InitOption = Annotated[Path | None, typer.Option(
    help="Start from these weights: a run folder, a contraseg checkpoint, or a local timm / "
         "torchvision Swin state dict (matched by name; mismatches are reported).")]


def init_override(init: Path | None) -> list[str]:
    """`--init PATH` as the `init` setting."""
    return [] if init is None else [f"init={json.dumps(str(init))}"]
