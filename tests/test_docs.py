"""The README and the documentation site stay true and readable.

- every `contraseg ...` line of their shell blocks parses with today's command line (the verb
  exists, every option exists and its value has the right type, nothing required is missing);
  commands that run on the phantom are executed by the demo and CLI tests, the ones that name
  /data folders or hour-long presets are parsed, not run;
- the README starts with the two set-up commands and stays short;
- the site builds with `mkdocs build --strict` (a broken link, a missing anchor or a page left
  out of the navigation fails);
- the README and the docs describe the tool as it is: no issue numbers, earlier runs, "before"
  rows, commit ids or dates in their prose (history goes to CHANGELOG.md; the generated results
  tables name the commit of their evidence, and are left out of this check);
- the results tables equal what their archived evidence gives (scripts/results_tables.py);
- CITATION.cff is valid CFF 1.2 in its required fields.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
import typer
import yaml

from contraseg.cli import app
from tests.conftest import REPO, load_script

ELIDED = "..."  # `contraseg train ... --set x=y`: the rest of an earlier command
README = REPO / "README.md"
DOC_PAGES = sorted((REPO / "docs").rglob("*.md"))
GENERATED = re.compile(r"<!-- results: [\w-]+ -->.*?<!-- /results -->", re.DOTALL)
README_MAX_LINES = 200


def shell_commands(paths) -> list[str]:
    commands = []
    for path in paths:
        for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #")[0].strip()
                if line.startswith("contraseg ") and ELIDED not in line:
                    commands.append(line)
    return commands


COMMANDS = shell_commands([README, *DOC_PAGES])


def test_the_docs_have_commands_to_check():
    assert len(COMMANDS) > 60
    verbs = {shlex.split(c)[1] for c in COMMANDS}
    assert {"train", "predict", "evaluate", "compare", "export", "score", "data", "reproduce",
            "pretrain", "normal", "bench", "demo"} <= verbs


@pytest.mark.parametrize("command", COMMANDS)
def test_every_documented_command_parses(command):
    group = typer.main.get_command(app)
    args = shlex.split(command)[1:]
    if args[0].startswith("-"):  # a root option alone (`contraseg --version`) answers and exits
        with pytest.raises(typer.Exit):
            group.make_context("contraseg", list(args))
        return
    with group.make_context("contraseg", list(args)) as ctx:
        name, sub, rest = group.resolve_command(ctx, _remaining(ctx))
        while hasattr(sub, "resolve_command"):  # `contraseg data check`
            ctx = sub.make_context(name, list(rest), parent=ctx)
            name, sub, rest = sub.resolve_command(ctx, _remaining(ctx))
        sub.make_context(name, list(rest), parent=ctx)  # raises on any unknown or bad option


def _remaining(ctx) -> list[str]:
    """What a group left for its subcommand (click keeps the verb apart from the rest)."""
    return [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]


def test_the_readme_starts_with_the_two_commands_and_stays_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES
    first_block = README.read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["make demo", "make test"]
    assert lines.index("```bash") < 5  # the commands come first, before any prose


HISTORY = {
    "an issue number": re.compile(r"\bissues? #?\d+", re.IGNORECASE),
    "an earlier run": re.compile(r"\b(earlier|previous|older|last) (runs?|code|session|"
                                 r"measurement|sampler|rows?|commit)\b", re.IGNORECASE),
    "a 'before' row or column": re.compile(r"(\|\s*before\b)|(,\s*before\s*\()|(\"before\")",
                                           re.IGNORECASE),
    "a re-run of a row": re.compile(r"\bre-?run on the current code\b", re.IGNORECASE),
    "a commit id": re.compile(r"(?<![\w/@.-])(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}"
                              r"(?![\w-])"),
    "a date": re.compile(r"\b20\d\d-\d\d-\d\d\b"),
}


def history_found(text: str) -> list[str]:
    prose = GENERATED.sub("", text)
    found = []
    for what, pattern in HISTORY.items():
        found += [f"{what}: {m.group(0)!r}" for m in pattern.finditer(prose)]
    return found


@pytest.mark.parametrize("page", [README, *DOC_PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_the_docs_speak_of_the_tool_not_its_history(page):
    assert history_found(page.read_text()) == []


def test_the_history_check_sees_history():
    text = ("Re-run on the current code (issue 16): the row of commit 44624c1, as the earlier "
            "runs showed on 2026-12-01.\n| dc-seg, before (float32) | 1 |\n")
    kinds = {line.split(":")[0] for line in history_found(text)}
    assert kinds == set(HISTORY)
    assert history_found("<!-- results: x -->\nAll rows: commit `f529134`.\n<!-- /results -->"
                         ) == []
    assert history_found("a fixed split, set before any model was trained; sha256 of "
                         "weights; Brats18_CBICA_AAB_1") == []


def test_the_results_tables_equal_their_evidence():
    tables = load_script(REPO / "scripts" / "results_tables.py")
    cache: dict[str, str] = {}
    stale = [page for page in tables.pages() if tables.regenerate(
        page.read_text(), page, cache) != page.read_text()]
    assert stale == [], "run python scripts/results_tables.py"


def test_a_results_block_follows_its_evidence(tmp_path):
    tables = load_script(REPO / "scripts" / "results_tables.py")
    page = "intro\n<!-- results: useful-budgets -->\nold\n<!-- /results -->\nend\n"
    tables.BLOCKS = {"useful-budgets": lambda: ["| new |"]}
    assert tables.regenerate(page, tmp_path, {}) == (
        "intro\n<!-- results: useful-budgets -->\n| new |\n<!-- /results -->\nend\n")
    with pytest.raises(SystemExit, match="unknown results block 'nosuch'"):
        tables.regenerate("<!-- results: nosuch -->\n<!-- /results -->", tmp_path, {})


def test_real_scan_tables_hold_the_rows_of_one_commit(tmp_path):
    tables = load_script(REPO / "scripts" / "results_tables.py")
    for method, commit in (("unet", "aaaaaaa"), ("rfnet", "aaaaaaa"), ("clfc", "bbbbbbb")):
        (tmp_path / method / "report").mkdir(parents=True)
        (tmp_path / method / "report" / "summary.json").write_text("{}")
        (tmp_path / method / "provenance.json").write_text(f'{{"commit": "{commit}"}}')
    commit, kept, left_out = tables.real_rows(tmp_path)
    assert commit == "aaaaaaa" and list(kept) == ["unet", "rfnet"]
    assert left_out == ["dc-seg", "dcl-manet", "clfc", "swin-moco"]


def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                             str(tmp_path / "site")], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "methods" / "dc-seg.html").is_file()


def test_citation_cff_has_the_required_fields_and_complete_references():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors", "version", "license"} <= set(cff)
    titles = " ".join(ref["title"] for ref in cff["references"])
    for method_paper in ("DC-Seg", "dense contrastive learning", "Feature Comparison",
                         "Swin MoCo", "RFNet", "nnU-Net", "IntroVAE", "Simple Siamese",
                         "Self-Supervised Vision Transformers", "Swin-Unet", "MONAI", "BRATS"):
        assert method_paper.lower() in titles.lower(), method_paper
    for ref in cff["references"]:
        assert ref.get("authors") and ref.get("year"), ref["title"]
        assert ref.get("doi") or ref.get("identifiers") or ref.get("url"), ref["title"]


def test_the_performance_table_shows_each_machine_and_date(tmp_path):
    import json

    tables = load_script(REPO / "scripts" / "results_tables.py")
    bench = {"parameters": 1234567, "amp": "none", "train_step": {"median_s": 0.3312},
             "train_voxels_per_s": 1.58e6, "infer_case_all_modalities": {"median_s": 6.25},
             "peak_rss_mb": 2048}
    (tmp_path / "cpu-x-2-cores-2030-01-02.json").write_text(json.dumps({
        "date": "2030-01-02", "command": "contraseg bench ...",
        "machine": {"processor": "CPU X", "cores": 2, "torch": "9.9", "cuda_device": None},
        "methods": {"unet": bench}}))
    tables.PERFORMANCE = tmp_path
    lines = tables.performance()
    assert lines[0].startswith("**CPU X, 2 cores, torch 9.9, 2030-01-02**")
    assert "| `unet` | 1,234,567 | float32 | 0.33 | 1.58 M | 6.2 | – | 2.0 | – |" in lines
    peak = {"conv3d": {"flops_per_s": 40e9}, "matmul": {"flops_per_s": 60e9}}
    bench["utilisation"] = {"peak": peak, "train_step": {"of_conv3d_peak": 0.214},
                            "infer_case_all_modalities": {"of_conv3d_peak": 0.5}}
    bench["infer_case_15_subsets"] = {"median_s": 70.04}
    bench["infer_15_subsets_vs_floor"] = {"of_floor": 1.234, "of_time_floor": 1.051}
    (tmp_path / "cpu-x-2-cores-2030-01-02.json").write_text(json.dumps({
        "date": "2030-01-02", "command": "contraseg bench ...",
        "machine": {"processor": "CPU X", "cores": 2, "torch": "9.9", "cuda_device": None},
        "methods": {"unet": bench}}))
    lines = tables.performance()
    assert lines[0].endswith("peak of a 3D convolution 40-40 GFLOP/s and of a matrix product "
                             "60-60 GFLOP/s over the benches")
    assert ("| `unet` | 1,234,567 | float32 | 0.33 | 1.58 M | 6.2 | 70.0 (1.23x / 1.05x) | 2.0 | "
            "0.21 / 0.50 |") in lines
