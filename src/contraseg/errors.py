"""Errors a user can act on. The CLI prints them as one line and exits 1, without a traceback."""

from __future__ import annotations

from pathlib import Path


class ContrasegError(Exception):
    """Base class: the message is complete and fits on one line."""


class InputError(ContrasegError):
    """Something is wrong with one input file or folder; the message starts with its path."""

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ConfigError(ContrasegError):
    """An option or setting has a value that cannot be used."""


class ContrasegWarning(UserWarning):
    """Something the user should know but that does not stop the work (an input that does not
    look like what the run learnt from); the CLI prints it as one `warning:` line."""
