"""dc-seg through the engine: the batch-size refusal, a run, evaluate --figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from contraseg.engine.evaluate import evaluate_run
from contraseg.engine.runs import start_training
from contraseg.errors import ConfigError


@pytest.fixture(scope="module")
def phantom(make_phantom) -> Path:
    return make_phantom(cases=3, size=32, seed=4)


def train(out: Path, data: Path, overrides: list[str]) -> dict:
    return start_training(out, method="dc-seg", data=[data], preset="tiny",
                          overrides=["val_every=0", *overrides], resume=False, max_steps=None,
                          max_minutes=None, console=None)


def test_batch_of_one_is_refused_unless_the_contrastive_terms_are_off(tmp_path, phantom):
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        train(tmp_path / "one", phantom, ["data.batch_size=1"])
    assert not (tmp_path / "one").exists()  # refused before anything was read or written
    info = train(tmp_path / "ablated", phantom, ["data.batch_size=1", "epochs=1",
                                                  "loss_weights.ana=0", "loss_weights.mod=0"])
    assert info["status"] == "finished"


def test_evaluate_draws_the_representation_figure(tmp_path, phantom):
    train(tmp_path / "run", phantom, ["epochs=1"])
    report = evaluate_run(tmp_path / "run", phantom, tmp_path / "report", subsets="full",
                          overlays=0, figures=True)
    figure = tmp_path / "report" / "figures" / "representations.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"
    assert "<h2>Figures</h2>" in report.read_text()
    assert "figures/representations.png" in (tmp_path / "report" / "summary.md").read_text()


def test_bf16_autocast_trains(tmp_path, phantom):
    info = train(tmp_path / "bf16", phantom, ["epochs=1", "amp=bf16"])
    assert info["status"] == "finished"
    record = json.loads((tmp_path / "bf16" / "log.jsonl").read_text().splitlines()[-1])
    assert set(record["loss"]) >= {"seg", "reg", "prm", "ana", "mod", "rec"}
    assert all(math.isfinite(v) for v in record["loss"].values())
    # the learned temperatures are logged beside the terms, inside CLIP's bound
    assert set(record["monitor"]) == {"t_ana", "t_mod"}
    assert all(0 < t <= 100 for t in record["monitor"].values())
