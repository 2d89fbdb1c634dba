"""The command line: `contraseg <verb>`. Thin: parse, call the library, print.

The root command and its error plumbing are in `app`; the options several verbs share in
`options`; each module below registers its verbs on import.
"""

from __future__ import annotations

from contraseg.cli import data, evaluation, inference, info, training  # noqa: F401 (verbs)
from contraseg.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
