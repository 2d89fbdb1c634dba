"""contraseg's `rfnet` (paper preset) against the authors' RFNet, side by side in ONE process.

Both models get the same random batch (80^3 x 1 by default, the authors' crop), the same thread
count and the same optimiser (Adam, amsgrad, lr 2e-4, weight decay 1e-4). A training step is the
forward with every loss term the authors' train.py sums (fuse, the four sep decoders, the four prm
maps: weighted CE + Dice each), backward and the optimiser step; an eval forward is the fusion
path alone, without gradients. Runs alternate between the two models (so load on the machine
hits both alike); the medians of `--repeats` runs after one warm-up are compared. Prints JSON;
`train_ratio` and `eval_ratio` are the authors' median time / contraseg's (above 1: contraseg is
faster).

The authors' code is not part of contraseg and nothing is fetched at run time. Get it once:
    git clone https://github.com/dyh127/RFNet /tmp/RFNet      # models.py, layers.py, utils/
and pass that folder. Their modules are imported from it as they are (they run on CPU as given).

`--amp bf16` runs BOTH models under bfloat16 autocast (the same setting on each side; on a
CPU with AVX-512 BF16 it roughly halves both steps, so it leaves the ratio about where it is).

Usage: python scripts/bench_vs_authors.py AUTHORS_DIR [--size 80] [--batch 1] [--repeats 3]
           [--threads N] [--amp none|bf16]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from contraseg.engine.distributed import autocast

MODALITIES = ("flair", "t1c", "t1", "t2")  # the authors' channel order


def load_authors(folder: Path):
    """(models, criterions) of the authors' RFNet, imported from `folder`."""
    missing = [n for n in ("models.py", "layers.py", "utils/criterions.py")
               if not (folder / n).is_file()]
    if missing:
        sys.exit(f"{folder}: missing {', '.join(missing)} of the authors' RFNet "
                 "(git clone https://github.com/dyh127/RFNet)")
    sys.path.insert(0, str(folder))  # their models.py imports `layers`
    import models  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("rfnet_criterions",
                                                  folder / "utils" / "criterions.py")
    criterions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(criterions)
    return models, criterions


def authors_step(model, criterions, x, mask, onehot, optimizer):
    model.is_training = True
    fuse, seps, prms = model(x, mask)
    loss = criterions.softmax_weighted_loss(fuse, onehot, num_cls=4) + criterions.dice_loss(
        fuse, onehot, num_cls=4)
    for pred in (*seps, *prms):
        loss = loss + criterions.softmax_weighted_loss(pred, onehot, num_cls=4)
        loss = loss + criterions.dice_loss(pred, onehot, num_cls=4)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def authors_eval(model, x, mask):
    model.is_training = False
    with torch.no_grad():
        model(x, mask)


def ours(size: int, batch: int):
    """(method, optimizer, step, eval) of contraseg's rfnet paper preset, laid out as the engine
    trains it (channels-last-3d)."""
    from contraseg.engine.config import load_config
    from contraseg.engine.optim import make_optimizer
    from contraseg.models.base import Batch, memory_format
    from contraseg.models.registry import build_method

    config = load_config("rfnet", "paper", [f"data.patch_size=[{size},{size},{size}]"])
    method = build_method("rfnet", MODALITIES, 4, config.model, config.loss_weights)
    layout = memory_format(method, config.channels_last)
    method.to(memory_format=layout)
    optimizer = make_optimizer(method.param_groups(config.optim.lr), config.optim)
    return method, optimizer, layout, Batch


def timed(fn, amp: str = "none") -> float:
    start = time.perf_counter()
    with autocast(amp, torch.device("cpu")):
        fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("authors", type=Path)
    parser.add_argument("--size", type=int, default=80)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--amp", choices=("none", "bf16"), default="none",
                        help="autocast both models (bf16) or neither")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models, criterions = load_authors(args.authors.resolve())
    torch.manual_seed(0)
    theirs = models.Model(num_cls=4)
    their_opt = torch.optim.Adam(theirs.parameters(), lr=2e-4, weight_decay=1e-4, amsgrad=True)
    method, our_opt, layout, Batch = ours(args.size, args.batch)

    shape = (args.batch, 4, args.size, args.size, args.size)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen)
    labels = torch.randint(0, 4, (args.batch, *shape[2:]), generator=gen)
    onehot = F.one_hot(labels, 4).permute(0, 4, 1, 2, 3).float()
    mask = torch.ones(args.batch, 4, dtype=torch.bool)
    batch = Batch(x.contiguous(memory_format=layout), mask, labels, epoch=10_000)

    def our_step():
        total, _ = method.total_loss(batch)
        our_opt.zero_grad(set_to_none=True)
        total.backward()
        our_opt.step()

    def our_eval():
        method.eval()
        with torch.no_grad():
            method(batch.images, mask)
        method.train()

    runs = {"authors_train": lambda: authors_step(theirs, criterions, x, mask, onehot, their_opt),
            "contraseg_train": our_step,
            "authors_eval": lambda: authors_eval(theirs, x, mask), "contraseg_eval": our_eval}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():  # warm-up: allocations, kernel choice
        timed(fn, args.amp)
    for _ in range(args.repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn, args.amp))
    median = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({
        "threads": args.threads, "size": args.size, "batch": args.batch, "amp": args.amp,
        "repeats": args.repeats, "memory_format": str(layout).replace("torch.", ""),
        "parameters": {"authors": sum(p.numel() for p in theirs.parameters()),
                       "contraseg": sum(p.numel() for p in method.parameters())},
        "seconds": times, "median_s": median,
        "train_ratio": median["authors_train"] / median["contraseg_train"],
        "eval_ratio": median["authors_eval"] / median["contraseg_eval"],
    }, indent=2))


if __name__ == "__main__":
    main()
