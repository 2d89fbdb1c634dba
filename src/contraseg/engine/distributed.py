"""DistributedDataParallel on PyTorch's own launcher (`torchrun`): rank, device, collectives.

`torchrun --nproc_per_node=N -m contraseg train ...` sets RANK, LOCAL_RANK and WORLD_SIZE;
without them everything runs in one process. NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist

from contraseg.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    """'auto' -> the local GPU when there is one, else the CPU; 'cuda' -> this rank's GPU."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{spec}' asked for, but torch sees no CUDA device")
        return torch.device(spec if ":" in spec else f"cuda:{local_rank}")
    if spec != "cpu":
        raise ConfigError(f"unknown device '{spec}' (auto, cpu, cuda, cuda:N)")
    return torch.device("cpu")


def native_bf16(device: torch.device) -> bool:
    """Whether `device` runs bfloat16 in hardware: a CUDA GPU with bf16, or a CPU whose oneDNN
    has bf16 kernels (AVX-512 BF16 or AMX). Elsewhere bf16 autocast is emulated and slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_amp(amp: str, device: torch.device) -> str:
    """The autocast a run uses: 'none', 'bf16' and 'fp16' are kept (fp16 needs CUDA); 'auto'
    is 'bf16' where `native_bf16(device)`, else 'none' (where no step is timed: a training
    run's 'auto' is the choice of engine.amp_probe instead)."""
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp=fp16 needs a CUDA device; use amp=bf16 (or auto) on the CPU")
    if amp == "auto":
        return "bf16" if native_bf16(device) else "none"
    return amp


def autocast(amp: str, device: torch.device) -> AbstractContextManager:
    """The context a resolved `amp` ('none', 'bf16' or 'fp16') runs forward passes in: the one
    spelling shared by training, inference and the benchmarks."""
    if amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def setup(device_spec: str) -> DistContext:
    """Join the process group when launched by torchrun; else a single-process context."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, local_rank, world_size, device)


def wrap(module: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """`module` in DistributedDataParallel when the run has several ranks, else as it is."""
    if not ctx.distributed:
        return module
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def parameter_checksum(module: torch.nn.Module) -> float:
    """A float fingerprint of every parameter (sum of |w| weighted by position), to compare
    the weights held by different ranks."""
    total = torch.zeros((), dtype=torch.float64)
    for i, param in enumerate(module.parameters()):
        total += (i + 1) * param.detach().double().abs().sum().cpu()
    return float(total)


def gather_floats(ctx: DistContext, value: float) -> list[float]:
    """`value` from every rank (in rank order); a one-element list without DDP."""
    if not ctx.distributed:
        return [value]
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    out = [torch.zeros_like(tensor) for _ in range(ctx.world_size)]
    dist.all_gather(out, tensor)
    return [float(t.item()) for t in out]
