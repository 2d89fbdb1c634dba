"""`amp: auto` decides from a probe of the method's own step (engine.amp_probe)."""

from __future__ import annotations

import json

import pytest
import torch

from contraseg.engine import amp_probe
from contraseg.engine.amp_probe import Candidate, candidates, choose, time_candidates
from contraseg.engine.config import load_config
from contraseg.models.registry import build_method
from tests.engine.test_train import train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def phantom(make_phantom):
    return make_phantom(cases=4, size=32, seed=3)  # the session's phantom of test_train


def stub_steps(seconds: dict[str, float]):
    """Steps that advance a fake clock by the given time per candidate key; counts calls."""
    clock, calls = [0.0], {}

    def step_for(option: Candidate):
        def step() -> None:
            calls[option.key] = calls.get(option.key, 0) + 1
            clock[0] += seconds[option.key]
        return step

    return step_for, (lambda: clock[0]), calls


def test_a_step_slower_in_bf16_picks_float32():
    options = candidates(CPU, "3d", channels_last=True)
    assert [o.key for o in options] == ["none/channels_last", "none/contiguous",
                                        "bf16/channels_last", "bf16/contiguous"]
    step_for, clock, _ = stub_steps({"none/channels_last": 0.8, "none/contiguous": 1.1,
                                     "bf16/channels_last": 1.6, "bf16/contiguous": 16.5})
    seconds = time_candidates(step_for, options, clock=clock)
    assert choose(seconds) == Candidate("none", True)


def test_bf16_or_the_other_layout_wins_only_when_clearly_faster():
    options = candidates(CPU, "3d", channels_last=True)
    faster = {"none/channels_last": 1.0, "none/contiguous": 1.2, "bf16/channels_last": 0.6,
              "bf16/contiguous": 0.9}
    step_for, clock, _ = stub_steps(faster)
    assert choose(time_candidates(step_for, options, clock=clock)) == Candidate("bf16", True)
    tie = {**faster, "bf16/channels_last": 0.97, "bf16/contiguous": 1.0,
           "none/contiguous": 0.99}  # all within 5 % of the fastest
    step_for, clock, _ = stub_steps(tie)
    assert choose(time_candidates(step_for, options, clock=clock)) == Candidate("none", True)
    layout = {**faster, "bf16/channels_last": 2.0, "bf16/contiguous": 2.0,
              "none/contiguous": 0.5}
    step_for, clock, _ = stub_steps(layout)
    assert choose(time_candidates(step_for, options, clock=clock)) == Candidate("none", False)


def test_a_candidate_far_slower_at_its_first_step_is_not_timed_further():
    options = candidates(CPU, "3d", channels_last=True)
    step_for, clock, calls = stub_steps({"none/channels_last": 1.0, "none/contiguous": 1.0,
                                         "bf16/channels_last": 2.9, "bf16/contiguous": 3.5})
    seconds = time_candidates(step_for, options, repeats=3, clock=clock)
    assert calls == {"none/channels_last": 4, "none/contiguous": 4, "bf16/channels_last": 4,
                     "bf16/contiguous": 1}
    assert seconds["bf16/contiguous"] == {"warmup_s": 3.5, "median_s": None}
    assert seconds["bf16/channels_last"]["median_s"] == pytest.approx(2.9)


def test_2d_methods_have_one_layout():
    assert [o.key for o in candidates(CPU, "2.5d", channels_last=True)] == [
        "none/contiguous", "bf16/contiguous"]


def test_the_probe_times_a_copy_and_is_cached_per_machine_and_method(tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRASEG_CACHE_DIR", str(tmp_path / "cache"))
    config = load_config("unet", "tiny", ["amp=auto"])
    torch.manual_seed(0)
    method = build_method("unet", ("t1", "t1c", "t2", "flair"), 4, config.model,
                          config.loss_weights)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    rng = torch.get_rng_state()
    found = amp_probe.probe(method, config, 4, CPU)
    assert set(found["seconds"]) == {o.key for o in candidates(CPU, "3d", True)}
    assert (found["amp"], found["channels_last"]) in {(o.amp, o.channels_last)
                                                      for o in candidates(CPU, "3d", True)}
    assert choose(found["seconds"]) == Candidate(found["amp"], found["channels_last"])
    assert not found["cached"] and found["machine"] == amp_probe.machine_key(CPU)
    assert all(torch.equal(before[k], v) for k, v in method.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)  # the run's random draws are untouched
    cache = json.loads((tmp_path / "cache" / "amp_probe.json").read_text())
    assert [entry["seconds"] for entry in cache.values()] == [found["seconds"]]

    monkeypatch.setattr(amp_probe, "probe_steps", lambda *a: pytest.fail("probed again"))
    again = amp_probe.probe(method, config, 4, CPU)
    assert again["cached"] and again["seconds"] == found["seconds"]
    wider = load_config("unet", "tiny", ["amp=auto", "data.batch_size=3"])
    monkeypatch.undo()
    monkeypatch.setenv("CONTRASEG_CACHE_DIR", str(tmp_path / "cache"))
    assert not amp_probe.probe(method, wider, 4, CPU)["cached"]  # another configuration


def test_a_run_with_amp_auto_trains_in_the_probes_choice_and_keeps_it(tmp_path, phantom,
                                                                         monkeypatch):
    """The probe's figures (a stub: bf16 contiguous fastest) decide; run.json carries them; a
    resumed run keeps the choice without probing again."""
    monkeypatch.setenv("CONTRASEG_CACHE_DIR", str(tmp_path / "cache"))
    figures = {"none/channels_last": {"warmup_s": 1.0, "median_s": 1.0},
               "none/contiguous": {"warmup_s": 1.0, "median_s": 1.0},
               "bf16/channels_last": {"warmup_s": 1.0, "median_s": 0.9},
               "bf16/contiguous": {"warmup_s": 0.5, "median_s": 0.5}}
    monkeypatch.setattr(amp_probe, "probe_steps", lambda *a: figures)
    sets = ["amp=auto", "val_every=0", "epochs=1", "iters_per_epoch=4"]
    info = train(tmp_path / "run", phantom, sets, max_steps=2)
    assert info["amp"] == "bf16"
    assert info["amp_probe"]["seconds"] == figures and not info["amp_probe"]["channels_last"]
    assert info["config"]["amp"] == "auto" and info["config"]["channels_last"] is True
    monkeypatch.setattr(amp_probe, "probe", lambda *a, **k: pytest.fail("probed on resume"))
    resumed = train(tmp_path / "run", phantom, [], resume=True)
    assert resumed["step"] == 4 and resumed["amp"] == "bf16"
    assert resumed["amp_probe"] == info["amp_probe"]
