"""Training batches, prepared in worker processes: the batch of step s on rank r is a function of
(seed, s, r) alone, whoever computes it.

`data.workers` = 0 prepares each batch in the training process when the step asks for it;
N > 0 runs N torch DataLoader workers that prepare the next steps' batches while the model
trains (nnU-Net runs several augmentation workers for the same reason: one process cannot
augment 3D patches as fast as a GPU consumes them). The DataLoader's sampler yields step numbers
from the first step to run, each worker computes whole batches, and batches come back in step
order, so 0, 1 or N workers give the same batches, the same weights, and `--resume` replays a
run exactly.

Workers hand batches over through shared-memory slots allocated once (`SharedSlots`), and send
only the slot's number: passing each batch's tensors the DataLoader's way (a new shared segment
and a file descriptor per tensor) cost about 5 ms of a worker's time per U-Net `fast` batch,
a quarter of the work of making it, which left 2 workers on 2 cores barely faster than none.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from contraseg.data.dataset import PatchSampler

# batches in flight per worker: a batch with rotations costs 2-3 times one without, and batches
# come back in step order, so with the DataLoader's 2 a worker often idled behind the other
# one's slow batch (2 workers: 1.5-1.6x one worker's patches/s; with 4: 1.65-1.7x)
PREFETCH = 4


def step_batch(sampler: PatchSampler, seed: int, step: int, rank: int, batch_size: int,
               out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The batch of `step` on `rank`, and the seed of torch's generator for that step (the
    model's own randomness: dropout, masks), both drawn from one generator seeded with
    (seed, step, rank); written into `out` when given (arrays of the batch's shapes)."""
    rng = np.random.default_rng([seed, step, rank])
    torch_seed = np.int64(rng.integers(2**62))
    arrays = sampler.sample(rng, batch_size, out=out)
    if out is not None:
        out["torch_seed"][...] = torch_seed
        return out
    arrays["torch_seed"] = torch_seed
    return arrays


class SharedSlots:
    """Shared-memory buffers for `count` batches shaped like `example`. The batch of step s
    goes to slot s % count: with `count` above the loader's batches in flight, a slot is
    written again only after the training process is done with its batch (`batches_from`)."""

    def __init__(self, example: dict[str, np.ndarray], count: int):
        self.count = int(count)
        self.buffers = {key: torch.from_numpy(np.stack([np.asarray(value)] * self.count))
                        .share_memory_() for key, value in example.items()}

    def slot_of(self, step: int) -> int:
        return step % self.count

    def arrays(self, slot: int) -> dict[str, np.ndarray]:
        """The slot's buffers as numpy arrays (a worker writes the batch into them)."""
        return {key: buffer[slot].numpy() for key, buffer in self.buffers.items()}

    def take(self, ticket: dict[str, int], pin_memory: bool = False) -> dict[str, torch.Tensor]:
        """The batch of `ticket` (in the training process): the slot's own tensors (no copy;
        see `batches_from` for how long they hold it), or a copy in page-locked memory for a
        GPU when `pin_memory`."""
        slot = int(ticket["slot"])
        views = {key: buffer[slot] for key, buffer in self.buffers.items()}
        if not pin_memory:
            return views
        # numpy copies in this thread: torch's copy_ would wake its OpenMP threads, which then
        # spin-wait on the cores the workers need
        return _tensors({key: view.numpy().copy() for key, view in views.items()}, True)


class StepBatches(Dataset):
    """A map-style dataset whose index is the step: item s is `step_batch(..., s, ...)`,
    written into `slots` (the loader carries only its ticket)."""

    def __init__(self, sampler: PatchSampler, seed: int, rank: int, batch_size: int,
                 slots: SharedSlots):
        self.sampler, self.seed, self.rank, self.batch_size = sampler, seed, rank, batch_size
        self.slots = slots

    def __getitem__(self, step: int) -> dict[str, int]:
        step = int(step)
        slot = self.slots.slot_of(step)
        step_batch(self.sampler, self.seed, step, self.rank, self.batch_size,
                   out=self.slots.arrays(slot))
        return {"step": step, "slot": slot}


class StepsFrom(Sampler[int]):
    """first, first + 1, ... without end (training stops taking batches when it is done)."""

    def __init__(self, first: int):
        self.first = int(first)

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.first)


def batches_from(sampler: PatchSampler, *, seed: int, rank: int, batch_size: int,
                 first_step: int, workers: int = 0, pin_memory: bool = False
                 ) -> Generator[dict[str, torch.Tensor], None, None]:
    """Batches of `first_step`, `first_step + 1`, ... as tensors (see the module docstring);
    closing the generator (or dropping it) stops the workers. With workers (and no
    `pin_memory`) a batch's tensors are the shared slot itself, not a copy: they hold the
    batch until the batch after the next one is asked for (then a worker may refill them), so
    a caller that keeps a batch longer keeps a copy."""
    if not workers:
        for step in itertools.count(first_step):
            yield _tensors(step_batch(sampler, seed, step, rank, batch_size), pin_memory)
    first = step_batch(sampler, seed, first_step, rank, batch_size)  # also shapes the slots
    # The DataLoader asks for one new step per batch it returns, and for PREFETCH x workers
    # at the start, so while batch s is in use the steps being written are at most s + 1 ..
    # s + 1 + PREFETCH x workers (the request for the next batch included): that many slots
    # + 1 keep batch s untouched until the batch after s + 1 is asked for.
    slots = SharedSlots(first, PREFETCH * workers + 2)
    loader = DataLoader(StepBatches(sampler, seed, rank, batch_size, slots), batch_size=None,
                        sampler=StepsFrom(first_step + 1), num_workers=int(workers),
                        prefetch_factor=PREFETCH, persistent_workers=False)
    yield _tensors(first, pin_memory)
    tickets = iter(loader)
    try:
        for ticket in tickets:
            yield slots.take(ticket, pin_memory)
    finally:
        del tickets  # shuts the workers down now, not at garbage collection


def _tensors(arrays: dict[str, np.ndarray], pin_memory: bool) -> dict[str, torch.Tensor]:
    tensors = {key: torch.from_numpy(np.asarray(value)) for key, value in arrays.items()}
    return {key: t.pin_memory() for key, t in tensors.items()} if pin_memory else tensors
