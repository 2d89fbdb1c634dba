"""Where a training step's time goes: torch.profiler over one step of a method's preset (after
one warm-up step), the operators with the most self CPU time.

Usage: python scripts/profile_step.py METHOD [--preset fast] [--patch 48] [--batch 2]
           [--threads N] [--rows 15]
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

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
