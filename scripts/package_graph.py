"""The structure of the contraseg package: its floors, the imports between its modules, and
what breaks the rules (a cycle, an import from a lower floor up to a higher one, a source file
over the line limit).

Every import counts, also those inside functions (an import deferred for start-up time is
still a dependency). Floors, bottom up: a module may import its own floor and those below.

Usage: python scripts/package_graph.py [--check] [--mermaid]
  --check: print every problem, exit 1 if there is one (tests/test_architecture.py runs it)
  --mermaid: the floors and the imports between subpackages, as the Mermaid diagram of
  docs/architecture.md
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 400
# bottom up; a module's floor is that of its longest matching prefix
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("contraseg._version", "contraseg.errors", "contraseg.utils")),
    ("data", ("contraseg.data",)),
    ("models", ("contraseg.losses", "contraseg.models", "contraseg.configs")),
    ("evaluation", ("contraseg.evaluation",)),
    ("engine", ("contraseg.engine",)),
    ("library", ("contraseg", "contraseg.api", "contraseg.bench", "contraseg.demo",
                 "contraseg.testing")),
    ("command line", ("contraseg.cli", "contraseg.__main__")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "contraseg").rglob("*.py"))}


def floor_of(module: str) -> int:
    best, floor = -1, -1
    for index, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), index
    if floor < 0:
        raise SystemExit(f"{module}: on no floor (add it to FLOORS in {__file__})")
    return floor


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The contraseg modules `path` imports (anywhere in the file)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `from a.b import name`: module a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    # a package imports its parents implicitly; that is not an arrow
    return {t for t in found if not name.startswith(t + ".")}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, name, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return result


def problems() -> list[str]:
    edges = graph()
    found = [f"cycle: {' <-> '.join(c)}" for c in cycles(edges)]
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            if floor_of(target) > floor_of(source):
                found.append(f"upward import: {source} ({FLOORS[floor_of(source)][0]}) imports "
                             f"{target} ({FLOORS[floor_of(target)][0]})")
    for path in modules().values():
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            found.append(f"too long: {path.relative_to(SRC.parent)} has {lines} lines "
                         f"(at most {MAX_LINES})")
    return found


def subpackage(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def mermaid() -> str:
    """Subpackages grouped by floor, top floor first, and the imports between them (those into
    the foundation left out: every floor uses it)."""
    edges: dict[str, set[str]] = defaultdict(set)
    for source, targets in graph().items():
        for target in targets:
            a, b = subpackage(source), subpackage(target)
            if a != b and b != "contraseg" and floor_of(b) > 0:
                edges[a].add(b)
    nodes = sorted({subpackage(m) for m in modules()} - {"contraseg"})
    ident = {n: n.replace("contraseg.", "").replace(".", "_").replace("__", "") for n in nodes}
    lines = ["flowchart TD"]
    for index in reversed(range(len(FLOORS))):
        members = [n for n in nodes if floor_of(n) == index]
        if members:
            lines.append(f'  subgraph floor{index}["{FLOORS[index][0]}"]')
            lines += [f'    {ident[n]}["{n.removeprefix("contraseg.")}"]' for n in members]
            lines.append("  end")
    lines += [f"  {ident[a]} --> {ident[b]}" for a in nodes for b in sorted(edges.get(a, ()))]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--mermaid", action="store_true")
    args = parser.parse_args()
    if args.mermaid:
        print(mermaid())
    if args.check or not args.mermaid:
        found = problems()
        print("\n".join(found) if found else "no cycle, no upward import, no file too long")
        sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
