"""How much of the machine a step or an inference pass uses: achieved FLOP/s against the peak
of a large matrix product and a large 3D convolution measured in the same run, in the same
precision (what the kernels here can reach, not a datasheet figure).

FLOPs are counted by PyTorch's FlopCounterMode: matrix products and convolutions, forward and
backward; element-wise work (norms, activations, softmax, the optimiser) is not counted, so a
ratio well below 1 can be element-wise time as much as idle cores.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from contraseg.engine.distributed import autocast

MATMUL_SIZE = 2048  # a 2048^3 product: 17 GFLOP
CONV_SHAPE = (2, 32, 48, 48, 48)  # a 3x3x3 convolution 32 -> 32 channels: 12 GFLOP


def counted_flops(func: Callable[[], object]) -> int:
    """The FLOPs FlopCounterMode counts while `func` runs once."""
    with FlopCounterMode(display=False) as counter:
        func()
    return int(counter.get_total_flops())


def _median_seconds(func: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    func()  # warm-up
    sync()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        sync()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def machine_peak(device: torch.device, amp: str = "none", repeats: int = 3) -> dict:
    """FLOP/s of a large matrix product and of a large channels-last 3D convolution under
    `amp`'s autocast, medians of `repeats`."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=gen).to(device)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, generator=gen).to(device)
    conv = torch.nn.Conv3d(CONV_SHAPE[1], CONV_SHAPE[1], 3, padding=1).to(device)
    conv = conv.to(memory_format=torch.channels_last_3d)
    x = torch.randn(*CONV_SHAPE, generator=gen).to(device)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    out = {}
    with torch.no_grad():
        for name, func in (("matmul", lambda: a @ b), ("conv3d", lambda: conv(x))):
            def run(func=func) -> None:
                with autocast(amp, device):
                    func()
            flops = counted_flops(run)
            seconds = _median_seconds(run, repeats, sync)
            out[name] = {"flops": flops, "median_s": seconds, "flops_per_s": flops / seconds}
    out["shapes"] = {"matmul": [MATMUL_SIZE] * 3, "conv3d": list(CONV_SHAPE)}
    return out


def utilisation(flops: int, seconds: float, peak: dict) -> dict:
    """Achieved FLOP/s and its share of each peak."""
    achieved = flops / seconds
    return {"flops": flops, "flops_per_s": achieved,
            "of_matmul_peak": achieved / peak["matmul"]["flops_per_s"],
            "of_conv3d_peak": achieved / peak["conv3d"]["flops_per_s"]}
