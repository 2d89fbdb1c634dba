"""The generated reference pages (scripts/docs_reference.py): the committed docs/reference/*.md
are what the code generates now, they cover every command, option and setting, and the check
notices a page that drifted."""

from __future__ import annotations

import dataclasses
import html
import re
import typing

import pytest
import typer
import yaml

from contraseg.cli import app
from contraseg.engine.config import TrainConfig
from contraseg.models.registry import build_method, get_entry, list_methods
from tests.conftest import REPO, load_script

ref = load_script(REPO / "scripts" / "docs_reference.py")
BUILTIN = [name for name in list_methods() if get_entry(name).source.builtin]


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return ref.generate()


def sections(text: str, level: str) -> dict[str, str]:
    """Each heading of `level` ("##", "###") -> its text up to the next heading at most as
    deep."""
    found, title, lines = {}, None, []
    for line in [*text.splitlines(), "# end"]:
        heading = re.match(r"(#+) (.*)", line)
        if heading and len(heading.group(1)) <= len(level):
            if title is not None:
                found[title] = "\n".join(lines)
            title = heading.group(2) if heading.group(1) == level else None
            lines = []
        else:
            lines.append(line)
    return found


def plain(text: str) -> str:
    """Markdown as the words it shows: no escapes, one space between words."""
    return " ".join(html.unescape(text.replace("\\", "")).split())


def test_committed_pages_are_what_the_code_generates(pages):
    assert ref.stale(pages) == [], "regenerate them: python scripts/docs_reference.py"


def test_check_names_each_page_that_drifted(pages, tmp_path, monkeypatch, capsys):
    ref.write(pages, tmp_path)
    assert ref.stale(pages, tmp_path) == []
    cli, config = (tmp_path / rel for rel in ref.PAGES)
    cli.write_text(cli.read_text().replace("| `--version` |", "| `--verbose` |"))
    assert ref.stale(pages, tmp_path) == [ref.PAGES[0]]
    config.unlink()
    monkeypatch.setattr(ref, "REPO", tmp_path)
    monkeypatch.setattr(ref, "generate", lambda: pages)
    assert ref.main(["--check"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{rel}: differs from the code (python scripts/docs_reference.py rewrites it)"
        for rel in ref.PAGES]
    assert not config.exists()  # --check writes nothing


def click_commands(command, path="contraseg"):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from click_commands(sub, f"{path} {name}")


def test_every_argument_and_option_is_in_its_commands_section(pages):
    by_command = sections(pages[ref.PAGES[0]], "##") | sections(pages[ref.PAGES[0]], "###")
    for path, command in click_commands(typer.main.get_command(app)):
        assert path in by_command, f"no section for {path}"
        for param in command.params:
            names = ([(param.metavar or param.name).upper()] if param.param_type_name ==
                     "argument" else [*param.opts, *param.secondary_opts])
            for name in names:
                assert re.search(rf"^\| [^|]*`{re.escape(name)}`", by_command[path], re.M), \
                    f"{path}: {name} not in its table"
            if param.help:
                assert plain(param.help) in plain(by_command[path]), f"{path} {names[0]}: help"


def engine_keys() -> list[str]:
    hints = typing.get_type_hints(TrainConfig)
    keys = []
    for item in dataclasses.fields(TrainConfig):
        section = hints[item.name]
        keys += ([f"{item.name}.{f.name}" for f in dataclasses.fields(section)]
                 if dataclasses.is_dataclass(section) else [item.name])
    return keys


def preset_keys(values: dict) -> list[str]:
    return [f"{key}.{sub}" if key in ref.SECTIONS else key
            for key, value in values.items()
            for sub in (value if key in ref.SECTIONS else [None])]


def test_every_setting_is_in_the_configuration_page(pages):
    text = pages[ref.PAGES[1]]
    engine, methods = text.split("\n## Methods\n")
    for key in engine_keys():
        assert f"| `{key}` |" in engine, key
    by_method = sections(methods, "###")
    assert sorted(by_method) == sorted(BUILTIN)
    for name in BUILTIN:
        entry, section = get_entry(name), by_method[name]
        keys = [f"model.{f.name}" for f in dataclasses.fields(entry.config_cls)]
        keys += [f"loss_weights.{term}" for term in entry.cls.loss_terms]
        for key in keys:
            assert f"| `{key}` |" in section, f"{name}: {key}"
        presets_table = section.split("#### Presets")[1]
        for preset, values in yaml.safe_load(entry.presets.read_text()).items():
            assert re.search(rf"^\| Key \|.* `{preset}` \|", presets_table, re.M), preset
            for key in preset_keys(values):
                assert f"| `{key}` |" in presets_table, f"{name} {preset}: {key}"


def test_every_comment_of_the_preset_files_is_on_the_page(pages):
    shown = plain(pages[ref.PAGES[1]])
    for name in BUILTIN:
        for line in get_entry(name).presets.read_text().splitlines():
            comment = ref.line_comment(line)
            if comment:
                assert plain(comment) in shown, f"{name}.yaml: {comment}"


def test_field_comments_are_read_from_above_and_beside_the_field():
    from contraseg.engine.config import DataConfig

    comments = ref.field_comments(DataConfig)
    assert comments["foreground_fraction"] == "share of patches centred on a labelled voxel"
    assert comments["crop_to_brain"].startswith("crop each case to its brain's bounding box")
    assert comments["crop_to_brain"].endswith("the background around the head)")
    assert comments["batch_size"] == "samples per step (per process under DDP)"


@pytest.mark.parametrize("name", BUILTIN)
def test_default_loss_weights_are_those_the_method_builds_with(name):
    entry = get_entry(name)
    tiny = yaml.safe_load(entry.presets.read_text())["tiny"]
    modalities = ("t1",) if name == "introvae" else ("t1", "t1c", "t2", "flair")
    method = build_method(name, modalities, 4, model=tiny.get("model", {}))
    assert entry.cls.default_weights() == method.loss_weights


def test_markdown_escapes_what_would_change_the_text():
    assert ref.md_text("a <file> with a_b and *x* but `c_d <e>`") == \
        "a &lt;file&gt; with a_b and \\*x\\* but `c_d <e>`"
    assert ref.cell("brats2015|brats2020 `a|b`") == "brats2015\\|brats2020 `a|b`"
    assert ref.fmt_value(1e-5) == "1.0e-05"
    assert ref.fmt_value([2.0, None, True]) == "[2.0, null, true]"


def test_preset_comments_are_mapped_to_their_keys():
    presets = ref.read_presets(
        "# the file\n\n# about p\np:  # on p\n  model:\n    depth: 4  # why depth\n"
        "  optim: {lr: 1.0e-3}  # a flow line\n  epochs: 2\n")
    assert presets.header == ["the file", "about p"]  # all before the first preset
    assert presets.notes == {"p": ["on p"]}
    assert presets.values == {"p": {"model.depth": 4, "optim.lr": 1e-3, "epochs": 2}}
    assert presets.comments == {"p": {"model.depth": "why depth", "optim.lr": "a flow line"}}


def test_pages_hold_no_path_of_this_machine(pages):
    for text in pages.values():
        assert str(REPO) not in text
        assert not re.search(r"0x[0-9a-f]{6}", text)  # no memory address of an object
