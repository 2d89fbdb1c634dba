"""The package's structure (docs/architecture.md): floors without an upward import, no circle,
no source file over 400 lines, and the page's diagram as the code draws it."""

from __future__ import annotations

import re

from tests.conftest import REPO, load_script

graph = load_script(REPO / "scripts" / "package_graph.py")


def test_no_cycle_no_upward_import_no_file_too_long():
    assert graph.problems() == []


def test_the_checker_sees_a_cycle_and_an_upward_import():
    edges = {"contraseg.data.a": {"contraseg.data.b"}, "contraseg.data.b": {"contraseg.data.a"},
             "contraseg.models.m": set()}
    assert graph.cycles(edges) == [["contraseg.data.a", "contraseg.data.b"]]
    assert graph.floor_of("contraseg.engine.train") > graph.floor_of("contraseg.models.base")
    assert graph.floor_of("contraseg.cli.app") > graph.floor_of("contraseg.engine.train")


def test_deferred_imports_count(tmp_path):
    module = tmp_path / "mod.py"
    module.write_text("def f():\n    from contraseg.engine.train import Trainer\n")
    assert graph.imports(module, "contraseg.data.mod",
                         {"contraseg.engine.train", "contraseg.data.mod"}) == {
        "contraseg.engine.train"}


def test_the_architecture_page_draws_the_package_as_it_is():
    page = (REPO / "docs" / "architecture.md").read_text()
    drawn = re.search(r"```mermaid\n(.*?)```", page, re.S)
    assert drawn, "docs/architecture.md has no mermaid diagram"
    assert drawn.group(1).strip() == graph.mermaid().strip(), (
        "the diagram is stale: python scripts/package_graph.py --mermaid")
