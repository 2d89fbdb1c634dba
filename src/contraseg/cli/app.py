"""The root command and its error plumbing: every verb exits 1 with a one-line reason on bad
input (no traceback) and writes nothing partial."""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from contraseg._version import __version__
from contraseg.errors import ContrasegError, ContrasegWarning

try:  # recent typer vendors click (typer._click); earlier versions depend on click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions

ClickException = click_exceptions.ClickException
NoArgsIsHelpError = getattr(click_exceptions, "NoArgsIsHelpError", ())  # click >= 8.2

console = Console()
err_console = Console(stderr=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """contraseg's warnings as one yellow line; others as Python prints them."""
    if issubclass(category, ContrasegWarning):
        err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False,
                          soft_wrap=True)
    else:
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


_PYTHON_SHOWWARNING = warnings.showwarning


def print_error(message: str) -> None:
    """One line on stderr: `error: <message>` (the message printed as is, never as markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class OneLineErrors(TyperGroup):
    """The root command: a usage error (unknown option, bad value, missing argument) is one
    line on stderr and exit 1, like every other mistake, instead of click's box and exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        warnings.showwarning = _show_warning
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            code, message = 130, "interrupted"
        except ClickException as exc:
            if isinstance(exc, NoArgsIsHelpError):  # `contraseg` alone: its help, no error
                console.print(exc.format_message(), highlight=False, markup=False)
                code, message = 0, None
            else:
                where = getattr(getattr(exc, "ctx", None), "command_path", "contraseg")
                code, message = 1, f"{where}: {exc.format_message()}"
            if message:
                print_error(message)
        else:
            code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=OneLineErrors,
    name="contraseg",
    help="Contrastive multimodal MRI segmentation: data, training, inference, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
data_app = typer.Typer(help="Datasets: synthetic phantom, checks.", no_args_is_help=True)
app.add_typer(data_app, name="data")

F = TypeVar("F", bound=Callable)


def user_errors(func: F) -> F:
    """Turn a ContrasegError or OSError into one line on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            func(*args, **kwargs)
        except ContrasegError as exc:
            message = str(exc)
        except OSError as exc:  # a folder that is a file, no permission, disk full, ...
            message = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
        else:
            return None
        print_error(message)
        raise typer.Exit(1)

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        console.print(f"contraseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Contrastive multimodal MRI segmentation."""
