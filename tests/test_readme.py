"""The README's commands stay true: every `contraseg ...` line of its shell blocks parses with
today's command line (the verb exists, every option exists and its value has the right type,
nothing required is missing). Commands that run on the phantom are executed by the demo and
CLI tests; the ones that name /data folders or hour-long presets are parsed, not run."""

from __future__ import annotations

import re
import shlex

import pytest
import typer

from contraseg.cli import app
from tests.conftest import REPO

ELIDED = "..."  # `contraseg train ... --set x=y`: the rest of an earlier command


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines = block.replace("\\\n", " ").splitlines()
        for line in lines:
            line = line.split(" #")[0].strip()
            if line.startswith("contraseg ") and ELIDED not in line:
                commands.append(line)
    return commands


COMMANDS = readme_commands()


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) > 30
    verbs = {shlex.split(c)[1] for c in COMMANDS}
    assert {"train", "predict", "evaluate", "compare", "export", "score"} <= verbs


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_parses(command):
    group = typer.main.get_command(app)
    args = shlex.split(command)[1:]
    with group.make_context("contraseg", list(args)) as ctx:
        name, sub, rest = group.resolve_command(ctx, _remaining(ctx))
        while hasattr(sub, "resolve_command"):  # `contraseg data check`
            ctx = sub.make_context(name, list(rest), parent=ctx)
            name, sub, rest = sub.resolve_command(ctx, _remaining(ctx))
        sub.make_context(name, list(rest), parent=ctx)  # raises on any unknown or bad option


def _remaining(ctx) -> list[str]:
    """What a group left for its subcommand (click keeps the verb apart from the rest)."""
    return [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
