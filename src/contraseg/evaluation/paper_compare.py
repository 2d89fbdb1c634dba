"""A report beside a paper's table (`contraseg compare REPORT --paper NAME`): each cell of the
run's report (the mean over its cases, in percent) next to the paper's printed figure, with the
difference, and what differs between the two protocols (split, metric, post-processing), so a
gap is read with its reasons."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from contraseg.errors import ConfigError, InputError
from contraseg.evaluation.metrics_csv import read_metrics_csv
from contraseg.evaluation.paper_tables import load_paper_table


@dataclass
class PaperComparison:
    paper: str  # the table's name
    method: str  # the paper's column set beside the run
    rows: list[dict] = field(default_factory=list)  # subset, region, ours, paper, difference
    differences: list[str] = field(default_factory=list)  # protocol differences, in words

    def to_dict(self) -> dict:
        return {"paper": self.paper, "method": self.method, "rows": self.rows,
                "protocol_differences": self.differences}


def _report_means(report: Path, metric: str) -> dict[tuple[str, str], float]:
    """Each (subset, region) cell of a report: the mean over its cases, in percent."""
    path = report / "metrics.csv" if report.is_dir() else report
    if not path.is_file():
        raise InputError(report, "no metrics.csv: give a report folder of contraseg evaluate")
    cells: dict[tuple[str, str], list[float]] = {}
    for row in read_metrics_csv(path):
        value = float(row.get(metric, float("nan")))
        if value == value:  # NaN skipped, as the report's tables do
            cells.setdefault((str(row["subset"]), str(row["region"])), []).append(value)
    return {key: 100 * statistics.fmean(values) for key, values in cells.items()}


def _mean_over_reports(reports: list[Path], metric: str) -> dict[tuple[str, str], float]:
    """The mean over the reports (the folds or draws of a split) of each cell's mean."""
    each = [_report_means(Path(r), metric) for r in reports]
    keys = set.intersection(*(set(cells) for cells in each))
    return {key: statistics.fmean(cells[key] for cells in each) for key in keys}


def _notes(report: Path) -> dict:
    summary = (report if report.is_dir() else report.parent) / "summary.json"
    return json.loads(summary.read_text()).get("notes", {}) if summary.is_file() else {}


def _paper_method(table: dict, asked: str | None, run_method: str | None) -> str:
    methods = list(table["methods"])
    if asked is not None:
        if asked not in methods:
            raise ConfigError(f"--paper-method {asked}: {table['name']} has {', '.join(methods)}")
        return asked
    squash = {m.lower().replace("-", ""): m for m in methods}
    return squash.get((run_method or "").lower().replace("-", ""), table["own_method"])


def compare_with_paper(report: Path | list[Path], name: str, method: str | None = None,
                       metric: str = "dice") -> PaperComparison:
    """The report's cells (several reports: the mean over them, as papers average their
    splits) beside `name`'s table (its `method` column; by default the one named like the
    run's method, else the paper's own)."""
    reports = [Path(r) for r in (report if isinstance(report, list) else [report])]
    table = load_paper_table(name)
    ours = _mean_over_reports(reports, metric)
    notes = _notes(reports[0])
    chosen = _paper_method(table, method, notes.get("method"))
    result = PaperComparison(name, chosen)
    printed = table["methods"][chosen]
    if table["kind"] == "subsets":
        for subset, regions in printed.items():
            for region, figure in regions.items():
                mine = ours.get((subset, region))
                result.rows.append({"subset": subset, "region": region, "ours": mine,
                                    "paper": figure,
                                    "difference": None if mine is None else mine - figure})
    elif table["kind"] == "average":  # the mean over the subsets only (RFNet's README)
        for region, figure in printed.items():
            values = [v for (subset, r), v in ours.items() if r == region]
            mine = statistics.fmean(values) if values else None
            result.rows.append({"subset": "average", "region": region, "ours": mine,
                                "paper": figure,
                                "difference": None if mine is None else mine - figure})
    else:  # one figure over the whole tumour with every modality (CLFC)
        full = max((s for s, _ in ours), key=lambda s: s.count("+"), default=None)
        mine = ours.get((full, "WT")) if full else None
        figure = printed["brats2019"]["dice"]["mean"]
        result.rows.append({"subset": full, "region": "WT", "ours": mine, "paper": figure,
                            "difference": None if mine is None else mine - figure})
    result.differences = _protocol_differences(table, notes, metric)
    return result


def _protocol_differences(table: dict, notes: dict, metric: str) -> list[str]:
    found = []
    ours = notes.get("split")
    if table.get("split") and (ours or "").split(":")[0] != table["split"]:
        found.append(f"split: the paper's is {table['split']}, this report's "
                     f"{ours or 'is not a published split (evaluate --split records one)'}")
    if metric != "dice":
        found.append(f"metric: the paper reports Dice, this comparison reads {metric}")
    found.append(f"post-processing: the paper's is not stated; this report's {metric} is "
                 "raw (the ET rule's figures are the *_postproc columns)")
    found.append(f"the paper's protocol: {table['protocol']}")
    return found


def print_paper_comparison(result: PaperComparison, console: Console) -> None:
    table = Table("subset", "region", "this report (%)", f"{result.method} (%)", "difference",
                  box=None, pad_edge=False, title=f"{result.paper}: {result.method}")
    for row in result.rows:
        ours = "-" if row["ours"] is None else f"{row['ours']:.2f}"
        diff = "-" if row["difference"] is None else f"{row['difference']:+.2f}"
        table.add_row(str(row["subset"]), row["region"], ours, f"{row['paper']:.2f}", diff)
    console.print(table, highlight=False)
    for line in result.differences:
        console.print(f"- {line}", highlight=False, markup=False)
