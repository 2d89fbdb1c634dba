"""Evaluation reports: the metrics CSV (evaluation.metrics_csv), the DC-Seg Table 1 style
summaries (evaluation.summary), a Markdown and a self-contained HTML report with the heatmap
and the overlay pictures, and summary.json."""

from __future__ import annotations

import base64
import html
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from contraseg.errors import InputError
from contraseg.evaluation.metrics_csv import metric_columns, write_metrics_csv
from contraseg.evaluation.protocol import (
    SEPARATOR,
)
from contraseg.evaluation.summary import (
    AGGREGATION,
    ALL_CLASSES,
    CLASS_METRICS,
    POSTPROC_SUFFIX,
    SummaryTable,
    flatten_conventions,
    format_value,
    heatmap_figure,
    metric_label,
    summary_table,
    table_cells,
    table_footnote,
)
from contraseg.utils.fs import atomic_path
from contraseg.utils.jsonio import dumps


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
    lines += [f"- {AGGREGATION}"] + [f"- **{k}**: {v}" for k, v in flatten_conventions(conventions)]
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
    parts += [f"<li><b>{esc(k)}</b>: {esc(v)}</li>"
              for k, v in flatten_conventions(conventions)] + ["</ul>"]
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
