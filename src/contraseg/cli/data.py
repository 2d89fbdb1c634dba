"""Verbs on data: `data phantom`, `data check`, `score`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from contraseg.cli.app import app, console, data_app, user_errors
from contraseg.cli.options import EmptyPolicy, Hd95, Units, UnitsOption
from contraseg.utils.jsonio import dumps


class Anatomy(StrEnum):
    """The synthetic phantoms of `data phantom`."""

    brain = "brain"
    parotid = "parotid"


InitOption = Annotated[Path | None, typer.Option(
    help="Start from these weights: a run folder, a contraseg checkpoint, or a local timm / "
         "torchvision Swin state dict (matched by name; mismatches are reported).")]


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
        Hd95, typer.Option(help="HD95 definition: brats (pooled, = MedPy) or monai (max directed).")
    ] = Hd95.brats,
    units: UnitsOption = Units.voxel,
    empty: Annotated[
        EmptyPolicy, typer.Option(help="Empty-mask policy: brats (legacy BraTS values) or nan.")
    ] = EmptyPolicy.brats,
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
