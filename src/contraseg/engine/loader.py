"""Training batches, prepared in worker processes: the batch of step s on rank r is a function of
(seed, s, r) alone, whoever computes it.

`data.workers` = 0 prepares each batch in the training process when the step asks for it;
N > 0 runs N torch DataLoader workers that prepare the next steps' batches while the model
trains (nnU-Net runs several augmentation workers for the same reason: one process cannot
augment 3D patches as fast as a GPU consumes them). The DataLoader's sampler yields step numbers
from the first step to run and each worker computes whole batches. The loader hands a step to
whichever worker has room and returns batches as they are done (`in_order=False`, torch >= 2.6);
`batches_from` puts them back in step order, so 0, 1 or N workers give the same batches, the
same weights, and `--resume` replays a run exactly. (In step order, with the steps dealt to the
workers in turn, a worker that ran ahead of a slower one waited for it: on 2 cores one worker
idled 3-30% of the time.)

Workers hand batches over through shared-memory slots allocated once (`SharedSlots`), and send
only the slot's number: passing each batch's tensors the DataLoader's way (a new shared segment
and a file descriptor per tensor) cost about 5 ms of a worker's time per U-Net `fast` batch,
a quarter of the work of making it, which left 2 workers on 2 cores barely faster than none.
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import Generator, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from contraseg.data.patches import PatchSampler

# batches in flight per worker: a batch with rotations costs 2-3 times one without, so with the
# DataLoader's 2 a worker often idled behind the other one's slow batch
PREFETCH = 4
# a worker waiting for its slot to be free looks again after this many seconds
SLOT_POLL_S = 0.0005
# torch < 2.6 has no `in_order`: its loader returns steps in order, which is slower, not wrong
_ANY_ORDER = ({"in_order": False} if "in_order" in inspect.signature(DataLoader).parameters
              else {})


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
    goes to slot s % count, and a worker writes it there only once the training process is
    done with the slot's previous batch, s - count (`wait_for_slot`): the training process
    publishes the first step whose batch it may still read (`release_before`)."""

    def __init__(self, example: dict[str, np.ndarray], count: int):
        if count < 2:
            raise ValueError(f"SharedSlots needs at least 2 slots, got {count}")
        self.count = int(count)
        self.buffers = {key: torch.from_numpy(np.stack([np.asarray(value)] * self.count))
                        .share_memory_() for key, value in example.items()}
        # [first step whose batch the training process may still read, 1 once it has stopped]
        self.state = torch.zeros(2, dtype=torch.int64).share_memory_()

    def slot_of(self, step: int) -> int:
        return step % self.count

    def release_before(self, step: int) -> None:
        """The training process is done with the batches of the steps before `step`."""
        self.state[0] = step

    def close(self) -> None:
        """The training process takes no more batches: waiting workers give up."""
        self.state[1] = 1

    def wait_for_slot(self, step: int) -> bool:
        """Block until step's slot is free (its previous batch released); False if the
        training process stopped taking batches meanwhile."""
        while step - self.count >= int(self.state[0]):
            if int(self.state[1]):
                return False
            time.sleep(SLOT_POLL_S)
        return not int(self.state[1])

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
        return {key: view.pin_memory() for key, view in views.items()}  # pinning copies


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
        if self.slots.wait_for_slot(step):
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
    # one slot per batch in flight, and 2 for the batches the caller holds: workers then
    # wait for a slot only when one of them ran far ahead of a slow step
    slots = SharedSlots(first, PREFETCH * workers + 2)
    loader = DataLoader(StepBatches(sampler, seed, rank, batch_size, slots), batch_size=None,
                        sampler=StepsFrom(first_step + 1), num_workers=int(workers),
                        prefetch_factor=PREFETCH, persistent_workers=False, **_ANY_ORDER)
    yield _tensors(first, pin_memory)
    tickets = iter(loader)
    done: dict[int, dict[str, int]] = {}  # tickets of steps that came back early
    try:
        for step in itertools.count(first_step + 1):
            slots.release_before(step - 1)  # the caller still holds the batch of step - 1
            while step not in done:
                ticket = next(tickets)
                done[int(ticket["step"])] = ticket
            yield slots.take(done.pop(step), pin_memory)
    finally:
        slots.close()
        del tickets  # shuts the workers down now, not at garbage collection


def _tensors(arrays: dict[str, np.ndarray], pin_memory: bool) -> dict[str, torch.Tensor]:
    tensors = {key: torch.from_numpy(np.asarray(value)) for key, value in arrays.items()}
    return {key: t.pin_memory() for key, t in tensors.items()} if pin_memory else tensors
