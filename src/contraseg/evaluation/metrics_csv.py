"""The per-case metrics CSV of a report: one row per (case, subset, region), one column per
metric; written with a fixed float format, read back with every problem named by file, line
and column."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from contraseg.errors import InputError
from contraseg.utils.fs import atomic_path

MetricRow = dict[str, str | float]
KEY_COLUMNS = ("case", "subset", "region")


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
