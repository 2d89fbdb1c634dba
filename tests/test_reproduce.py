"""`contraseg reproduce` on a stand-in: a phantom written under the case IDs of a published
split, the tiny preset through every fold, and the paper table with the paper's figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contraseg.data.splits import load_split
from tests.conftest import QUIET
from tests.runners import cli


def phantom_named(out: Path, ids: list[str], size: int = 16) -> Path:
    """A brain phantom whose cases carry `ids` (folders and file names renamed)."""
    from contraseg.data.phantom import write_phantom

    written = write_phantom(out, cases=len(ids), size=size, seed=5)
    for folder, case in zip(sorted(written), ids, strict=True):
        for path in folder.iterdir():
            path.rename(folder / path.name.replace(folder.name, case))
        folder.rename(folder.parent / case)
    return out


@pytest.mark.slow(reason="writes a 369-case phantom and runs the tiny preset's training and "
                         "15-subset evaluation on it (about a minute)")
def test_reproduce_runs_the_split_and_sets_the_paper_beside_it(tmp_path):
    split = load_split("rfnet-brats2020")
    data = phantom_named(tmp_path / "BraTS2020", sorted(split.cases))
    out = tmp_path / "repro"
    sets = [w for q in [*QUIET, "epochs=1", "iters_per_epoch=2"] for w in ("--set", q)]
    done = cli("reproduce", "unet", "--data", str(data), "--split", "rfnet-brats2020",
               "--out", str(out), "--preset", "tiny", *sets)
    assert done.returncode == 0, done.stderr
    info = json.loads((out / "fold-1" / "run.json").read_text())
    assert info["status"] == "finished" and len(info["split"]["train"]) == 219
    assert len(info["split"]["test"]) == 100
    paper = json.loads((out / "paper.json").read_text())
    table = paper["tables"][0]
    assert table["paper"] == "dc-seg-brats2020" and table["method"] == "DC-Seg"
    full = next(r for r in table["rows"] if r["subset"] == "t1+t1c+t2+flair"
                and r["region"] == "WT")
    assert full["paper"] == 90.95 and full["ours"] is not None
    assert "| t1+t1c+t2+flair | WT |" in (out / "paper.md").read_text()
    again = cli("reproduce", "unet", "--data", str(data), "--split", "rfnet-brats2020",
                "--out", str(out), "--preset", "tiny", *sets)
    assert again.returncode == 0  # everything done: nothing runs again


def test_reproduce_refuses_what_would_disable_an_objective(tmp_path):
    done = cli("reproduce", "dc-seg", "--data", str(tmp_path), "--split", "rfnet-brats2020",
               "--out", str(tmp_path / "o"), "--preset", "tiny", "--set", "data.batch_size=1")
    assert done.returncode == 1 and "needs data.batch_size >= 2" in done.stderr
    nothing = cli("reproduce", "unet", "--data", str(tmp_path), "--split", "clfc-brats2019",
                  "--out", str(tmp_path / "o"), "--preset", "tiny")
    assert nothing.returncode == 1 and "publishes no patient list" in nothing.stderr
