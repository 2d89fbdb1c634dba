"""progress.png: a run's training curves, redrawn from its log.jsonl while it trains (what
nnU-Net users look for in a run folder) and embedded in the evaluation report.

Three panels over the training step: every loss term (the epoch means of log.jsonl, log
scale when all are positive), the learning rate, and the validation scores (Dice, or PSNR /
SSIM for a generator) when the run validates.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from matplotlib.figure import Figure

from contraseg.utils.figures import save_png

REDRAW_SECONDS = 60.0  # while training: at most one redraw a minute (a few hundred ms each)


def read_log(log: Path) -> list[dict]:
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def progress_figure(records: list[dict], path: Path, title: str = "") -> Path:
    """Draw the curves of `records` (log.jsonl lines) into `path`."""
    steps = [r["step"] for r in records]
    panels = 3 if any("val" in r for r in records) else 2
    fig = Figure(figsize=(7.5, 2.3 * panels))
    losses = fig.add_subplot(panels, 1, 1)
    for term in records[0]["loss"] if records else ():
        values = [r["loss"].get(term) for r in records]
        losses.plot(steps, values, label=term, lw=1.8 if term == "total" else 1.0)
    if records and all(v > 0 for r in records for v in r["loss"].values()):
        losses.set_yscale("log")
    losses.set_ylabel("loss (epoch mean)")
    losses.legend(fontsize=7, ncol=4)
    rate = fig.add_subplot(panels, 1, 2, sharex=losses)
    rate.plot(steps, [r["lr"] for r in records], color="k")
    rate.set_ylabel("learning rate")
    if panels == 3:
        validation = fig.add_subplot(panels, 1, 3, sharex=losses)
        validated = [r for r in records if "val" in r]
        for key in validated[0]["val"]:
            validation.plot([r["step"] for r in validated], [r["val"][key] for r in validated],
                            marker="o", ms=3, label=key)
        validation.set_ylabel("validation")
        validation.legend(fontsize=7, ncol=4)
    fig.axes[-1].set_xlabel("step")
    fig.suptitle(title, fontsize=9)
    return save_png(fig, path)


class CurvePainter:
    """Redraws RUN/progress.png from RUN/log.jsonl: at most every REDRAW_SECONDS during
    training, always at the end; never when not `enabled` (`--set log.curves=false`)."""

    def __init__(self, run: Path, title: str, every: float = REDRAW_SECONDS,
                 enabled: bool = True):
        self.run, self.title, self.every, self.enabled = Path(run), title, every, enabled
        self.drawn = float("-inf")

    def __call__(self, final: bool = False) -> Path | None:
        if not self.enabled:
            return None
        now = time.monotonic()
        if not final and now - self.drawn < self.every:
            return None
        records = read_log(self.run / "log.jsonl")
        if not records:
            return None
        self.drawn = now
        return progress_figure(records, self.run / "progress.png", self.title)
