"""Score prediction files against reference files (the `contraseg score` command)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from contraseg.data.io import grid_difference, read_label
from contraseg.data.labels import get_convention, label_values
from contraseg.errors import InputError
from contraseg.evaluation.metrics import METRIC_NAMES, score_label_maps


def score_files(
    pred: str | Path,
    ref: str | Path,
    *,
    labels: str = "brats2023",
    hd95: str = "brats",
    units: str = "voxel",
    empty: str = "brats",
) -> dict:
    """`{"conventions": {...}, "regions": {...}}` for one prediction file against its reference.

    Both files must share a grid (shape and affine); their label values must belong to the
    convention. Spacing comes from the reference's affine (used only with units="mm").
    """
    convention = get_convention(labels)
    pred_vol, ref_vol = read_label(pred), read_label(ref)
    mismatch = grid_difference(pred_vol, ref_vol)
    if mismatch:
        raise InputError(pred, mismatch)
    for volume in (pred_vol, ref_vol):
        problem = convention.unknown_values_problem(label_values(volume.data))
        if problem:
            raise InputError(volume.path, problem)
    return score_label_maps(pred_vol.data, ref_vol.data, convention, spacing=ref_vol.zooms,
                            units=units, hd95_definition=hd95, empty_policy=empty)


def print_scores(result: dict, console: Console) -> None:
    """One row per metric, one column per region, then the conventions in one line."""
    conv = result["conventions"]
    unit = "mm" if conv["units"] == "mm" else "voxels"
    table = Table(title=f"{conv['label_convention']} regions")
    table.add_column("metric")
    for region in result["regions"]:
        table.add_column(region, justify="right")
    for name in METRIC_NAMES:
        label = f"{name} ({unit})" if name in ("hd", "hd95", "assd") else name
        table.add_row(label, *(f"{scores[name]:.4f}" for scores in result["regions"].values()))
    console.print(table)
    policy = conv["empty_policy"]
    console.print(f"HD95: {conv['hd95_definition']} ({conv['hd95']}); empty masks: "
                  f"{policy['name']} policy (both empty -> {policy['both_empty']}, one empty -> "
                  f"distance {policy['one_empty_distance']})", highlight=False)
