"""Optimisers and learning-rate schedules (per step, or per epoch on a plateau) from
OptimConfig."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from contraseg.engine.config import OptimConfig
from contraseg.engine.distributed import autocast, gather_floats
from contraseg.errors import ConfigError


def make_optimizer(params: Iterable[torch.nn.Parameter] | list[dict], cfg: OptimConfig
                   ) -> torch.optim.Optimizer:
    """The optimiser over parameters or parameter groups (`Method.param_groups`)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                amsgrad=cfg.amsgrad)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 amsgrad=cfg.amsgrad)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                           momentum=cfg.momentum, nesterov=cfg.momentum > 0)


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


class StepSchedule(torch.optim.lr_scheduler.LambdaLR):
    """The per-step schedules (`lr_factor`); the end of an epoch changes nothing."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
        self.cfg = cfg
        super().__init__(optimizer, self._factor(total_steps))

    def _factor(self, total_steps: int):
        return lambda step: lr_factor(step, total_steps, self.cfg)

    def set_total_steps(self, total_steps: int) -> None:
        """Stretch or shrink the schedule to end at `total_steps` (a time budget's fit); the
        lr of the current step follows at once."""
        self.lr_lambdas = [self._factor(total_steps) for _ in self.optimizer.param_groups]
        for group, base, factor in zip(self.optimizer.param_groups, self.base_lrs,
                                       self.lr_lambdas, strict=True):
            group["lr"] = base * factor(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.pop("cfg", None)  # plain data only in checkpoints; the config rebuilds it
        return state

    def end_epoch(self, mean_loss: float) -> None:
        pass


def plateau_validation_key(cfg: OptimConfig) -> str | None:
    """The validation value a plateau schedule watches ("val:dice_ET" -> "dice_ET"), or None
    when it watches the training loss. Unknown forms raise ConfigError."""
    metric = cfg.plateau_metric
    if metric == "loss":
        return None
    if metric.startswith("val:") and len(metric) > 4:
        return metric[4:]
    raise ConfigError(f"optim.plateau_metric={metric!r}: expected 'loss' or 'val:<key>', "
                      "e.g. val:dice_ET")


class PlateauSchedule:
    """`schedule: plateau`: the lr stays put within epochs; at the end of each epoch torch's
    ReduceLROnPlateau sees the watched value (`optim.plateau_metric`): the epoch's mean
    training loss (mode min) or a validation value (mode max), as DCL-MANet's released code
    (validation ET Dice, factor 0.7, patience 10, min_lr 1e-5)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: OptimConfig):
        self.optimizer = optimizer
        mode = "min" if plateau_validation_key(cfg) is None else "max"
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=cfg.plateau_factor, patience=cfg.plateau_patience,
            min_lr=cfg.plateau_min_lr)

    def step(self) -> None:
        pass

    def end_epoch(self, value: float) -> None:
        self.plateau.step(value)

    def get_last_lr(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def set_total_steps(self, total_steps: int) -> None:
        pass  # the plateau schedule does not depend on the length of the run

    def state_dict(self) -> dict:
        return self.plateau.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.plateau.load_state_dict(state)


def check_plateau_key(key: str | None, validates: bool, reported: list[str]) -> None:
    """A plateau on validation (`plateau_validation_key`) watches a value that validation
    reports, on validation cases; None (no such plateau) passes."""
    if key is None:
        return
    if not validates:  # also pre-training, which validates nothing
        raise ConfigError(f"optim.plateau_metric=val:{key}: no validation case (raise "
                          "data.val_fraction, or watch the loss)")
    if key not in reported:
        raise ConfigError(f"optim.plateau_metric=val:{key}: validation reports "
                          f"{', '.join(reported)}")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
                   ) -> StepSchedule | PlateauSchedule:
    """The schedule: `step()` after every optimiser step, `end_epoch(loss)` after each epoch."""
    if cfg.schedule == "plateau":
        if cfg.warmup_steps:
            raise ConfigError("optim.schedule=plateau has no warm-up: set optim.warmup_steps=0")
        return PlateauSchedule(optimizer, cfg)
    return StepSchedule(optimizer, cfg, total_steps)


def optimiser_step(loss_module: torch.nn.Module, method: torch.nn.Module, batch,
                   optimizer: torch.optim.Optimizer, scheduler, *, amp: str,
                   device: torch.device, grad_clip: float | None,
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One step of training, as the trainer runs it and `contraseg bench` times it: the
    weighted loss under autocast, backward, gradient clipping (`grad_clip`, when set), the
    optimiser step and the per-step lr schedule (`scheduler`, None: none). Returns the total
    and the loss terms; the caller then calls the method's `after_step`. `loss_module` is the
    method, or its DDP wrapper (`LossModule`), whose forward gives (total, terms)."""
    with autocast(amp, device):
        total, terms = loss_module(batch)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(method.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return total, terms


def example_batch(method, config, num_classes: int, device: torch.device):
    """A random batch of the config's patch and batch size, every modality available: the
    step `contraseg bench` and `amp: auto`'s probe time. Drawn from its own generator (seed
    0), so timing a step leaves the global random state alone."""
    from contraseg.models.base import Batch

    shape, size = config.data.patch_size, config.data.batch_size
    gen = torch.Generator().manual_seed(0)
    modalities = method.num_modalities
    return Batch(torch.randn(size, modalities, *shape, generator=gen),
                 torch.ones(size, modalities, dtype=torch.bool),
                 torch.randint(0, num_classes, (size, *shape), generator=gen),
                 epoch=10_000).to(device)


def end_schedule_epoch(scheduler, ctx, value: float, *, watches_validation: bool,
                       validated: bool) -> None:
    """End the schedule's epoch with the value it watches: the training loss (the same mean on
    every rank), or, for a plateau on validation, the main rank's validation value, shared
    with every rank (`value` is NaN elsewhere); epochs without validation leave such a plateau
    alone."""
    if not watches_validation:
        scheduler.end_epoch(value)
    elif validated:
        scheduler.end_epoch(gather_floats(ctx, value)[0])
