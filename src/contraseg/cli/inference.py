"""Verbs that use a trained run: `predict`, `export`, `normal`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from contraseg.cli.app import app, console, err_console, user_errors
from contraseg.cli.options import (
    BlendOption,
    BlendSpaceOption,
    DeviceOption,
    EtMinOption,
    ExportFormat,
    OverlapOption,
    TtaOption,
    WhichOption,
    infer_overrides,
)


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
        overrides=infer_overrides(overlap, tta, et_min_voxels, blend, blend_space),
        console=err_console, labels=labels, save_probabilities=save_probabilities,
        modalities=modalities)
    console.print(f"wrote {written} with {source}", highlight=False, soft_wrap=True)


@app.command("export")
@user_errors
def export(
    run: Annotated[Path, typer.Option("--run", help="Run folder (or a checkpoint file).")],
    out: Annotated[Path, typer.Option("--out", help="The file to write (model.pt, .onnx).")],
    format_: Annotated[ExportFormat, typer.Option(
        "--format", help="torchscript (needs nothing more) or onnx (needs the onnx package).")
    ] = ExportFormat.torchscript,
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
    from contraseg.engine.normal_run import pseudo_normal

    written = pseudo_normal(run, t1, out, which=which, device=device)
    console.print(f"pseudo-normal T1: {written}", highlight=False)
