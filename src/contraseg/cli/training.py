"""Verbs that train: `train`, `pretrain`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from contraseg.cli.app import app, console, err_console, print_error, user_errors
from contraseg.cli.options import (
    InitOption,
    MaxMinutesOption,
    MaxStepsOption,
    OutRunOption,
    PresetOption,
    ResumeOption,
    SetOption,
    init_override,
)

DataOption = Annotated[list[Path] | None, typer.Option(
    "--data", help="Dataset folder; repeat to train on several.")]


@app.command("train")
@user_errors
def train(
    out: OutRunOption,
    method: Annotated[str | None, typer.Option(
        help="Method name (see `contraseg methods`), or package.module:Class for a method "
             "defined outside contraseg.")] = None,
    data: DataOption = None,
    preset: PresetOption = "fast",
    set_: SetOption = None,
    resume: ResumeOption = False,
    max_steps: MaxStepsOption = None,
    max_minutes: MaxMinutesOption = None,
    folds: Annotated[int | None, typer.Option(
        min=2, help="Patient-wise cross-validation: train every fold into OUT/fold-K.")] = None,
    fold: Annotated[int | None, typer.Option(
        min=0, help="With --folds: train only this fold (0-based).")] = None,
    split: Annotated[str | None, typer.Option(
        help="A published split, NAME[:k] (`contraseg splits`), or a split file FILE.json[:k]: "
             "train and validate on its parts, its test cases held out.")] = None,
    init: InitOption = None,
) -> None:
    """Train a method on one or more datasets; `--resume` continues a stopped or killed run.

    Example: `contraseg train --method unet --data data/phantom --out runs/unet --preset fast
    --set optim.lr=1e-3`. Five-fold cross-validation: add `--folds 5` (or `--folds 5 --fold 2`
    for one fold); the splits are deterministic for the seed and saved in each fold's run.json;
    `contraseg evaluate --run OUT` then scores every case with the fold that held it out.
    Several GPUs or CPU processes: `torchrun --nproc_per_node=2 -m contraseg train ...`.
    A paper's split: `--split rfnet-brats2018:3` (RFNet's third BraTS 2018 split), then
    `contraseg evaluate --split rfnet-brats2018:3` scores its test cases.
    """
    from contraseg.engine.runs import start_training

    chosen = [] if split is None else [f"split={json.dumps(split)}"]
    info = start_training(out, method=method, data=data or [], preset=preset,
                          overrides=[*(set_ or []), *init_override(init), *chosen],
                          resume=resume,
                          max_steps=max_steps, max_minutes=max_minutes, console=err_console,
                          folds=folds, fold=fold)
    if info and info["status"] == "interrupted":
        print_error(f"interrupted at step {info['step']}: continue with `contraseg train --out "
                    f"{out} --resume`")
        raise typer.Exit(130)
    if info:
        console.print(f"run {info['status']} at step {info['step']}: {out}")


@app.command("pretrain")
@user_errors
def pretrain(
    out: OutRunOption,
    method: Annotated[str, typer.Option(
        help="Method whose encoder to pre-train (one that declares a pre-training stage: "
             "swin-moco).")],
    data: Annotated[list[Path] | None, typer.Option(
        "--data", help="Dataset folder (labels not needed); repeat for several.")] = None,
    preset: PresetOption = "fast",
    set_: SetOption = None,
    init: InitOption = None,
    resume: ResumeOption = False,
    max_steps: MaxStepsOption = None,
    max_minutes: MaxMinutesOption = None,
) -> None:
    """Self-supervised pre-training of a method's encoder on unlabeled images.

    Example: `contraseg pretrain --method swin-moco --data /data/parotid --out runs/moco --init
    swin_tiny_patch4_window7_224.pth`, then `contraseg train --method swin-moco --init
    runs/moco --data /data/parotid-labelled --out runs/swin-moco`.
    """
    from contraseg.engine.runs import start_training
    from contraseg.models.registry import pretraining_stage

    stage = None if resume else pretraining_stage(method)
    info = start_training(out, method=stage, data=data or [],
                          preset=preset, overrides=[*(set_ or []), *init_override(init)],
                          resume=resume, max_steps=max_steps, max_minutes=max_minutes,
                          console=err_console)
    if info:
        console.print(f"pre-training {info['status']} at step {info['step']}: {out}")
