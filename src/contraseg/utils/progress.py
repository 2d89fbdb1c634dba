"""One progress style for every long command: a rich bar on a terminal, plain lines elsewhere
(a log file or a pipe gets a line every `LINE_SECONDS` and one at the end, not bar redraws)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LINE_SECONDS = 30.0


def progress_bar(transient: bool = False, console: Console | None = None
                 ) -> Progress | ProgressLines:
    """A rich progress bar with count, elapsed time and ETA on stderr when it is a terminal;
    otherwise `ProgressLines` with the same add_task / advance / update calls."""
    console = console or Console(stderr=True)
    if not console.is_terminal:
        return ProgressLines(console)
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    started: float = field(default_factory=time.monotonic)
    printed: float = field(default_factory=time.monotonic)


class ProgressLines:
    """Progress as plain lines: `evaluate 3/21 (14%), 2:10 elapsed, eta 12:40`."""

    def __init__(self, console: Console, every: float = LINE_SECONDS):
        self.console, self.every = console, every
        self.tasks: list[_Task] = []

    def __enter__(self) -> ProgressLines:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0,
                 **_fields) -> int:
        self.tasks.append(_Task(description, total, completed))
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, *, total: float | None = None, advance: float = 0,
               completed: float | None = None, **_fields) -> None:
        task = self.tasks[task_id]
        task.total = task.total if total is None else total
        task.completed = (task.completed if completed is None else completed) + advance
        now = time.monotonic()
        done = task.total is not None and task.completed >= task.total
        if (advance or completed is not None) and (done or now - task.printed >= self.every):
            task.printed = now
            self.console.print(self.line(task, now), highlight=False, markup=False)

    @staticmethod
    def line(task: _Task, now: float) -> str:
        elapsed = now - task.started
        text = f"{task.description} {task.completed:g}"
        if task.total:
            text += f"/{task.total:g} ({100 * task.completed / task.total:.0f}%)"
        text += f", {_clock(elapsed)} elapsed"
        if task.total and 0 < task.completed < task.total:
            text += f", eta {_clock(elapsed * (task.total - task.completed) / task.completed)}"
        return text


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
