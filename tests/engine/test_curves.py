"""progress.png from log.jsonl: drawn while training (rate-limited) and at the end."""

from __future__ import annotations

import json

from contraseg.engine.curves import CurvePainter, read_log

RECORDS = [
    {"epoch": 1, "step": 50, "lr": 1e-3, "loss": {"dice": 0.9, "ce": 1.2, "total": 2.1}},
    {"epoch": 2, "step": 100, "lr": 9e-4, "loss": {"dice": 0.7, "ce": 0.8, "total": 1.5},
     "val": {"dice_mean": 0.41, "dice_WT": 0.6}},
    {"epoch": 3, "step": 150, "lr": 8e-4, "loss": {"dice": 0.5, "ce": 0.5, "total": 1.0}},
]


def png_size(path):
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_the_curves_are_redrawn_at_most_every_interval_and_always_at_the_end(tmp_path):
    painter = CurvePainter(tmp_path, "unet (fast preset)", every=3600)
    assert painter() is None and not (tmp_path / "progress.png").exists()  # no log yet
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:1]))
    first = painter()
    width, two_panels = png_size(first)
    with open(tmp_path / "log.jsonl", "a") as log:
        log.writelines(json.dumps(r) + "\n" for r in RECORDS[1:])
    assert painter() is None  # within the interval
    _, three_panels = png_size(painter(final=True))  # validation adds a panel
    assert width > 400 and three_panels > 1.3 * two_panels
    assert len(read_log(tmp_path / "log.jsonl")) == 3
