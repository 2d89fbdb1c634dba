"""Learning-rate schedules: closed-form values."""

from __future__ import annotations

import math

import pytest

from contraseg.engine.config import OptimConfig
from contraseg.engine.optim import lr_factor


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
