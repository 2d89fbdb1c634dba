"""Learning-rate schedules: closed-form values, and the plateau schedule epoch by epoch."""

from __future__ import annotations

import math

import pytest
import torch

from contraseg.engine.config import OptimConfig
from contraseg.engine.optim import lr_factor, make_scheduler
from contraseg.errors import ConfigError


def test_poly_schedule_matches_the_formula():
    cfg = OptimConfig(schedule="poly", poly_power=0.9)
    assert lr_factor(0, 100, cfg) == 1.0
    assert lr_factor(50, 100, cfg) == pytest.approx(0.5**0.9)
    assert lr_factor(100, 100, cfg) == 0.0


def test_cosine_with_warmup():
    cfg = OptimConfig(schedule="cosine", warmup_steps=10)
    assert lr_factor(0, 110, cfg) == pytest.approx(0.1)
    assert lr_factor(9, 110, cfg) == pytest.approx(1.0)
    assert lr_factor(60, 110, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(110, 110, cfg) == pytest.approx(0.0)


def test_constant():
    assert lr_factor(77, 100, OptimConfig(schedule="constant")) == 1.0


def _optimizer(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_plateau_lowers_the_lr_after_patience_flat_epochs():
    optimizer = _optimizer()
    schedule = make_scheduler(optimizer, OptimConfig(schedule="plateau", plateau_factor=0.5,
                                                     plateau_patience=2), total_steps=100)
    for _ in range(10):
        schedule.step()  # steps inside an epoch change nothing
    assert schedule.get_last_lr() == [1.0]
    lrs = []
    for loss in [3.0, 2.0, 2.5, 2.4, 2.1, 2.2, 1.0]:
        schedule.end_epoch(loss)
        lrs.append(schedule.get_last_lr()[0])
    # best 2.0 at epoch 2; epochs 3 and 4 are the patience, epoch 5 the third flat one
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5]
    restored = make_scheduler(_optimizer(0.5), OptimConfig(schedule="plateau"), 100)
    restored.load_state_dict(schedule.state_dict())
    assert restored.state_dict()["best"] == 1.0


def test_step_schedules_ignore_the_end_of_an_epoch():
    optimizer = _optimizer()
    schedule = make_scheduler(optimizer, OptimConfig(schedule="poly"), total_steps=10)
    optimizer.step()
    schedule.step()
    before = schedule.get_last_lr()
    schedule.end_epoch(123.0)
    assert schedule.get_last_lr() == before


def test_plateau_with_warmup_is_refused():
    with pytest.raises(ConfigError, match="warm-up"):
        make_scheduler(_optimizer(), OptimConfig(schedule="plateau", warmup_steps=5), 100)
