"""`budget_minutes` as a number of steps: the trainer times its first steps, fits the schedule
so that training ends when the budget does, and keeps re-fitting it to the pace it measures.

The fitted budget (in run.json, kept on resume) holds `total_steps` and how it was found
(`step_seconds`, `timed_steps`, `refits`); `epochs` is the whole epochs the steps span, the
last one partial where the budget ends inside it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from contraseg.engine import distributed

CALIBRATION_STEPS = 20  # steps timed to fit a budget (the first 3 warm up, not counted)
REFIT_STEPS = 20  # a fitted budget follows the pace of the last this many steps
MARGIN = 1.03  # per-step time x this: epoch ends and checkpoints cost a little too


class TimeBudget:
    """The step count of a run's time budget, for the trainer to apply (`Trainer._set_budget_
    steps`: config, lr schedule, run files). `fitted` is the run's budget record, or None."""

    def __init__(self, minutes: float | None, ctx: distributed.DistContext,
                 fitted: dict[str, Any] | None):
        self.minutes, self.ctx, self.fitted = minutes, ctx, fitted
        self.mark(0)

    def mark(self, step: int) -> None:
        """The pace is measured from here (after each fit and refit)."""
        self.mark_step, self.mark_clock = step, time.monotonic()

    def total_steps(self, configured: int) -> int:
        return int(self.fitted["total_steps"]) if self.fitted else configured

    def should_fit(self, timed_steps: int) -> bool:
        return (self.minutes is not None and self.fitted is None
                and timed_steps == CALIBRATION_STEPS)

    def should_refit(self, step: int, total: int) -> bool:
        """A fitted budget is checked again every REFIT_STEPS steps (not once an epoch: a
        machine that gets busier inside the last epoch would overrun the budget by up to its
        length)."""
        return self.fitted is not None and step < total and step - self.mark_step >= REFIT_STEPS

    def fit(self, step: int, step_seconds: list[float], elapsed: float
            ) -> tuple[int, dict[str, Any]]:
        """The steps that end training when `minutes` does, from the median time of the steps
        so far (the slowest rank's under DDP), and the facts to record."""
        per_step = max(distributed.gather_floats(self.ctx, float(np.median(step_seconds))))
        remaining = 60 * float(self.minutes) - elapsed
        total = self._same_on_every_rank(step + max(int(remaining / (per_step * MARGIN)), 0))
        return total, {"minutes": self.minutes, "step_seconds": per_step,
                       "timed_steps": len(step_seconds)}

    def refit(self, step: int, train_seconds: float) -> tuple[int, dict[str, Any]]:
        """Move the end of the schedule (never before the current step) so that training ends
        with the budget at the pace since the last fit, every cost counted (checkpoints,
        logging, other work on the machine): the first 20 steps' median alone misjudges a
        long run."""
        now = time.monotonic()
        pace = (now - self.mark_clock) / max(step - self.mark_step, 1)
        pace = max(distributed.gather_floats(self.ctx, pace))
        remaining = 60 * float(self.minutes) - train_seconds
        total = self._same_on_every_rank(step + max(int(remaining / pace), 0))
        self.mark_step, self.mark_clock = step, now
        return total, {"step_seconds": pace, "refits": (self.fitted or {}).get("refits", 0) + 1}

    def record(self, total: int, epochs: int, facts: dict[str, Any]) -> None:
        self.fitted = {**(self.fitted or {}), **facts, "epochs": epochs, "total_steps": total}

    def _same_on_every_rank(self, total: int) -> int:
        """The smallest rank's step count: each rank timed its own clock, and all must stop
        at the same step (DDP)."""
        return int(min(distributed.gather_floats(self.ctx, float(total))))
