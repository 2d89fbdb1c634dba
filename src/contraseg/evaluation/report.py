"""Evaluation reports: the per-case metrics CSV, DC-Seg Table 1 style summaries, Markdown and a
self-contained HTML report with a heatmap and overlay pictures.

Aggregation (stated in every report, see :data:`AGGREGATION`): a table cell is the mean over
cases of the per-case values of one subset and region, NaN values skipped, with the sample
standard deviation (ddof=1, NaN below two values); the last row ("average") is the unweighted
mean of the subset means, as in DC-Seg's Table 1. Ratio metrics (Dice, IoU, sensitivity, ...)
are shown in percent, distances in the units the conventions state.

Pictures are drawn with matplotlib's object API (``matplotlib.figure.Figure``, Agg canvas): no
pyplot, no display, no global backend switch.
"""

from __future__ import annotations

import base64
import csv
import html
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from contraseg.errors import ConfigError, InputError
from contraseg.evaluation.protocol import (
    SEPARATOR,
    Subset,
    all_subsets,
    subset_from_name,
    subset_markers,
    subset_name,
)
from contraseg.utils.fs import atomic_path
from contraseg.utils.jsonio import dumps, json_safe

MetricRow = dict[str, str | float]
KEY_COLUMNS = ("case", "subset", "region")
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


# ---------------------------------------------------------------------------------------------
# The metrics CSV


def metric_columns(rows: Sequence[Mapping]) -> list[str]:
    """The metric columns of the rows (every key but case/subset/region), in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update((key, None) for key in row if key not in KEY_COLUMNS)
    return list(seen)


def _format_float(value: object) -> str:
    """Shortest text that reads back to the same float ('nan' and 'inf' included)."""
    return "" if value is None else repr(float(value))


def write_metrics_csv(rows: Sequence[Mapping], path: str | Path) -> Path:
    """Write rows (case, subset, region, metrics...) atomically; a missing metric is an empty cell.

    Floats keep full precision (``repr``), so reading the file back gives the same values.
    """
    columns = metric_columns(rows)
    path = Path(path)
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([*KEY_COLUMNS, *columns])
            for row in rows:
                missing = [k for k in KEY_COLUMNS if k not in row]
                if missing:
                    raise ValueError(f"metric row {dict(row)} lacks {missing}")
                keys = [str(row[k]) for k in KEY_COLUMNS]
                writer.writerow(keys + [_format_float(row.get(c)) for c in columns])
    return path


def _parse_cell(path: Path, line: int, column: str, text: str) -> float:
    if text.strip() == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        problem = f"line {line}, column '{column}': '{text}' is not a number"
        raise InputError(path, problem) from None


def read_metrics_csv(path: str | Path) -> list[MetricRow]:
    """Rows of a metrics CSV: case/subset/region as text, every other column as float.

    Empty cells read as NaN. Raises InputError for a missing file, missing key columns, a
    ragged line, a non-numeric value or a repeated (case, subset, region).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such metrics file")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        missing = [k for k in KEY_COLUMNS if k not in header]
        if missing:
            raise InputError(path, f"missing column(s) {', '.join(missing)} in the header")
        return _read_body(path, reader, header)


def _read_body(path: Path, reader, header: list[str]) -> list[MetricRow]:
    rows: list[MetricRow] = []
    seen: set[tuple[str, ...]] = set()
    for line, cells in enumerate(reader, start=2):
        if not cells:
            continue
        if len(cells) != len(header):
            raise InputError(path, f"line {line} has {len(cells)} fields, header {len(header)}")
        row: MetricRow = {}
        for column, text in zip(header, cells, strict=True):
            row[column] = text if column in KEY_COLUMNS else _parse_cell(path, line, column, text)
        key = tuple(str(row[k]) for k in KEY_COLUMNS)
        if key in seen:
            raise InputError(path, f"line {line} repeats case/subset/region {key}")
        seen.add(key)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Table 1 style summary


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
    modalities: Sequence[str] = ("flair", "t1", "t1c", "t2"),
    regions: Sequence[str] | None = None,
) -> SummaryTable:
    """Mean (and std) over cases of `metric` per subset and region, plus the mean over subsets.

    Only subsets present in the rows appear, in :func:`all_subsets` order; regions are taken
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


def _flatten(conventions: Mapping, prefix: str = "") -> list[tuple[str, str]]:
    items = []
    for key, value in conventions.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items.extend(_flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            items.append((name, ", ".join(str(v) for v in value)))
        else:
            items.append((name, "null" if value is None else str(value)))
    return items


# ---------------------------------------------------------------------------------------------
# Pictures


def save_png(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path


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


# ---------------------------------------------------------------------------------------------
# Markdown and HTML


def case_table(rows: Sequence[Mapping], metric: str = "dice") -> tuple[list[str], list[list[str]]]:
    """Header and body of the per-case table: each case's `metric` per region on its fullest
    subset (the one with the most modalities it was scored on)."""
    regions = list(dict.fromkeys(str(row["region"]) for row in rows))
    fullest: dict[str, str] = {}
    for row in rows:
        case, subset = str(row["case"]), str(row["subset"])
        if case not in fullest or subset.count(SEPARATOR) > fullest[case].count(SEPARATOR):
            fullest[case] = subset
    values = {(str(r["case"]), str(r["region"])): r.get(metric) for r in rows
              if str(r["subset"]) == fullest[str(r["case"])]}
    body = [[case, subset, *(format_value(metric, _float(values.get((case, region))))
                             for region in regions)] for case, subset in fullest.items()]
    return ["case", "subset", *regions], body


def _float(value) -> float:
    return float("nan") if value is None or value == "" else float(value)


CASES_NOTE = ("Dice (%) of each case on its fullest subset; every case, subset, region and "
              "metric is in")


def _markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(":-:" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def _markdown(title, tables, units, conventions, notes, heatmap, overlays, figures,
              cases) -> str:
    lines = [f"# {title}", ""]
    lines += [f"- **{k}**: {v}" for k, v in notes.items()] + [""]
    for table in tables:
        lines += [f"## {metric_label(table.metric, units)}", "",
                  f"Mean over {table.n_cases} cases (● available, ○ missing).", ""]
        lines += _markdown_table(*table_cells(table)) + [""]
        if footnote := table_footnote(table):
            lines += [footnote, ""]
    lines += ["## Per case", "", f"{CASES_NOTE} [metrics.csv](metrics.csv).", ""]
    lines += _markdown_table(*cases) + [""]
    lines += ["## Heatmap", "", f"![heatmap]({heatmap})", "", "## Metric conventions", ""]
    lines += [f"- {AGGREGATION}"] + [f"- **{k}**: {v}" for k, v in _flatten(conventions)]
    if overlays:
        lines += ["", "## Overlays", ""] + [f"![{p.stem}](overlays/{p.name})" for p in overlays]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{p.stem}](figures/{p.name})" for p in figures]
    return "\n".join(lines) + "\n"


def _html_table(header: list[str], body: list[list[str]], last_row_bold: bool = True) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body
    )
    kind = "summary" if last_row_bold else "plain"
    return (f"<div class='scroll'><table class='{kind}'><thead><tr>{head}</tr></thead>"
            f"<tbody>{rows}</tbody></table></div>")


def _png_tag(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_VIEWPORT = "<meta name='viewport' content='width=device-width, initial-scale=1'>"
_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:72em}"
          "@media (max-width:40em){body{margin:0.5em}}"
          "table{border-collapse:collapse}.scroll{overflow-x:auto}"
          "td,th{border:1px solid #ccc;padding:2px 8px;text-align:center}"
          "table.summary tbody tr:last-child{font-weight:bold}img{max-width:100%}")


def _html(title, tables, units, conventions, notes, heatmap, overlays, figures, cases) -> str:
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'>{_VIEWPORT}"
             f"<title>{esc(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{esc(title)}</h1><ul>"]
    parts += [f"<li><b>{esc(k)}</b>: {esc(str(v))}</li>" for k, v in notes.items()] + ["</ul>"]
    for table in tables:
        parts += [f"<h2>{esc(metric_label(table.metric, units))}</h2>",
                  f"<p>Mean over {table.n_cases} cases (● available, ○ missing).</p>",
                  _html_table(*table_cells(table))]
        if footnote := table_footnote(table):
            parts.append(f"<p><small>{esc(footnote)}</small></p>")
    parts += ["<h2>Per case</h2>",
              f"<p>{esc(CASES_NOTE)} <a href='metrics.csv'>metrics.csv</a>.</p>",
              _html_table(*cases, last_row_bold=False)]
    parts += ["<h2>Heatmap</h2>", _png_tag(heatmap, "heatmap"), "<h2>Metric conventions</h2>",
              f"<p>{esc(AGGREGATION)}</p><ul>"]
    parts += [f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in _flatten(conventions)] + ["</ul>"]
    if overlays:
        parts += ["<h2>Overlays</h2>"] + [f"<p>{_png_tag(p, p.stem)}</p>" for p in overlays]
    if figures:
        parts += ["<h2>Figures</h2>"] + [f"<p>{_png_tag(p, p.stem)}</p>" for p in figures]
    return "".join(parts) + "</body></html>\n"


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _copy_pictures(out_dir: Path, pictures: Sequence[str | Path], folder: str) -> list[Path]:
    copies = []
    for source in map(Path, pictures):
        if not source.is_file():
            raise InputError(source, f"picture for the report's {folder} not found")
        target = out_dir / folder / source.name
        if source.resolve() != target.resolve():
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
        copies.append(target)
    return copies


def _report_tables(rows, modalities, metrics) -> list[SummaryTable]:
    columns = metric_columns(rows)
    wanted = list(metrics) + [
        f"{m}{POSTPROC_SUFFIX}" for m in metrics if f"{m}{POSTPROC_SUFFIX}" in columns
    ]
    tables = [summary_table(rows, m, modalities) for m in wanted]
    first_region = str(rows[0]["region"]) if rows else ""
    one_column = [{**r, "region": ALL_CLASSES} for r in rows if str(r["region"]) == first_region]
    return tables + [summary_table(one_column, m, modalities)
                     for m in CLASS_METRICS if m in columns and m not in wanted]


def write_report(
    out_dir: str | Path,
    rows: Sequence[Mapping],
    modalities: Sequence[str],
    conventions: Mapping,
    notes: Mapping[str, object] | None = None,
    overlays: Sequence[str | Path] = (),
    metrics: Sequence[str] = ("dice", "hd95"),
    title: str = "contraseg evaluation",
    figures: Sequence[str | Path] = (),
) -> Path:
    """Write metrics.csv, summary.json, summary.md, heatmap.png and report.html into `out_dir`.

    `conventions` is e.g. ``MetricSettings.to_dict()`` (its "units" labels distance columns);
    `notes` free-form facts (method, checkpoint, data). Each metric gets a Table 1 style table,
    plus its "_postproc" variant when the rows have one. The heatmap shows the first metric.
    Overlay PNGs are copied to out_dir/overlays, other figures to out_dir/figures, and embedded.
    Every file is written atomically.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = {str(k): str(v) for k, v in (notes or {}).items()}
    units = str(conventions.get("units", "voxel"))
    tables = _report_tables(rows, modalities, metrics)
    write_metrics_csv(rows, out_dir / "metrics.csv")
    heatmap = heatmap_figure(tables[0], out_dir / "heatmap.png", units)
    copies = _copy_pictures(out_dir, overlays, "overlays")
    figure_copies = _copy_pictures(out_dir, figures, "figures")
    summary = {"tables": [t.to_dict() for t in tables], "aggregation": AGGREGATION,
               "conventions": dict(conventions), "notes": notes}
    _write_text(out_dir / "summary.json", dumps(summary) + "\n")
    args = (title, tables, units, conventions, notes)
    cases = case_table(rows)
    _write_text(out_dir / "summary.md",
                _markdown(*args, heatmap.name, copies, figure_copies, cases))
    _write_text(out_dir / "report.html", _html(*args, heatmap, copies, figure_copies, cases))
    return out_dir / "report.html"
