"""Progress where no terminal is: plain lines, not silence and not bar redraws."""

from __future__ import annotations

import io

from rich.console import Console

from contraseg.utils.progress import ProgressLines, _Task, progress_bar


def test_a_log_file_gets_plain_lines_and_one_at_the_end():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200)
    with progress_bar(console=console) as bar:
        assert isinstance(bar, ProgressLines)
        task = bar.add_task("evaluate", total=4)
        bar.advance(task)  # within LINE_SECONDS of the start: no line yet
        bar.tasks[task].printed -= 60  # a minute later
        bar.advance(task)
        bar.advance(task)  # too soon after the last line
        bar.advance(task)  # done: always a line
    lines = buffer.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["evaluate 2/4 (50%)", "evaluate 4/4 (100%)"]
    assert "eta" in lines[0] and "eta" not in lines[1]


def test_the_line_gives_elapsed_time_and_an_eta_from_the_rate():
    task = _Task("predict", total=10, completed=4, started=0.0)
    assert ProgressLines.line(task, now=120.0) == "predict 4/10 (40%), 2:00 elapsed, eta 3:00"
    task = _Task("train", total=None, completed=7, started=0.0)
    assert ProgressLines.line(task, now=3725.0) == "train 7, 1:02:05 elapsed"
