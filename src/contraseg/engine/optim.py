"""Optimisers and per-step learning-rate schedules from OptimConfig."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from contraseg.engine.config import OptimConfig


def make_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig
                   ) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                amsgrad=cfg.amsgrad)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 amsgrad=cfg.amsgrad)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                           momentum=cfg.momentum, nesterov=True)


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of the base lr at `step`: linear warm-up, then poly, cosine or constant."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(total_steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    if cfg.schedule == "poly":  # (1 - t)^p, as RFNet and nnU-Net
        return (1.0 - progress) ** cfg.poly_power
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, cfg))
