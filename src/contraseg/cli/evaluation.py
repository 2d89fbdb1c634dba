"""Verbs that score: `evaluate`, `compare`."""

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
    Hd95,
    OverlapOption,
    TtaOption,
    Units,
    UnitsOption,
    WhichOption,
    infer_overrides,
)
from contraseg.errors import ConfigError
from contraseg.utils.jsonio import dumps


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
    units: UnitsOption = Units.voxel,
    hd95: Annotated[Hd95, typer.Option(help="HD95 definition: brats or monai.")] = Hd95.brats,
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
    split: Annotated[str | None, typer.Option(
        help="Score only the test cases of this split: NAME[:k] (`contraseg splits`) or "
             "FILE.json[:k].")] = None,
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
                    "--blend-space": blend_space is not None, "--figures": figures,
                    "--split": split is not None}
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
                          figures=figures, console=err_console, split=split,
                          infer=infer_overrides(overlap, tta, et_min_voxels, blend,
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
    paper: Annotated[str | None, typer.Option(
        help="Set one report beside a paper's printed table (dc-seg-brats2020, dc-seg-wmh, "
             "clfc): each cell, the paper's figure, the difference, and the protocol's "
             "differences.")] = None,
    paper_method: Annotated[str | None, typer.Option(
        help="With --paper: the paper's column to set beside the report (default: the one "
             "named like the run's method, else the paper's own).")] = None,
) -> None:
    """Paired Wilcoxon signed-rank tests of method B against method A (B - A), per subset and
    region and on each case's mean over the subsets (the `average` rows), with Holm-corrected
    p-values (the per-subset rows and the average rows are two separate families).

    With several training seeds per method, each method's score is the mean ± SD over seeds of
    its mean over the cases, and the test ranks each case's score averaged over the method's
    seeds. Every report of one method must hold the same cases.

    Example: `contraseg compare reports/unet reports/rfnet --metric dice`

    Example (seeds): `contraseg compare unet-s0 unet-s1 unet-s2 --vs rfnet-s0 rfnet-s1 rfnet-s2`

    Example (a paper): `contraseg compare reports/dc-seg --paper dc-seg-brats2020`
    """
    from contraseg.evaluation.comparison_table import print_comparison
    from contraseg.evaluation.stats import compare_seeds

    if paper is not None:
        _beside_paper(reports, vs, paper, paper_method, metric, as_json)
        return
    if paper_method is not None:
        raise ConfigError("--paper-method: with --paper only")
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


def _beside_paper(reports: list[Path], vs: list[Path] | None, paper: str,
                  paper_method: str | None, metric: str, as_json: bool) -> None:
    from contraseg.evaluation.paper_compare import compare_with_paper, print_paper_comparison

    if vs or len(reports) != 1:
        raise ConfigError("--paper sets one report beside the paper's table: give one REPORT")
    result = compare_with_paper(reports[0], paper, paper_method, metric)
    if as_json:
        print(dumps(result.to_dict()))
    else:
        print_paper_comparison(result, console)
