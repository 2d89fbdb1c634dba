"""Two ways to run `contraseg <verb>` in a test, with one result type.

`cli` runs the command line inside the test process (typer's CliRunner): no interpreter start,
no second import of torch and MONAI, so a call costs what the verb costs. It reproduces what a
process would show: the exit code, stdout and stderr apart, and an uncaught exception as a
traceback on stderr with exit code 1 (so "no traceback" assertions keep their meaning).

`cli_process` starts a real `python -m contraseg` process. Use it only where the process is
the subject: the entry point, exit codes as the shell sees them, signals, several processes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

COLUMNS = 200  # wide enough that paths in the tests' messages are not wrapped


@dataclass
class CliResult:
    """What a test reads of a finished command: the fields of subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, cwd: Path | None = None, columns: int = COLUMNS) -> CliResult:
    """`contraseg ARGS` in this process."""
    from typer.testing import CliRunner

    from contraseg.cli import app
    from contraseg.cli.app import console, err_console

    # the module's consoles may have fixed their width when first imported (from $COLUMNS):
    # give them the tests' width for this call, then put back what they had
    consoles = (console, err_console)
    widths = [console._width for console in consoles]
    for each in consoles:
        each.width = columns
    try:
        with contextlib.chdir(cwd) if cwd else contextlib.nullcontext():
            result = CliRunner().invoke(app, list(args),
                                        env={"COLUMNS": str(columns)})
    finally:
        for each, width in zip(consoles, widths, strict=True):
            each._width = width
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # what the interpreter prints for an uncaught exception
        stderr += "".join(traceback.format_exception(result.exception))
    return CliResult(result.exit_code, result.stdout, stderr)


def process_env(**extra: str) -> dict[str, str]:
    """The environment of a process a test starts: this one's, with the checkout's sources
    first on the path, and `extra`."""
    return {**os.environ, "PYTHONPATH": str(REPO / "src"), **extra}


def cli_process(*args: str, cwd: Path | None = None, timeout: float | None = None
                ) -> subprocess.CompletedProcess:
    """`python -m contraseg ARGS` as a separate process."""
    return subprocess.run([sys.executable, "-m", "contraseg", *args], capture_output=True,
                          text=True, cwd=cwd, env=process_env(COLUMNS=str(COLUMNS)),
                          timeout=timeout)
