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
    preset: Annotated[str | None, typer.Option(
        help="paper (the publication's settings), cpu (real scans on a CPU in an hour), fast "
             "(minutes on the phantom) or tiny (smoke tests). Default: fast, with a warning "
             "on scans that are not the phantom.")] = None,
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
    from contraseg.engine.runs import DEFAULT_PRESET, default_preset, start_training

    if preset is None:  # resuming, the run's own config is used, whatever the preset
        preset = DEFAULT_PRESET if resume else default_preset(data or [])
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


@app.command("reproduce")
@user_errors
def reproduce(
    method: Annotated[str, typer.Argument(help="Method name (see `contraseg methods`).")],
    data: Annotated[Path, typer.Option("--data", help="The labelled dataset of the split.")],
    split: Annotated[str, typer.Option(
        help="A published split (`contraseg splits`): every fold of NAME, or NAME:k alone; or a "
             "split file.")],
    out: Annotated[Path, typer.Option("--out", help="Folder of the folds' runs and reports.")],
    preset: PresetOption = "paper",
    set_: SetOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print every step's command and an estimate of its time and memory "
                          "here (one training step is measured); run nothing.")] = False,
) -> None:
    """A paper's protocol in one command: for each fold of the split, train the preset on its
    parts and score its test cases on every modality subset; then OUT/paper.md sets the mean
    over the folds beside every paper table printed on that split (the paper's figure, the
    difference, and how the protocols differ). Run it again to resume where it stopped.

    Example: `contraseg reproduce dc-seg --data /data/BraTS2020 --split rfnet-brats2020
    --out runs/dcseg-repro`; `--dry-run` first to see the steps and their cost.
    """
    from contraseg.reproduce import dry_run as plan_only
    from contraseg.reproduce import reproduce as run_protocol

    if dry_run:
        for line in plan_only(method, data, split, out, preset=preset,
                              overrides=list(set_ or []),
                              device="cpu" if device == "auto" else device):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        return
    written = run_protocol(method, data, split, out, preset=preset, overrides=list(set_ or []),
                           device=device, console=err_console)
    console.print(f"wrote {written}", highlight=False, soft_wrap=True)
