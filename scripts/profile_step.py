"""Where a training step's time goes: torch.profiler over one step of a method's preset (after
one warm-up step), the operators with the most self CPU time, and the share of that time spent
in convolutions and matrix products (what FLOP counts see) against everything else.

With --infer one|all: the sliding-window pass over one random case of --case voxels instead
(the preset's window and overlap), with all four modalities or all 15 subsets at once: where
the 15-subset pass spends what its FLOP floor does not count.

Usage: python scripts/profile_step.py METHOD [--preset fast] [--patch 48] [--batch 2]
           [--threads N] [--rows 15] [--infer one|all] [--case 96 96 96]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    from contraseg.engine.config import load_config
    from contraseg.engine.optim import make_optimizer
    from contraseg.models.base import Batch, memory_format
    from contraseg.models.registry import build_method

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--infer", choices=["one", "all"])
    parser.add_argument("--case", type=int, nargs=3, default=[96, 96, 96])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = [args.patch] * 3
    config = load_config(args.method, args.preset, [f"data.patch_size={size}"])
    method = build_method(args.method, ("t1", "t1c", "t2", "flair"), 4, config.model,
                          config.loss_weights)
    layout = memory_format(method, config.channels_last)
    method.to(memory_format=layout)
    optimizer = make_optimizer(method.param_groups(config.optim.lr), config.optim)
    gen = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(args.batch, 4, *size, generator=gen).contiguous(
                      memory_format=layout), torch.ones(args.batch, 4, dtype=torch.bool),
                  torch.randint(0, 4, (args.batch, *size), generator=gen), epoch=10_000)

    def step() -> None:
        total, _ = method.total_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    if args.infer:
        step = inference(method, config, args.infer, args.case, layout)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    print(dense_share(averages))


DENSE = ("conv", "mm", "matmul", "einsum", "linear")  # what FlopCounterMode counts


def dense_share(averages) -> str:
    """The share of self CPU time in convolutions and matrix products."""
    total = sum(e.self_cpu_time_total for e in averages)
    dense = sum(e.self_cpu_time_total for e in averages
                if any(word in e.key.lower() for word in DENSE))
    return (f"convolutions and matrix products: {dense / 1e6:.2f} s of {total / 1e6:.2f} s self "
            f"CPU time ({100 * dense / max(total, 1):.0f} %)")


def inference(method, config, which: str, case: list[int], layout):
    """The sliding-window pass of one random case, all four modalities or all 15 subsets."""
    from contraseg.engine.sliding_window import sliding_window_outputs
    from contraseg.evaluation.protocol import all_subsets, availability

    modalities = ("t1", "t1c", "t2", "flair")
    rows = (torch.ones(1, 4, dtype=torch.bool) if which == "one" else
            torch.tensor([availability(s, modalities) for s in all_subsets(modalities)]))
    image = torch.randn(1, 4, *case, generator=torch.Generator().manual_seed(1))
    return lambda: sliding_window_outputs(method, image, rows, config.infer,
                                          config.data.patch_size)


if __name__ == "__main__":
    main()
