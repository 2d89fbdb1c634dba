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


@pytest.mark.slow(reason="writes a 285-case phantom and runs the tiny preset's training and "
                         "15-subset evaluation on each of the split's three draws (about two "
                         "minutes)")
def test_reproduce_runs_every_fold_of_the_split_and_sets_the_paper_beside_it(tmp_path):
    """The stand-in of a BraTS 2018 reproduction: the phantom under the 285 case IDs of RFNet's
    split, `reproduce --preset tiny` through its three draws, and paper.md holding RFNet's
    printed averages beside the mean over the three."""
    draws = [load_split(f"rfnet-brats2018:{k}") for k in (1, 2, 3)]
    data = phantom_named(tmp_path / "BraTS2018", sorted(draws[0].cases))
    out = tmp_path / "repro"
    sets = [w for q in [*QUIET, "epochs=1", "iters_per_epoch=2"] for w in ("--set", q)]
    args = ["reproduce", "rfnet", "--data", str(data), "--split", "rfnet-brats2018", "--out",
            str(out), "--preset", "tiny", *sets]
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    for k, draw in enumerate(draws, start=1):
        info = json.loads((out / f"fold-{k}" / "run.json").read_text())
        assert info["status"] == "finished" and info["config"]["split"] == f"rfnet-brats2018:{k}"
        assert sorted(c.split("/")[-1] for c in info["split"]["test"]) == sorted(draw.test)
        assert (out / f"fold-{k}" / "report" / "metrics.csv").is_file()
    paper = json.loads((out / "paper.json").read_text())
    (table,) = paper["tables"]
    assert table["paper"] == "rfnet-brats2018" and table["method"] == "RFNet"
    assert [row["paper"] for row in table["rows"]] == [85.67, 76.53, 57.12]
    assert all(row["ours"] is not None for row in table["rows"])
    assert "| average | ET |" in (out / "paper.md").read_text()
    stamp = (out / "fold-1" / "run.json").stat().st_mtime
    again = cli(*args)
    assert again.returncode == 0
    assert (out / "fold-1" / "run.json").stat().st_mtime == stamp  # done: nothing ran again


def test_a_dry_run_prints_every_step_and_an_estimate(tmp_path):
    done = cli("reproduce", "unet", "--data", str(tmp_path / "BraTS2018"), "--split",
               "rfnet-brats2018", "--out", str(tmp_path / "o"), "--preset", "tiny", "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    trains = [line for line in lines if line.startswith("contraseg train")]
    evaluates = [line for line in lines if line.startswith("contraseg evaluate")]
    assert len(trains) == len(evaluates) == 3
    assert "--split rfnet-brats2018:2" in trains[1]
    assert all("--which last" in line for line in evaluates)  # the protocol's checkpoint
    assert any(line.startswith("estimate") and "not a promise" in line for line in lines)
    assert any("training: " in line and "MiB" in line for line in lines)
    assert not (tmp_path / "o").exists()  # nothing ran


def test_reproduce_refuses_what_would_disable_an_objective(tmp_path):
    done = cli("reproduce", "dc-seg", "--data", str(tmp_path), "--split", "rfnet-brats2020",
               "--out", str(tmp_path / "o"), "--preset", "tiny", "--set", "data.batch_size=1")
    assert done.returncode == 1 and "needs data.batch_size >= 2" in done.stderr
    nothing = cli("reproduce", "unet", "--data", str(tmp_path), "--split", "clfc-brats2019",
                  "--out", str(tmp_path / "o"), "--preset", "tiny")
    assert nothing.returncode == 1 and "publishes no patient list" in nothing.stderr
