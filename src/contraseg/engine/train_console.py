"""What a training run shows and how it is stopped by hand: the progress bar's columns, the
epoch line, Ctrl-C handling, and the peak memory recorded at the end."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from contraseg.utils.memory import peak_rss_mb


def progress_bar(console: Console, enabled: bool) -> Progress:
    """The training bar: steps done of the total, the loss terms, speed, time left."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(),
        TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[terms]}"),
        SpeedColumn(), TimeRemainingColumn(), console=console, disable=not enabled,
    )


class StopOnInterrupt:
    """Ctrl-C during training: the first one ends the loop after the current step (the run is
    saved and marked interrupted, ready for --resume); a second one stops at once. Only for a
    single process in the main thread: ranks of a distributed run must stop together."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopOnInterrupt:
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


class SpeedColumn(ProgressColumn):
    """Steps per second (rich's task.speed is None until it has two samples)."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.2f} it/s" if task.speed else "- it/s")


def memory() -> dict[str, float]:
    """Peak resident memory (MiB) of this process and of its largest finished child (the
    loader's workers), as the operating system counts them (pages shared with workers count
    in each)."""
    return {"peak_rss_mb": peak_rss_mb(), "children_peak_rss_mb": peak_rss_mb("children")}


def format_terms(terms: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.3f}" for k, v in terms.items())


def epoch_line(record: dict[str, Any]) -> str:
    line = f"epoch {record['epoch']} step {record['step']} lr {record['lr']:.2e} " + format_terms(
        record["loss"])
    if "monitor" in record:
        line += " | " + " ".join(f"{k} {v:.3g}" for k, v in record["monitor"].items())
    if "val" in record:
        line += " | val " + " ".join(f"{k} {v:.3f}" for k, v in record["val"].items())
    return line


class ScalarLog:
    """TensorBoard scalars (`log.tensorboard`), the writer made on the first value."""

    def __init__(self, folder: Path, enabled: bool):
        self.folder, self.enabled, self.writer = folder, enabled, None

    def add(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.folder))
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
