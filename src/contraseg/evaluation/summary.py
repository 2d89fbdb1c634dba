"""DC-Seg Table 1 style summaries of a report's rows, and how their values are written.

Aggregation (stated in every report, see :data:`AGGREGATION`): a table cell is the mean over
cases of the per-case values of one subset and region, NaN values skipped, with the sample
standard deviation (ddof=1, NaN below two values); the last row ("average") is the unweighted
mean of the subset means, as in DC-Seg's Table 1. Ratio metrics (Dice, IoU, sensitivity, ...)
are shown in percent, distances in the units the conventions state. The heatmap is drawn with
matplotlib's object API (no pyplot, no display, no global backend switch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from contraseg.data.layouts import CANONICAL_ORDER
from contraseg.errors import ConfigError
from contraseg.evaluation.metrics_csv import metric_columns
from contraseg.evaluation.protocol import (
    Subset,
    all_subsets,
    subset_from_name,
    subset_markers,
    subset_name,
)
from contraseg.utils.figures import save_png
from contraseg.utils.jsonio import json_safe

RATIO_METRICS = ("dice", "iou", "sensitivity", "specificity", "precision", "vs", "case_miou",
                 "case_mpa")
# per-case metrics over every class (the same value on each region's row): one column
CLASS_METRICS = {"case_miou": "mIoU", "case_mpa": "MPA"}
ALL_CLASSES = "all classes"
DISTANCE_METRICS = ("hd", "hd95", "assd")
POSTPROC_SUFFIX = "_postproc"
AGGREGATION = (
    "Each cell is the mean over cases of one subset and region (NaN values skipped) and, after "
    "'±', the sample standard deviation (ddof=1); summary.json holds each cell's case count n. "
    "The 'average' row is the unweighted mean of the subset means (DC-Seg Table 1). Ratio metrics "
    "are shown in percent (x100)."
)



@dataclass(frozen=True)
class SummaryRow:
    """One row of a summary table: a subset (or the average over subsets) across regions."""

    name: str
    subset: Subset | None
    markers: str
    mean: dict[str, float]
    std: dict[str, float]
    n: dict[str, int]
    # *_postproc tables: cases whose value the post-processing changed (the average row: the
    # subset rows' sum)
    changed: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SummaryTable:
    """DC-Seg Table 1 layout: a row per subset (all_subsets order), a column per region, and the
    mean over subsets last (`average`, whose std is that of the subset means)."""

    metric: str
    modalities: tuple[str, ...]
    regions: tuple[str, ...]
    n_cases: int
    rows: tuple[SummaryRow, ...]
    average: SummaryRow

    def records(self) -> list[SummaryRow]:
        """The subset rows followed by the average row."""
        return [*self.rows, self.average]

    def to_dict(self) -> dict:
        """JSON-ready form (NaN becomes null)."""
        rows = [
            {"name": r.name, "markers": r.markers, "mean": r.mean, "std": r.std, "n": r.n,
             **({"changed_by_postprocessing": r.changed} if r.changed else {})}
            for r in self.records()
        ]
        return json_safe({"metric": self.metric, "modalities": list(self.modalities),
                          "regions": list(self.regions), "n_cases": self.n_cases, "rows": rows})


def _stats(values: list[float]) -> tuple[float, float, int]:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    mean = float(arr.mean()) if arr.size else math.nan
    std = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
    return mean, std, int(arr.size)


def _summary_row(name, subset, markers, values: Mapping[str, list[float]], regions) -> SummaryRow:
    stats = {region: _stats(values.get(region, [])) for region in regions}
    return SummaryRow(
        name, subset, markers,
        mean={r: s[0] for r, s in stats.items()},
        std={r: s[1] for r, s in stats.items()},
        n={r: s[2] for r, s in stats.items()},
    )


def _group(rows, metric, mods) -> dict[Subset, dict[str, list[float]]]:
    groups: dict[Subset, dict[str, list[float]]] = {}
    for row in rows:
        subset = subset_from_name(str(row["subset"]), mods)
        value = row.get(metric)
        value = math.nan if value is None else float(value)
        groups.setdefault(subset, {}).setdefault(str(row["region"]), []).append(value)
    return groups


def summary_table(
    rows: Sequence[Mapping],
    metric: str = "dice",
    modalities: Sequence[str] = CANONICAL_ORDER,
    regions: Sequence[str] | None = None,
) -> SummaryTable:
    """Mean (and std) over cases of `metric` per subset and region, plus the mean over subsets.

    Only subsets present in the rows appear, in :func:`all_subsets` order of `modalities`
    (default: the canonical t1, t1c, t2, flair, as every run orders its channels); regions are taken
    in first-seen order unless given. Raises ConfigError for no rows, an absent metric or a
    subset name that is not made of `modalities`.
    """
    if not rows:
        raise ConfigError("there are no metric rows to summarise")
    if not any(metric in row for row in rows):
        raise ConfigError(f"metric '{metric}' is not among {', '.join(metric_columns(rows))}")
    mods = tuple(modalities)
    regions = tuple(regions or dict.fromkeys(str(r["region"]) for r in rows))
    groups = _group(rows, metric, mods)
    table_rows = tuple(
        _summary_row(subset_name(s), s, subset_markers(s, mods), groups[s], regions)
        for s in all_subsets(mods) if s in groups
    )
    subset_means = {r: [row.mean[r] for row in table_rows] for r in regions}
    average = _summary_row("average", None, "", subset_means, regions)
    if metric.endswith(POSTPROC_SUFFIX) and any(_base(metric) in row for row in rows):
        table_rows, average = _with_changes(rows, metric, mods, table_rows, average)
    n_cases = len({str(row["case"]) for row in rows})
    return SummaryTable(metric, mods, regions, n_cases, table_rows, average)


def _differs(a: object, b: object) -> bool:
    a, b = (math.nan if v is None else float(v) for v in (a, b))
    return not (a == b or (math.isnan(a) and math.isnan(b)))


def _with_changes(rows, metric, mods, table_rows, average):
    """Count, per cell of a *_postproc table, the cases whose value differs from the raw one."""
    counts: dict[tuple[Subset, str], int] = {}
    for row in rows:
        if _differs(row.get(metric), row.get(_base(metric))):
            key = (subset_from_name(str(row["subset"]), mods), str(row["region"]))
            counts[key] = counts.get(key, 0) + 1
    table_rows = tuple(replace(r, changed={region: counts.get((r.subset, region), 0)
                                           for region in r.mean}) for r in table_rows)
    total = {region: sum(r.changed[region] for r in table_rows) for region in average.mean}
    return table_rows, replace(average, changed=total)


# ---------------------------------------------------------------------------------------------
# Formatting shared by Markdown and HTML


def _base(metric: str) -> str:
    return metric.removesuffix(POSTPROC_SUFFIX)


def metric_label(metric: str, units: str = "voxel") -> str:
    """Heading of a metric: 'Dice (%)', 'HD95 (voxel)', 'Dice after post-processing (%)'."""
    base = _base(metric)
    name = {"dice": "Dice", "iou": "IoU", "vs": "VS", **CLASS_METRICS}.get(base, base.upper())
    if base in ("sensitivity", "specificity", "precision"):
        name = base.capitalize()
    if metric.endswith(POSTPROC_SUFFIX):
        name += " after post-processing"
    unit = "%" if base in RATIO_METRICS else units if base in DISTANCE_METRICS else ""
    return f"{name} ({unit})" if unit else name


def format_value(metric: str, value: float) -> str:
    """A table number: ratios in percent with 2 decimals, others with 2 decimals; NaN is '-'."""
    if value is None or math.isnan(value):
        return "-"
    scale = 100.0 if _base(metric) in RATIO_METRICS else 1.0
    return f"{value * scale:.2f}"


def table_cells(table: SummaryTable) -> tuple[list[str], list[list[str]]]:
    """Header and body of a summary table: one marker column per modality, subset, regions."""
    header = [*table.modalities, "subset", *table.regions]
    body = []
    for row in table.records():
        marks = list(row.markers) if row.subset is not None else [""] * len(table.modalities)
        cells = []
        for region in table.regions:
            text = format_value(table.metric, row.mean[region])
            if row.subset is not None and not math.isnan(row.std[region]):
                text += f" ± {format_value(table.metric, row.std[region])}"
            if row.changed.get(region):
                text += f" †{row.changed[region]}"
            cells.append(text)
        body.append([*marks, row.name, *cells])
    return header, body


def table_footnote(table: SummaryTable) -> str:
    """The footnote of a table whose cells carry † marks ("" when none does)."""
    if not any(row.changed.get(r) for row in table.records() for r in table.regions):
        return ""
    return ("†k: the ET post-processing changed the value of k cases in this cell (the "
            "average row: summed over its subsets); unmarked cells equal the raw values.")


def flatten_conventions(conventions: Mapping, prefix: str = "") -> list[tuple[str, str]]:
    items = []
    for key, value in conventions.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items.extend(flatten_conventions(value, f"{name}."))
        elif isinstance(value, list | tuple):
            items.append((name, ", ".join(str(v) for v in value)))
        else:
            items.append((name, "null" if value is None else str(value)))
    return items


def heatmap_figure(table: SummaryTable, path: str | Path, units: str = "voxel") -> Path:
    """Heatmap of the subset means (rows = subsets, columns = regions), with the values."""
    means = np.array([[row.mean[r] for r in table.regions] for row in table.rows], dtype=float)
    ratio = _base(table.metric) in RATIO_METRICS  # shown in percent, as in the tables
    fig = Figure(figsize=(1.4 * len(table.regions) + 3.0, 0.32 * len(table.rows) + 1.6))
    ax = fig.add_subplot()
    image = ax.imshow(means * 100 if ratio else means, aspect="auto",
                      cmap="viridis" if ratio else "viridis_r",
                      vmin=0.0 if ratio else None, vmax=100.0 if ratio else None)
    ax.set_xticks(range(len(table.regions)), labels=list(table.regions))
    ax.set_yticks(range(len(table.rows)), labels=[r.name for r in table.rows], fontsize=8)
    for (i, j), value in np.ndenumerate(means):
        red, green, blue, _ = image.cmap(image.norm(value * 100 if ratio else value))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        ax.text(j, i, format_value(table.metric, value), ha="center", va="center", fontsize=7,
                color="white" if dark else "black")
    ax.set_title(f"{metric_label(table.metric, units)}: mean over {table.n_cases} cases")
    fig.colorbar(image, ax=ax)
    return save_png(fig, path)
