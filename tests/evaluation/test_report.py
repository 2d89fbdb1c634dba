"""Metrics CSV round trip, Table 1 style summaries on hand-made rows, reports and pictures."""

from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import pytest

from contraseg.errors import ConfigError, InputError
from contraseg.evaluation.metrics import MetricSettings
from contraseg.evaluation.metrics_csv import read_metrics_csv, write_metrics_csv
from contraseg.evaluation.overlays import case_overlay
from contraseg.evaluation.report import write_report
from contraseg.evaluation.summary import AGGREGATION, format_value, metric_label, summary_table

MODS = ("flair", "t1", "t1c", "t2")
BRAIN = ("background", "necrosis", "edema", "enhancing")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# case -> subset -> region -> (dice, hd95); the subsets are listed out of protocol order.
VALUES = {
    "c1": {"flair+t1+t1c+t2": {"WT": (0.95, 2.0), "TC": (0.85, 4.0)},
           "t1c": {"WT": (0.8, 6.0), "TC": (0.6, 8.0)},
           "flair+t1c": {"WT": (0.9, 3.0), "TC": (0.7, 5.0)}},
    "c2": {"flair+t1+t1c+t2": {"WT": (0.85, 4.0), "TC": (0.75, 6.0)},
           "t1c": {"WT": (0.6, 10.0), "TC": (0.4, 12.0)},
           "flair+t1c": {"WT": (0.7, 5.0), "TC": (0.5, 9.0)}},
}


def make_rows() -> list[dict]:
    return [
        {"case": case, "subset": subset, "region": region, "dice": dice, "hd95": hd95}
        for case, subsets in VALUES.items()
        for subset, regions in subsets.items()
        for region, (dice, hd95) in regions.items()
    ]


def is_png(data: bytes) -> bool:
    return data.startswith(PNG_SIGNATURE)


# ---------------------------------------------------------------------------------------------
# CSV


def test_csv_round_trip_keeps_every_float(tmp_path) -> None:
    rows = [
        {"case": "a", "subset": "t1", "region": "WT", "dice": 0.1 + 0.2, "hd95": math.nan},
        {"case": "b", "subset": "t1", "region": "ET", "dice": 1 / 3, "hd95": math.inf,
         "dice_postproc": 2 / 7},
    ]
    path = write_metrics_csv(rows, tmp_path / "sub" / "metrics.csv")
    back = read_metrics_csv(path)
    assert [list(r) for r in back] == [["case", "subset", "region", "dice", "hd95",
                                        "dice_postproc"]] * 2
    assert back[0]["dice"] == 0.1 + 0.2 and back[1]["dice"] == 1 / 3
    assert math.isnan(back[0]["hd95"]) and back[1]["hd95"] == math.inf
    assert math.isnan(back[0]["dice_postproc"]) and back[1]["dice_postproc"] == 2 / 7
    assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]  # no temporary left


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("case,subset,dice\na,t1,0.5\n", "missing column"),
        ("case,subset,region,dice\na,t1,WT,abc\n", "line 2, column 'dice'"),
        ("case,subset,region,dice\na,t1,WT,0.5\na,t1,WT,0.6\n", "repeats"),
        ("case,subset,region,dice\na,t1,WT\n", "3 fields"),
    ],
)
def test_read_metrics_csv_errors_name_the_file(tmp_path, text, problem) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as info:
        read_metrics_csv(path)
    assert info.value.path == path


def test_read_missing_metrics_file(tmp_path) -> None:
    with pytest.raises(InputError, match="no such metrics file"):
        read_metrics_csv(tmp_path / "nope.csv")


# ---------------------------------------------------------------------------------------------
# Summary table


def test_summary_means_by_hand() -> None:
    table = summary_table(make_rows(), "dice", MODS)
    assert table.regions == ("WT", "TC") and table.n_cases == 2
    assert [r.name for r in table.rows] == ["t1c", "flair+t1c", "flair+t1+t1c+t2"]
    assert [r.markers for r in table.rows] == ["○○●○", "●○●○", "●●●●"]
    expected = {"t1c": (0.7, 0.5), "flair+t1c": (0.8, 0.6), "flair+t1+t1c+t2": (0.9, 0.8)}
    for row in table.rows:
        assert row.mean["WT"] == pytest.approx(expected[row.name][0])
        assert row.mean["TC"] == pytest.approx(expected[row.name][1])
        assert row.n == {"WT": 2, "TC": 2}
    assert table.rows[0].std["WT"] == pytest.approx(math.sqrt(0.02))  # (0.8, 0.6), ddof=1
    assert table.average.name == "average" and table.average.subset is None
    assert table.average.mean["WT"] == pytest.approx((0.7 + 0.8 + 0.9) / 3)
    assert table.average.mean["TC"] == pytest.approx((0.5 + 0.6 + 0.8) / 3)
    assert table.records()[-1] is table.average


def test_summary_hd95_and_region_order() -> None:
    table = summary_table(make_rows(), "hd95", MODS, regions=["TC", "WT"])
    assert table.regions == ("TC", "WT")
    assert table.rows[0].mean == {"TC": 10.0, "WT": 8.0}
    assert table.average.mean["WT"] == pytest.approx((8.0 + 4.0 + 3.0) / 3)


def test_summary_skips_nan_values() -> None:
    rows = make_rows() + [{"case": "c3", "subset": "t1c", "region": "WT", "dice": math.nan}]
    row = summary_table(rows, "dice", MODS).rows[0]
    assert row.mean["WT"] == pytest.approx(0.7) and row.n["WT"] == 2


def test_summary_errors() -> None:
    with pytest.raises(ConfigError, match="'iou'"):
        summary_table(make_rows(), "iou", MODS)
    with pytest.raises(ConfigError, match="unknown modality subset 'flair\\+t1\\+t1c\\+t2'"):
        summary_table(make_rows(), "dice", ("flair", "t1", "t2"))
    with pytest.raises(ConfigError):
        summary_table([], "dice", MODS)


def test_formatting() -> None:
    assert format_value("dice", 0.86721) == "86.72"
    assert format_value("hd95", 3.14159) == "3.14"
    assert format_value("dice", math.nan) == "-"
    assert metric_label("hd95", "mm") == "HD95 (mm)"
    assert metric_label("dice_postproc") == "Dice after post-processing (%)"


def test_summary_to_dict_is_strict_json() -> None:
    rows = make_rows() + [{"case": "c1", "subset": "t2", "region": "WT", "dice": 0.5}]
    data = json.loads(json.dumps(summary_table(rows, "dice", MODS).to_dict(), allow_nan=False))
    t2 = next(r for r in data["rows"] if r["name"] == "t2")
    assert t2["std"]["WT"] is None and t2["mean"]["TC"] is None and t2["n"]["TC"] == 0


# ---------------------------------------------------------------------------------------------
# Report files


def test_write_report(tmp_path) -> None:
    conventions = MetricSettings().to_dict()
    rows = make_rows() + [
        {"case": "c1", "subset": "t1c", "region": "ET", "dice": 0.5, "hd95": 7.0,
         "dice_postproc": 0.6}
    ]
    overlay = _overlay(tmp_path / "pics" / "c1.png")
    out = tmp_path / "report"
    html_path = write_report(out, rows, MODS, conventions, {"method": "dc-seg"}, [overlay])
    assert html_path == out / "report.html"
    assert sorted(p.name for p in out.iterdir()) == [
        "heatmap.png", "metrics.csv", "overlays", "report.html", "summary.json", "summary.md"]
    page = html_path.read_text()
    assert "<td>80.00 ± 14.14</td>" in page  # Dice of flair+t1c, WT
    assert "<td>8.00 ± 2.83</td>" in page  # HD95 of t1c, WT
    assert "Dice after post-processing (%)" in page and "HD95 (voxel)" in page
    assert conventions["hd95"] in page and "dc-seg" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2 and all(is_png(base64.b64decode(i)) for i in images)
    markdown = (out / "summary.md").read_text()
    assert "| ○ | ○ | ● | ○ | t1c | 70.00 ± 14.14 | 50.00 ± 14.14 | 50.00 |" in markdown
    assert "|  |  |  |  | average | 80.00 | 63.33 | 50.00 |" in markdown
    assert AGGREGATION in markdown and "overlays/c1.png" in markdown
    # per case: each case's fullest subset (c1 has no ET there), a link to every row
    assert "| c1 | flair+t1+t1c+t2 | 95.00 | 85.00 | - |" in markdown
    assert "| c2 | flair+t1+t1c+t2 | 85.00 | 75.00 | - |" in markdown
    assert "[metrics.csv](metrics.csv)" in markdown and "href='metrics.csv'" in page
    assert "<td>c1</td><td>flair+t1+t1c+t2</td><td>95.00</td>" in page
    assert "name='viewport'" in page  # reads on a narrow screen
    assert is_png((out / "heatmap.png").read_bytes())
    assert (out / "overlays" / "c1.png").read_bytes() == overlay.read_bytes()
    assert read_metrics_csv(out / "metrics.csv")[0]["dice"] == rows[0]["dice"]


def test_cells_the_et_post_processing_changed_are_footnoted(tmp_path) -> None:
    """c2's ET on t1c went from 0.4 to 0.0 after the rule: that cell (and the average) carry
    a †1 mark; the WT cells and the raw table carry none."""
    rows = []
    for case, subsets in VALUES.items():
        for subset, regions in subsets.items():
            for region, (dice, _) in regions.items():
                post = 0.0 if (case, subset, region) == ("c2", "t1c", "TC") else dice
                rows.append({"case": case, "subset": subset, "region": region, "dice": dice,
                             "dice_postproc": post})
    table = summary_table(rows, "dice_postproc", MODS)
    t1c = next(row for row in table.rows if row.name == "t1c")
    assert t1c.changed == {"WT": 0, "TC": 1} and table.average.changed == {"WT": 0, "TC": 1}
    assert not summary_table(rows, "dice", MODS).rows[0].changed
    write_report(tmp_path / "r", rows, MODS, {}, metrics=("dice",))
    markdown = (tmp_path / "r" / "summary.md").read_text()
    assert "| ○ | ○ | ● | ○ | t1c | 70.00 ± 14.14 | 30.00 ± 42.43 †1 |" in markdown
    assert "| ○ | ○ | ● | ○ | t1c | 70.00 ± 14.14 | 50.00 ± 14.14 |" in markdown  # raw table
    assert "|  |  |  |  | average | 80.00 | 56.67 †1 |" in markdown
    assert markdown.count("†k: the ET post-processing changed") == 1
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    post = next(t for t in summary["tables"] if t["metric"] == "dice_postproc")
    cells = {row["name"]: row.get("changed_by_postprocessing") for row in post["rows"]}
    assert cells["t1c"] == cells["average"] == {"WT": 0, "TC": 1}
    assert cells["flair+t1c"] == {"WT": 0, "TC": 0}


def test_write_report_missing_overlay(tmp_path) -> None:
    with pytest.raises(InputError, match="overlay"):
        write_report(tmp_path / "r", make_rows(), MODS, {}, overlays=[tmp_path / "none.png"])
    with pytest.raises(InputError, match="figures"):
        write_report(tmp_path / "r", make_rows(), MODS, {}, figures=[tmp_path / "none.png"])


# ---------------------------------------------------------------------------------------------
# Pictures (tests/evaluation/test_overlays.py draws them in depth)


def _overlay(path):
    rng = np.random.default_rng(0)
    ref = np.zeros((24, 24, 6), np.uint8)
    ref[8:16, 8:16, 2:4], ref[10:13, 10:13, 3] = 2, 3
    pred = np.roll(ref, 2, axis=0)
    images = {m: rng.normal(size=ref.shape) for m in ("flair", "t1c")}
    return case_overlay(images, np.eye(4), ref, {"all": pred}, BRAIN, path, "case c1")
