"""The command line: `contraseg <verb>`. Thin: parse, call the library, print.

Every verb exits 1 with a one-line reason on bad input (no traceback) and writes nothing partial.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from contraseg import __version__
from contraseg.errors import ConfigError, ContrasegError, ContrasegWarning
from contraseg.utils.jsonio import dumps

try:  # recent typer vendors click (typer._click); earlier versions depend on click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions

ClickException = click_exceptions.ClickException
NoArgsIsHelpError = getattr(click_exceptions, "NoArgsIsHelpError", ())  # click >= 8.2

console = Console()
err_console = Console(stderr=True)

# options that several verbs share, declared once
WhichOption = Annotated[str, typer.Option(
    help="auto (best when the run validated, else last), best or last checkpoint, or "
         "minute-M: the weights kept after M minutes of training (keep_every_minutes).")]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
# inference settings of predict and evaluate (None: the run's own, from its config)
OverlapOption = Annotated[float | None, typer.Option(
    min=0.0, max=0.99, help="Sliding-window overlap (0-1); default: the run's.")]
TtaOption = Annotated[bool | None, typer.Option(
    help="Average over the 8 flips; default: the run's.")]
EtMinOption = Annotated[int | None, typer.Option(
    min=0, help="Predicted ET under this many voxels of a 1 mm grid (500 for BraTS; scaled to "
                "the voxel size, off under a 100 mm field of view) becomes necrosis; 0: off.")]
BlendOption = Annotated[str | None, typer.Option(
    help="Window weights: gaussian or constant; default: the run's.")]
BlendSpaceOption = Annotated[str | None, typer.Option(
    help="Blend window logits or softmax probabilities (RFNet's released inference averages "
         "probabilities uniformly); default: the run's.")]


class Anatomy(StrEnum):
    """The synthetic phantoms of `data phantom`."""

    brain = "brain"
    parotid = "parotid"


InitOption = Annotated[Path | None, typer.Option(
    help="Start from these weights: a run folder, a contraseg checkpoint, or a local timm / "
         "torchvision Swin state dict (matched by name; mismatches are reported).")]


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """contraseg's warnings as one yellow line; others as Python prints them."""
    if issubclass(category, ContrasegWarning):
        err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False,
                          soft_wrap=True)
    else:
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


_PYTHON_SHOWWARNING = warnings.showwarning


def print_error(message: str) -> None:
    """One line on stderr: `error: <message>` (the message printed as is, never as markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class OneLineErrors(TyperGroup):
    """The root command: a usage error (unknown option, bad value, missing argument) is one
    line on stderr and exit 1, like every other mistake, instead of click's box and exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        warnings.showwarning = _show_warning
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            code, message = 130, "interrupted"
        except ClickException as exc:
            if isinstance(exc, NoArgsIsHelpError):  # `contraseg` alone: its help, no error
                console.print(exc.format_message(), highlight=False, markup=False)
                code, message = 0, None
            else:
                where = getattr(getattr(exc, "ctx", None), "command_path", "contraseg")
                code, message = 1, f"{where}: {exc.format_message()}"
            if message:
                print_error(message)
        else:
            code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=OneLineErrors,
    name="contraseg",
    help="Contrastive multimodal MRI segmentation: data, training, inference, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
data_app = typer.Typer(help="Datasets: synthetic phantom, checks.", no_args_is_help=True)
app.add_typer(data_app, name="data")

F = TypeVar("F", bound=Callable)


def user_errors(func: F) -> F:
    """Turn a ContrasegError or OSError into one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            func(*args, **kwargs)
        except ContrasegError as exc:
            message = str(exc)
        except OSError as exc:  # a folder that is a file, no permission, disk full, ...
            message = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        else:
            return None
        print_error(message)
        raise typer.Exit(1)

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        console.print(f"contraseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Contrastive multimodal MRI segmentation."""


@data_app.command("phantom")
@user_errors
def data_phantom(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset into.")],
    cases: Annotated[int, typer.Option(min=1, help="Number of subjects.")] = 8,
    size: Annotated[int | None, typer.Option(
        min=16, help="brain: edge of the 1 mm cube (default 96); parotid: in-plane voxels over "
                     "192 mm (default 384: 0.5 mm), always 16 slices of 4 mm.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data.")] = 0,
    anatomy: Annotated[Anatomy, typer.Option(
        help="brain: T1, T1c, T2, FLAIR with a glioma (BraTS 2023 layout); parotid: STIR, T1, "
             "T2 with a parotid tumour (contraseg.json manifest).")] = Anatomy.brain,
    overwrite: Annotated[bool, typer.Option(help="Replace existing case folders.")] = False,
) -> None:
    """Write a synthetic multimodal MRI dataset: brain gliomas (default) or parotid tumours.

    brain: each case has T1, T1c, T2, FLAIR, a segmentation (1 necrosis, 2 edema, 3 enhancing)
    and the same brain without its tumour (`-normal-t1n`, for the CLFC normal-appearance
    network). parotid: axial STIR, T1 and T2 of the neck with thick slices, a benign or
    malignant tumour in one parotid gland (label 1 `tumour`), and a manifest naming the
    modalities stir, t1, t2 and each case's tumour kind.

    Examples: `contraseg data phantom --out data/phantom --cases 8 --size 96 --seed 0`;
    `contraseg data phantom --anatomy parotid --out data/parotid --cases 12 --size 128`
    """
    from contraseg.data.parotid_phantom import (
        DEFAULT_SIZE,
        normalise_size,
        spacing_of,
        write_parotid_phantom,
    )
    from contraseg.data.phantom import write_phantom
    from contraseg.utils.progress import progress_bar

    if anatomy is Anatomy.parotid:
        shape = normalise_size(size or DEFAULT_SIZE)
        writer, shown = write_parotid_phantom, (
            f"{'x'.join(map(str, shape))}, "
            f"{'x'.join(f'{d:g}' for d in spacing_of(shape))} mm")
    else:
        shape, writer = size or 96, write_phantom
        shown = f"{shape}^3"
    with progress_bar() as bar:
        task = bar.add_task(f"{anatomy.value} phantom", total=cases)
        folders = writer(out, cases=cases, size=shape, seed=seed, overwrite=overwrite,
                         progress=lambda _: bar.advance(task))
    console.print(f"wrote {len(folders)} {anatomy.value} cases ({shown}, seed {seed}) to {out}")


@data_app.command("check")
@user_errors
def data_check(
    folder: Annotated[Path, typer.Argument(help="Dataset folder.")],
    labels: Annotated[
        str | None, typer.Option(help="Label convention (brats2015|brats2020|brats2023|msd).")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="A contraseg.json manifest describing the dataset.")
    ] = None,
    resample_to: Annotated[
        str | None,
        typer.Option(help="Modality whose grid the others are resampled onto, instead of "
                          "reporting a geometry mismatch."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """List the cases found, their modalities, shapes, spacings and label values, and every
    problem (missing file, shape/affine mismatch, NaN voxels, unknown or empty labels, 4D
    images). Exits 1 if there is any problem.

    Example: `contraseg data check data/phantom`
    """
    from contraseg.data.check import check_dataset
    from contraseg.data.layouts import discover
    from contraseg.utils.progress import progress_bar

    spec = discover(folder, labels=labels, manifest=manifest)
    with progress_bar(transient=True) as bar:
        task = bar.add_task("check", total=len(spec.cases))
        report = check_dataset(spec, resample_to=resample_to,
                               progress=lambda _: bar.advance(task))
    if as_json:
        print(dumps(report.to_dict()))
    else:
        from contraseg.data.check import print_report

        print_report(report, console)
    if report.problems:
        raise typer.Exit(1)


@app.command("score")
@user_errors
def score(
    pred: Annotated[Path, typer.Option("--pred", help="Predicted label map (NIfTI).")],
    ref: Annotated[Path, typer.Option("--ref", help="Reference label map (NIfTI).")],
    labels: Annotated[str, typer.Option(help="Label convention of both maps.")] = "brats2023",
    hd95: Annotated[
        str, typer.Option(help="HD95 definition: brats (pooled, = MedPy) or monai (max directed).")
    ] = "brats",
    units: Annotated[str, typer.Option(help="Distance units: voxel (BraTS) or mm.")] = "voxel",
    empty: Annotated[
        str, typer.Option(help="Empty-mask policy: brats (legacy BraTS values) or nan.")
    ] = "brats",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Every metric for every region of one prediction against its reference.

    Example: `contraseg score --pred pred.nii.gz --ref seg.nii.gz --labels brats2023 --json`
    """
    from contraseg.evaluation.score import print_scores, score_files

    result = score_files(pred, ref, labels=labels, hd95=hd95, units=units, empty=empty)
    if as_json:
        print(dumps(result))
    else:
        print_scores(result, console)


@app.command("train")
@user_errors
def train(
    out: Annotated[Path, typer.Option("--out", help="Run folder (config, log, checkpoints).")],
    method: Annotated[
        str | None, typer.Option(help="Method name (see `contraseg methods`).")] = None,
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="Dataset folder; repeat to train on several."),
    ] = None,
    preset: Annotated[str, typer.Option(
        help="paper (the publication's settings), cpu (real scans on a CPU in an hour), fast "
             "(minutes on the phantom) or tiny (smoke tests).")] = (
        "fast"),
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: key=value (repeat).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    max_steps: Annotated[
        int | None, typer.Option(min=0, help="Stop after this many steps in all.")] = None,
    max_minutes: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many minutes.")] = None,
    folds: Annotated[int | None, typer.Option(
        min=2, help="Patient-wise cross-validation: train every fold into OUT/fold-K.")] = None,
    fold: Annotated[int | None, typer.Option(
        min=0, help="With --folds: train only this fold (0-based).")] = None,
    init: InitOption = None,
) -> None:
    """Train a method on one or more datasets; `--resume` continues a stopped or killed run.

    Example: `contraseg train --method unet --data data/phantom --out runs/unet --preset fast
    --set optim.lr=1e-3`. Five-fold cross-validation: add `--folds 5` (or `--folds 5 --fold 2`
    for one fold); the splits are deterministic for the seed and saved in each fold's run.json;
    `contraseg evaluate --run OUT` then scores every case with the fold that held it out.
    Several GPUs or CPU processes: `torchrun --nproc_per_node=2 -m contraseg train ...`.
    """
    from contraseg.engine.runs import start_training

    info = start_training(out, method=method, data=data or [], preset=preset,
                          overrides=[*(set_ or []), *_init_override(init)], resume=resume,
                          max_steps=max_steps, max_minutes=max_minutes, console=err_console,
                          folds=folds, fold=fold)
    if info and info["status"] == "interrupted":
        print_error(f"interrupted at step {info['step']}: continue with `contraseg train --out "
                    f"{out} --resume`")
        raise typer.Exit(130)
    if info:
        console.print(f"run {info['status']} at step {info['step']}: {out}")


def _init_override(init: Path | None) -> list[str]:
    return [] if init is None else [f"init={json.dumps(str(init))}"]


@app.command("pretrain")
@user_errors
def pretrain(
    out: Annotated[Path, typer.Option("--out", help="Run folder (config, log, checkpoints).")],
    method: Annotated[str, typer.Option(help="Method whose encoder to pre-train (swin-moco).")],
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="Dataset folder (labels not needed); repeat for several."),
    ] = None,
    preset: Annotated[str, typer.Option(
        help="paper, cpu, fast or tiny (as train).")] = "fast",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: key=value (repeat).")
    ] = None,
    init: InitOption = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out.")] = False,
    max_steps: Annotated[
        int | None, typer.Option(min=0, help="Stop after this many steps in all.")] = None,
    max_minutes: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many minutes.")] = None,
) -> None:
    """Self-supervised pre-training of a method's encoder on unlabeled images.

    Example: `contraseg pretrain --method swin-moco --data /data/parotid --out runs/moco --init
    swin_tiny_patch4_window7_224.pth`, then `contraseg train --method swin-moco --init
    runs/moco --data /data/parotid-labelled --out runs/swin-moco`.
    """
    from contraseg.engine.runs import start_training
    from contraseg.models.registry import list_methods

    stage = f"{method}-pretrain"
    stages = list_methods(kind="pretraining")
    if stage not in stages:
        names = ", ".join(m.removesuffix("-pretrain") for m in stages)
        raise ConfigError(f"--method {method} has no pre-training stage (methods with one: "
                          f"{names})")
    info = start_training(out, method=None if resume else stage, data=data or [],
                          preset=preset, overrides=[*(set_ or []), *_init_override(init)],
                          resume=resume, max_steps=max_steps, max_minutes=max_minutes,
                          console=err_console)
    if info:
        console.print(f"pre-training {info['status']} at step {info['step']}: {out}")


@app.command("predict")
@user_errors
def predict(
    run: Annotated[Path, typer.Option("--run", help="Run folder (or a checkpoint file).")],
    out: Annotated[str, typer.Option(
        "--out", help="Output .nii.gz, or a folder (existing, or ending in '/'): "
                      "<folder>/<case>.nii.gz; with --data, the folder of every case.")],
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="NAME=FILE pairs (t1c=a.nii.gz) or one case folder."),
    ] = None,
    t1: Annotated[Path | None, typer.Option(help="T1 image.")] = None,
    t1c: Annotated[Path | None, typer.Option(help="T1c (contrast-enhanced T1) image.")] = None,
    t2: Annotated[Path | None, typer.Option(help="T2 image.")] = None,
    flair: Annotated[Path | None, typer.Option(help="FLAIR image.")] = None,
    data: Annotated[
        Path | None, typer.Option(help="Batch mode: segment every case of this dataset folder.")
    ] = None,
    resample_to: Annotated[
        str | None, typer.Option(help="Resample the inputs onto this modality's grid.")] = None,
    labels: Annotated[
        str | None,
        typer.Option(help="Label values to write (brats2020, brats2023, ...); default: the "
                          "input folder's convention, else the run's."),
    ] = None,
    modalities: Annotated[str | None, typer.Option(
        help="Use only these of a case folder's or dataset's images (flair,t1c).")] = None,
    save_probabilities: Annotated[bool, typer.Option(
        "--save-probabilities", help="Also write <out>_probabilities.nii.gz (X, Y, Z, C).")
    ] = False,
    which: WhichOption = "auto",
    device: DeviceOption = "auto",
    overlap: OverlapOption = None,
    tta: TtaOption = None,
    et_min_voxels: EtMinOption = None,
    blend: BlendOption = None,
    blend_space: BlendSpaceOption = None,
) -> None:
    """Segment a patient from any subset of the run's modalities, matched by name.

    The output is written on the input's grid and affine, with the dataset's raw label values.

    Examples: `contraseg predict --run runs/unet --out seg.nii.gz --t1c a.nii.gz --flair
    b.nii.gz`; `contraseg predict --run runs/unet --out seg.nii.gz data/BraTS-GLI-00001-000`;
    `contraseg predict --run runs/unet --data /data/test --out predictions/`; a
    cross-validation folder (`train --folds`) as --run averages its folds' probabilities;
    `--modalities flair,t1c` predicts a whole folder from that subset
    """
    from contraseg.engine.predict import run_predict

    written, source = run_predict(
        run, out, inputs=inputs or [], named={"t1": t1, "t1c": t1c, "t2": t2, "flair": flair},
        data=data, resample_to=resample_to, which=which, device=device,
        overrides=_infer_overrides(overlap, tta, et_min_voxels, blend, blend_space),
        console=err_console, labels=labels, save_probabilities=save_probabilities,
        modalities=modalities)
    console.print(f"wrote {written} with {source}", highlight=False, soft_wrap=True)


def _infer_overrides(overlap: float | None, tta: bool | None, et_min_voxels: int | None,
                     blend: str | None, blend_space: str | None) -> dict:
    """The inference options of predict / evaluate as InferConfig changes (None: the run's)."""
    return {"overlap": overlap, "tta_flips": tta, "et_min_voxels": et_min_voxels,
            "blend": blend, "blend_space": blend_space}


@app.command("evaluate")
@user_errors
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="Labelled dataset folder.")],
    out: Annotated[Path, typer.Option("--out", help="Report folder.")],
    run: Annotated[Path | None, typer.Option(
        "--run", help="Run folder (or a checkpoint file) to evaluate.")] = None,
    pred: Annotated[Path | None, typer.Option(
        "--pred", help="Instead of --run: a folder of <case>.nii.gz predictions made by any "
                       "tool, scored with the same protocol.")] = None,
    pred_labels: Annotated[str | None, typer.Option(
        help="With --pred: the label convention the predictions are written in (default: "
             "the dataset's).")] = None,
    subsets: Annotated[
        str, typer.Option(help="all, full, singles, or names like flair,t1c+flair.")] = "all",
    labels: Annotated[str | None, typer.Option(help="Label convention of --data.")] = None,
    units: Annotated[str, typer.Option(help="Distance units: voxel (BraTS) or mm.")] = "voxel",
    hd95: Annotated[str, typer.Option(help="HD95 definition: brats or monai.")] = "brats",
    which: WhichOption = "auto",
    device: DeviceOption = "auto",
    overlap: OverlapOption = None,
    tta: TtaOption = None,
    et_min_voxels: EtMinOption = None,
    blend: BlendOption = None,
    blend_space: BlendSpaceOption = None,
    overlays: Annotated[int, typer.Option(min=0, help="Cases with overlay pictures.")] = 2,
    figures: Annotated[bool, typer.Option(
        "--figures", help="Also draw the PCA of disentangled representations (dc-seg).")] = False,
) -> None:
    """Score a run on every modality subset: metrics.csv (case, subset, region, metrics), a
    summary in the layout of DC-Seg's Table 1 (Markdown and HTML with a heatmap) and overlays.
    With --figures, methods with disentangled representations (dc-seg) also get
    figures/representations.png: their anatomical maps and modality codes projected by PCA,
    like DC-Seg's Figure 3. The weights are the run's best checkpoint when it validated, else
    its last (`--which`); inference settings default to the run's and the report records them.

    With --pred instead of --run, another tool's predictions (one <case>.nii.gz per labelled
    case, on the case's grid) are scored the same way on the full subset, so `contraseg
    compare` tests them against a run's report.

    Example: `contraseg evaluate --run runs/unet --data data/test --out reports/unet`;
    RFNet's released inference: `... --blend constant --blend-space probabilities`;
    nnU-Net's predictions: `contraseg evaluate --pred nnunet-out/ --data data/test --out
    reports/nnunet`
    """
    if (run is None) == (pred is None):
        raise ConfigError("give --run (a contraseg run) or --pred (a folder of predictions)")
    if pred is not None:
        run_only = {"--subsets": subsets != "all", "--which": which != "auto",
                    "--device": device != "auto", "--overlap": overlap is not None,
                    "--tta": tta is not None, "--blend": blend is not None,
                    "--blend-space": blend_space is not None, "--figures": figures}
        if given := [name for name, used in run_only.items() if used]:
            raise ConfigError(f"{', '.join(given)}: for --run only (--pred scores the files "
                              "as they are)")
        from contraseg.engine.score_folder import evaluate_predictions

        report = evaluate_predictions(pred, data, out, labels=labels, pred_labels=pred_labels,
                                      units=units, hd95=hd95, et_min_voxels=et_min_voxels,
                                      overlays=overlays, console=err_console)
        console.print(f"report: {report}")
        return
    if pred_labels is not None:
        raise ConfigError("--pred-labels: for --pred only")
    from contraseg.engine.evaluate import evaluate_run

    report = evaluate_run(run, data, out, subsets=subsets, which=which, device=device,
                          labels=labels, units=units, hd95=hd95, overlays=overlays,
                          figures=figures, console=err_console,
                          infer=_infer_overrides(overlap, tta, et_min_voxels, blend,
                                                 blend_space))
    console.print(f"report: {report}")


class _CompareCommand(typer.core.TyperCommand):
    """`compare`'s parser: every path after `--vs`, up to the next option, is one of method B's
    reports, so `--vs B1 B2 B3` reads as `--vs B1 --vs B2 --vs B3` (and not B2, B3 as A's)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        rewritten, state = [], ""
        for index, arg in enumerate(args):
            if arg == "--":
                rewritten += args[index:]
                break
            if state == "value":  # the value of an explicit --vs
                rewritten.append(arg)
                state = "more"
            elif state == "more" and not arg.startswith("-"):
                rewritten += ["--vs", arg]
            else:
                rewritten.append(arg)
                state = "value" if arg == "--vs" else ""
        return super().parse_args(ctx, rewritten)


@app.command("compare", cls=_CompareCommand)
@user_errors
def compare(
    reports: Annotated[list[Path], typer.Argument(
        help="Report folders (or metrics.csv): A then B; with --vs, method A's reports, one per "
             "training seed.", metavar="REPORT", show_default=False)],
    vs: Annotated[list[Path] | None, typer.Option(
        "--vs", help="Method B's reports, one per training seed (`--vs B1 B2` or `--vs B1 "
                     "--vs B2`); the seed counts of A and B may differ.",
        show_default=False)] = None,
    metric: Annotated[str, typer.Option(help="Metric column to compare.")] = "dice",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Paired Wilcoxon signed-rank tests of method B against method A (B - A), per subset and
    region and on each case's mean over the subsets (the `average` rows), with Holm-corrected
    p-values (the per-subset rows and the average rows are two separate families).

    With several training seeds per method, each method's score is the mean ± SD over seeds of
    its mean over the cases, and the test ranks each case's score averaged over the method's
    seeds. Every report of one method must hold the same cases.

    Example: `contraseg compare reports/unet reports/rfnet --metric dice`

    Example (seeds): `contraseg compare unet-s0 unet-s1 unet-s2 --vs rfnet-s0 rfnet-s1 rfnet-s2`
    """
    from contraseg.evaluation.stats import compare_seeds, print_comparison

    if vs:
        reports_a, reports_b = reports, vs
    elif len(reports) == 2:
        reports_a, reports_b = reports[:1], reports[1:]
    else:
        raise ConfigError(f"compare needs two reports (A B), or A's reports then B's after --vs; "
                          f"got {len(reports)} report(s) and no --vs")
    result = compare_seeds(reports_a, reports_b, metric=metric)
    if as_json:
        print(dumps(result.to_dict()))
    else:
        print_comparison(result, console)


@app.command("export")
@user_errors
def export(
    run: Annotated[Path, typer.Option("--run", help="Run folder (or a checkpoint file).")],
    out: Annotated[Path, typer.Option("--out", help="The file to write (model.pt, .onnx).")],
    format_: Annotated[str, typer.Option(
        "--format", help="torchscript (needs nothing more) or onnx (needs the onnx package).")
    ] = "torchscript",
    which: WhichOption = "auto",
) -> None:
    """Export a run's network (one window: preprocessed image and availability in, logits
    out) as TorchScript or ONNX, with its modalities, classes, window and preprocessing in the
    file's metadata. The pipeline around it (preprocessing, sliding window, back to the input
    grid) stays contraseg's: `predict`, or `contraseg.Segmenter` in Python.

    Example: `contraseg export --run runs/unet --out unet.pt`; then
    `torch.jit.load("unet.pt")(image, available)`.
    """
    from contraseg.engine.export import export_run

    written = export_run(run, out, format_, which)
    console.print(f"wrote {written} ({format_})", highlight=False, soft_wrap=True)


@app.command("methods")
def methods() -> None:
    """List the registered methods, their presets and their measured minimum useful budget.

    The budget: after how many minutes and steps of its `cpu` preset on a CPU a method
    reaches the plain MONAI recipe's 25-minute Dice on real scans (the README's "Results on
    real scans"); "-" where it was not measured.

    Example: `contraseg methods`
    """
    from rich.table import Table

    from contraseg.engine.config import preset_names
    from contraseg.models.budgets import load_budgets
    from contraseg.models.registry import get_entry, list_methods

    budgets = load_budgets()
    table = Table("method", "presets", "useful after (cpu preset)", "what it is",
                  box=None, pad_edge=False)
    for name in list_methods():
        doc = (get_entry(name).cls.__doc__ or "").strip().splitlines()
        budget = budgets.get(name)
        table.add_row(name, ", ".join(preset_names(name)),
                      budget.describe() if budget else "-", doc[0] if doc else "")
    console.print(table, highlight=False)


@app.command("normal")
@user_errors
def normal(
    run: Annotated[Path, typer.Option("--run", help="A generator run (introvae).")],
    t1: Annotated[Path, typer.Option("--t1", help="The case's T1 (or T1c when it has no T1).")],
    out: Annotated[Path, typer.Option("--out", help="Output .nii.gz (the case's grid).")],
    which: WhichOption = "auto",
    device: DeviceOption = "auto",
) -> None:
    """Write the pseudo-normal T1 of a case: what its brain looks like without the tumour.

    The generator (an IntroVAE trained on healthy T1) reconstructs the T1 slice by slice; the
    result is written on the T1's grid and affine, in z-scored intensities.

    Example: `contraseg normal --run runs/introvae --t1 case-t1n.nii.gz --out pseudo.nii.gz`
    """
    from contraseg.engine.generator import pseudo_normal

    written = pseudo_normal(run, t1, out, which=which, device=device)
    console.print(f"pseudo-normal T1: {written}", highlight=False)


@app.command("demo")
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo writes.")] = (
        Path("demo-out")
    ),
    cases: Annotated[int, typer.Option(min=2, help="Training phantoms.")] = 12,
    test_cases: Annotated[int, typer.Option(min=1, help="Held-out test phantoms.")] = 4,
    size: Annotated[int, typer.Option(min=32, help="Phantom volume edge, voxels.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    method: Annotated[
        str | None, typer.Option(help="Method to train (default: the best available).")
    ] = None,
    max_minutes: Annotated[
        float | None, typer.Option(min=0, help="Cap the training time.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: key=value (repeat).")
    ] = None,
) -> None:
    """The whole loop on the synthetic phantom: generate, check, train the fast preset of the
    best method that fits the CPU budget (unet), evaluate all 15 modality subsets on held-out
    phantoms, write an HTML report. About 4.5 minutes on 2 CPU cores.

    Example: `contraseg demo --out demo-out`
    """
    from contraseg.demo import run_demo

    run_demo(out, cases=cases, test_cases=test_cases, size=size, seed=seed, method=method,
             max_minutes=max_minutes, overrides=set_ or [], console=console)


@app.command("bench")
@user_errors
def bench(
    method: Annotated[
        str | None, typer.Option(help="Time this method: training step and inference.")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto (with --method).")] = "cpu",
    patch: Annotated[int | None, typer.Option(help="Cubic patch edge (default: preset).")] = None,
    batch: Annotated[int | None, typer.Option(help="Batch size (default: preset).")] = None,
    amp: Annotated[str, typer.Option(help="none or bf16 (fp16 on CUDA).")] = "none",
    preset: Annotated[str, typer.Option(help="Preset the method is built from.")] = "fast",
    subsets: Annotated[
        bool, typer.Option(help="Also time all 15 subsets in one pass (slow on a CPU).")
    ] = True,
    infer: Annotated[
        bool, typer.Option(help="Time inference on one case (--no-infer: training only).")
    ] = True,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", help="metrics, phantom, preprocess or loader (repeat; "
                     "default: the first three). loader: the data pipeline of --method's "
                     "--preset (default unet) with 0, 1, 2 workers."),
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Runs per timing; the median is kept.")] = 3,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting of the preset: key=value (repeat)."),
    ] = None,
    model_step_ms: Annotated[
        float | None,
        typer.Option(min=0, help="loader: also how long a step waits for its batch when the "
                     "model takes this many ms per step off the CPU (as on a GPU)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Timings as JSON. With `--method`: training step time and voxels/s, inference on one
    240x240x155 case (all modalities, and all 15 subsets in one pass), peak memory, parameter
    count. Without: the foundation pieces (metrics, phantom, preprocessing). `--target loader`:
    patches per second of the training data pipeline alone (cache reads, augmentation) for
    --method's --preset with 0, 1 and 2 workers, beside as many plain processes making the same
    batches (the machine's ceiling), and peak memory.

    Example: `contraseg bench --method rfnet --device cpu --patch 64 --batch 2 --json`;
    `contraseg bench --method dc-seg --preset paper --set model.checkpointing=true --no-infer`;
    `contraseg bench --target loader --method unet --preset fast --json`
    """
    from contraseg.bench import DEFAULT_TARGETS, run_bench, run_method_bench

    if method is not None and not target:
        result = run_method_bench(method, device=device, patch=patch, batch=batch, amp=amp,
                                  preset=preset, steps=repeats, subsets=subsets,
                                  infer=infer, overrides=list(overrides or []))
    else:
        result = run_bench(list(target or DEFAULT_TARGETS), repeats, method=method or "unet",
                           preset=preset, overrides=list(overrides or []),
                           model_step_ms=model_step_ms)
    if as_json:
        print(dumps(result))
        return
    results = {method: result["results"]} if method and not target else result["results"]
    for name, figures in results.items():
        for key, value in figures.items():
            if isinstance(value, dict) and "median_s" in value:
                console.print(f"{name:<11} {key:<26} median {value['median_s']:.4f} s "
                              f"({len(value['runs_s'])} runs)")
        for count, loader in figures.get("workers", {}).items():
            pss = loader.get("peak_tree_pss_mb")
            ceiling = loader.get("side_by_side")
            console.print(f"{name:<11} {count} workers {loader['patches_per_s']:>8.1f} patches/s "
                          f"(x{loader['speedup_vs_0']:.2f})"
                          + (f", {ceiling['patches_per_s']:.1f} side by side"
                             if ceiling else "")
                          + (f", a step waits {loader['wait_per_step_ms']['mean']:.1f} ms"
                             if "wait_per_step_ms" in loader else "")
                          + (f", peak {pss:.0f} MiB (PSS)" if pss is not None else ""))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
