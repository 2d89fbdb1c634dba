"""Batches prepared by loader workers: those of the steps asked for, in step order, equal to the
training process's own, whatever the number of workers."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from contraseg.data.patches import PatchSampler, build_augmentation
from contraseg.data.train_case import TrainCase
from contraseg.engine import loader
from contraseg.engine.config import AugmentConfig
from contraseg.engine.loader import SharedSlots, batches_from, step_batch
from tests.conftest import STARTS_PROCESSES

pytestmark = STARTS_PROCESSES  # loader workers


def toy_cases(n: int = 3) -> list[TrainCase]:
    rng = np.random.default_rng(1)
    cases = []
    for i in range(n):
        label = np.zeros((24, 20, 18), np.uint8)
        label[5 + i:12 + i, 6:11, 4:9] = 1 + i % 3
        image = rng.standard_normal((4, 24, 20, 18)).astype(np.float32)
        cases.append(TrainCase(f"c{i}", image, label, np.ones(4, bool), np.argwhere(label)))
    return cases


def sampler() -> PatchSampler:
    augment = AugmentConfig(rotate_prob=1.0, scale_prob=0.5, shift_prob=0.5)
    return PatchSampler(toy_cases(), (12, 12, 12), 0.5, True, build_augmentation(augment, "3d"))


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_are_those_of_their_steps_with_any_number_of_workers(workers):
    source = sampler()
    stream = batches_from(source, seed=7, rank=1, batch_size=2, first_step=5, workers=workers)
    for step in range(5, 10):
        batch = next(stream)
        expected = step_batch(source, 7, step, 1, 2)
        assert batch.keys() == expected.keys()
        for key, value in expected.items():
            assert isinstance(batch[key], torch.Tensor)
            np.testing.assert_array_equal(batch[key].numpy(), value, err_msg=f"{key} {step}")
    stream.close()


class UnevenSampler(PatchSampler):
    """Steps that take random times, so the workers finish out of order."""

    def sample(self, rng, batch_size, out=None):
        time.sleep(float(np.random.default_rng().uniform(0, 0.02)))
        return super().sample(rng, batch_size, out)


def test_no_slot_is_overwritten_before_its_batch_is_taken():
    """Workers of uneven speed and a consumer that sometimes lags: every batch still equals
    its step's (a slot reused too early would hold a later step's patches)."""
    base = sampler()
    uneven = UnevenSampler(base.cases, base.patch, 0.5, True, base.augment)
    stream = batches_from(uneven, seed=2, rank=0, batch_size=2, first_step=0, workers=2)
    lag = np.random.default_rng(0)
    for step in range(40):
        batch = next(stream)
        time.sleep(float(lag.uniform(0, 0.03)))
        np.testing.assert_array_equal(batch["images"].numpy(),
                                      step_batch(base, 2, step, 0, 2)["images"], f"step {step}")
    stream.close()


def test_with_two_slots_workers_wait_until_the_batch_before_the_last_one_is_released(
        monkeypatch):
    """With as few slots as the caller holds batches, workers (of uneven speed, done out of
    order) must wait for every slot: each batch still equals its step's and stays intact
    until the batch after the next one is asked for."""
    monkeypatch.setattr(loader, "SharedSlots", lambda example, count: SharedSlots(example, 2))
    base = sampler()
    uneven = UnevenSampler(base.cases, base.patch, 0.5, True, base.augment)
    stream = batches_from(uneven, seed=3, rank=0, batch_size=2, first_step=0, workers=2)
    previous = None
    for step in range(16):
        batch = next(stream)
        np.testing.assert_array_equal(batch["images"].numpy(),
                                      step_batch(base, 3, step, 0, 2)["images"], f"step {step}")
        if previous is not None:
            np.testing.assert_array_equal(previous["images"].numpy(),
                                          step_batch(base, 3, step - 1, 0, 2)["images"],
                                          f"step {step - 1} while {step} is in use")
        previous = batch
    stream.close()


def test_a_step_batch_depends_on_seed_step_and_rank():
    source = sampler()
    base = step_batch(source, 0, 3, 0, 2)
    np.testing.assert_array_equal(step_batch(source, 0, 3, 0, 2)["images"], base["images"])
    for other in (step_batch(source, 1, 3, 0, 2), step_batch(source, 0, 4, 0, 2),
                  step_batch(source, 0, 3, 1, 2)):
        assert not np.array_equal(other["images"], base["images"])
        assert other["torch_seed"] != base["torch_seed"]
