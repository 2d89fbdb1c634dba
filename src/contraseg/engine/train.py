"""`contraseg train`: the training loop shared by every method.

One step = one batch per rank drawn by the PatchSampler from a generator seeded with
(seed, step, rank) (prepared ahead by `data.workers` loader processes, or in this one; see
`engine.loader`), the method's weighted loss under optional autocast, backward, optional
gradient clipping, an optimiser step and a per-step lr schedule. Because every source of
randomness is derived from the step, a run stopped (or killed) after a checkpoint and resumed
with `--resume` ends with the same weights as an uninterrupted run (CPU, deterministic), with
any number of workers. The cases stay in the on-disk cache, read a patch at a time.

The run folder: config.yaml and run.json (engine.run_files), log.jsonl (one line per epoch: loss
terms, monitored values, validation, the mean wait for a batch), checkpoints/last.pt and, when
the run validates, best.pt; progress.png and tensorboard/ (`log.curves`, `log.tensorboard`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from contraseg.data.patches import PatchSampler, build_augmentation
from contraseg.engine import amp_probe, distributed
from contraseg.engine.budget import TimeBudget
from contraseg.engine.checkpoint import (
    load_checkpoint,
    load_init,
    save_checkpoint,
    snapshot_name,
    versions,
)
from contraseg.engine.config import TrainConfig
from contraseg.engine.curves import CurvePainter
from contraseg.engine.loader import batches_from
from contraseg.engine.normal_run import (
    attach_normal_run,
    load_generator_weights,
    untrained_generator,
)
from contraseg.engine.optim import (
    check_plateau_key,
    end_schedule_epoch,
    make_optimizer,
    make_scheduler,
    optimiser_step,
    plateau_validation_key,
)
from contraseg.engine.prepare import add_case_inputs, prepare_data
from contraseg.engine.run_files import check_run_folder, read_resumable, write_run_files
from contraseg.engine.train_console import (
    ScalarLog,
    StopOnInterrupt,
    epoch_line,
    format_terms,
    memory,
    progress_bar,
)
from contraseg.engine.validate import validation_scores
from contraseg.errors import ConfigError, InputError
from contraseg.models.base import Batch, LossModule, MethodKind, memory_format
from contraseg.models.registry import build_method, get_entry, make_config


class Trainer:
    """Owns one run: its folder, data, method, optimiser, schedule and loop."""

    def __init__(self, config: TrainConfig, data_dirs: list[Path], out: Path, *,
                 resume: bool = False, console: Console | None = None,
                 fold: tuple[int, int] | None = None):
        self.out, self.resume, self.fold = Path(out), resume, fold
        self.console = console or Console(stderr=True)
        self.ctx = distributed.setup(config.device)
        check_run_folder(self.out, resume)
        # before any data is read or written
        config, generator_weights = attach_normal_run(config)
        if untrained_generator(config) and self.ctx.is_main and not resume:
            self.console.print(f"[yellow]warning:[/] {config.method} runs with an UNTRAINED "
                               "normal-appearance generator (the preset's random weights, for "
                               "tests): its pseudo-normal is noise; give --set normal_run="
                               "VAE_RUN (an introvae run)", highlight=False)
        self.config = config
        self.curves = CurvePainter(self.out, f"{config.method} ({config.preset} preset)",
                                   enabled=config.log.curves)
        distributed.resolve_amp(config.amp, self.ctx.device)  # fp16 on a CPU: refused first
        entry = get_entry(config.method)
        make_config(config.method, config.model)
        entry.cls.check_batch_size(config.loss_weights, config.data.batch_size)
        self.method_source = entry.source.to_dict()
        self.trains_generator = entry.cls.kind is MethodKind.GENERATOR
        # pretraining: no validation
        self.score_key = "psnr" if self.trains_generator else "dice_mean"
        self.plateau_key = (plateau_validation_key(config.optim)
                            if config.optim.schedule == "plateau" else None)
        if self.plateau_key and not (config.val_every and config.data.val_fraction):
            raise ConfigError(f"optim.plateau_metric={config.optim.plateau_metric} needs "
                              "validation: data.val_fraction > 0 and val_every > 0")
        self.data_dirs = [Path(d).resolve() for d in data_dirs]
        run_info = read_resumable(self.out, config) if resume else {}
        cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else self.out / "cache"
        if not self.ctx.is_main:
            self.ctx.barrier()  # rank 0 fills the cache first; the others then only read it
        self.data = prepare_data(config, self.data_dirs, cache_dir, run_info.get("split"),
                                 self.console if self.ctx.is_main else None,
                                 kind=entry.cls.kind, fold=self.fold)
        if self.ctx.is_main:
            self.ctx.barrier()
        entry.cls.check_training_cases(config.loss_weights, config.data.batch_size,
                                       len(self.data.train))
        reported = (["psnr"] if self.trains_generator or not self.data.convention else
                    [f"dice_{r}" for r in self.data.convention.regions] + ["dice_mean"])
        check_plateau_key(self.plateau_key, bool(self.data.val), reported)
        self._seed_everything()
        num_classes = self.data.convention.num_classes if self.data.convention else 1
        self.method = build_method(config.method, self.data.modalities, num_classes,
                                   config.model, config.loss_weights).to(self.ctx.device)
        self.method.check_patch(config.data.patch_size)
        self.amp, channels_last, self.amp_probe = amp_probe.precision_and_layout(
            self.method, config, num_classes, self.ctx, run_info.get("amp_probe"), self.console)
        if generator_weights is not None:
            load_generator_weights(self.method, generator_weights)
        self.init_report = (load_init(self.method, config.init,
                                      self.console if self.ctx.is_main else None)
                            if config.init and not resume else run_info.get("init"))
        # a fitted budget is kept on resume
        self.budget = TimeBudget(config.budget_minutes, self.ctx, run_info.get("budget"))
        add_case_inputs(self.method, self.data.train, cache_dir)
        self.memory_format = memory_format(self.method, channels_last)
        self.method.to(memory_format=self.memory_format)
        self.loss_module = distributed.wrap(LossModule(self.method), self.ctx)
        self.optimizer = make_optimizer(self.method.param_groups(config.optim.lr),
                                        config.optim)
        self.scheduler = make_scheduler(self.optimizer, config.optim, self.total_steps)
        self.sampler = PatchSampler(self.data.train, config.data.patch_size,
                                    config.data.foreground_fraction, config.data.modality_dropout,
                                    build_augmentation(config.augment, self.method.spatial),
                                    full_modality_prob=config.data.full_modality_prob,
                                    tumour_free=self.trains_generator)
        self.step, self.best = 0, -float("inf")
        self.data_seconds: list[float] = []  # this epoch's waits for a batch
        self.seconds_before, self.started = 0.0, time.monotonic()  # training time of the run
        if resume:
            self._load_last()
        every = config.keep_every_minutes
        self.kept_mark = int(self.seconds_before // (60 * every)) if every else 0
        self.scalars = ScalarLog(self.out / "tensorboard",
                                 enabled=self.ctx.is_main and config.log.tensorboard)

    def _seed_everything(self) -> None:
        torch.manual_seed(self.config.seed)
        if self.config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    def _load_last(self) -> None:
        data = load_checkpoint(self.out / "checkpoints" / "last.pt", self.ctx.device)
        if data["method"] != self.config.method or list(data["modalities"]) != list(
                self.data.modalities):
            raise InputError(self.out / "checkpoints" / "last.pt",
                             f"checkpoint is {data['method']} on {data['modalities']}, the run "
                             f"asks for {self.config.method} on {list(self.data.modalities)}")
        self.method.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        self.step, self.best = int(data["step"]), float(data.get("best", -float("inf")))
        self.seconds_before = float(data.get("train_seconds", 0.0))

    # --- the loop --------------------------------------------------------------------------
    def run(self, max_steps: int | None = None, max_minutes: float | None = None) -> dict:
        """Train until the configured steps, `max_steps` or `max_minutes`; returns run.json."""
        if self.ctx.is_main:
            self._write_run_files(status="running")
        start = self.started = time.monotonic()
        self.budget.mark(self.step)
        epoch_terms: dict[str, list[float]] = {}
        step_seconds: list[float] = []
        stop_at = self._stop_at(max_steps)
        with (closing(self._batches()) as batches,  # closing stops the loader's workers
              progress_bar(self.console, self.ctx.is_main and self.console.is_terminal) as bar,
              StopOnInterrupt(self.ctx.world_size == 1) as interrupt):
            task = bar.add_task("train", total=stop_at, completed=self.step, terms="")
            while self.step < stop_at and not interrupt.requested:
                tick = time.monotonic()
                arrays = next(batches)
                self.data_seconds.append(time.monotonic() - tick)
                terms = self._train_step(arrays)
                step_seconds.append(time.monotonic() - tick)
                for name, value in terms.items():
                    epoch_terms.setdefault(name, []).append(value)
                bar.update(task, advance=1, terms=format_terms(terms))
                if self.budget.should_fit(len(step_seconds)):
                    self._fit_budget(step_seconds[3:], time.monotonic() - start)
                    stop_at = self._stop_at(max_steps)
                    bar.update(task, total=stop_at)
                elif self.budget.should_refit(self.step, self.total_steps):
                    self._refit_budget()
                    stop_at = self._stop_at(max_steps)
                    bar.update(task, total=stop_at)
                if self.step % self.config.iters_per_epoch == 0 or self.step == self.total_steps:
                    self._end_epoch(epoch_terms)
                    epoch_terms = {}
                self._keep_snapshot()
                if max_minutes is not None and time.monotonic() - start > 60 * max_minutes:
                    break
        finished = self.step >= self.total_steps
        if self.step % self.config.iters_per_epoch and not finished:  # keep what was done
            self._save("last")
        status = "finished" if finished else "interrupted" if interrupt.requested else "stopped"
        return self._finish(status)

    @property
    def total_steps(self) -> int:
        """The steps the run trains: a fitted budget's count (the last epoch may be partial),
        else epochs x iters_per_epoch."""
        return self.budget.total_steps(self.config.total_steps)

    def _stop_at(self, max_steps: int | None) -> int:
        total = self.total_steps
        return min(total, max_steps) if max_steps is not None else total

    def _refit_budget(self) -> None:
        total, facts = self.budget.refit(self.step, self._train_seconds())
        if total != self.total_steps:
            self._set_budget_steps(total, **facts)

    def _set_budget_steps(self, total: int, **facts: Any) -> None:
        """End training and the lr schedule after `total` steps (at least one): epochs is the
        whole epochs they span, the last one partial where the budget ends inside it (so a
        budget is never cut to a whole number of epochs)."""
        total = max(total, 1)
        iters = self.config.iters_per_epoch
        self.config = replace(self.config, epochs=-(-total // iters))
        self.budget.record(total, self.config.epochs, facts)
        self.scheduler.set_total_steps(total)
        if self.ctx.is_main:
            self._write_run_files(status="running")

    def _fit_budget(self, step_seconds: list[float], elapsed: float) -> None:
        """Set `epochs` so that training ends when `budget_minutes` does (engine.budget), and
        stretch the lr schedule to it."""
        total, facts = self.budget.fit(self.step, step_seconds, elapsed)
        self._set_budget_steps(total, **facts)
        self.budget.mark(self.step)
        if self.ctx.is_main and not self.console.is_terminal:
            self.console.print(f"budget {self.config.budget_minutes:g} min: "
                               f"{facts['step_seconds']:.3f} s per step -> {self.total_steps} "
                               "steps", highlight=False)

    def _batches(self) -> Generator[dict[str, torch.Tensor], None, None]:
        """This rank's batches from the current step on (engine.loader: the same batches with
        any number of workers)."""
        return batches_from(self.sampler, seed=self.config.seed, rank=self.ctx.rank,
                            batch_size=self.config.data.batch_size, first_step=self.step,
                            workers=self.config.data.workers,
                            pin_memory=self.ctx.device.type == "cuda")

    def _train_step(self, arrays: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimiser step on the batch of this step (`engine.loader.step_batch`)."""
        torch.manual_seed(int(arrays["torch_seed"]))
        batch = Batch(arrays["images"], arrays["available"], arrays["target"].long(),
                      arrays["present"], epoch=self.step // self.config.iters_per_epoch,
                      extras={k: arrays[k] for k in ("case_inputs",) if k in arrays}
                      ).to(self.ctx.device)
        batch.images = batch.images.contiguous(memory_format=self.memory_format)
        total, terms = optimiser_step(self.loss_module, self.method, batch, self.optimizer,
                                      self.scheduler, amp=self.amp, device=self.ctx.device,
                                      grad_clip=self.config.optim.grad_clip)
        self.step += 1
        self.method.after_step(self.step / self.total_steps)
        values = {name: float(value.detach()) for name, value in terms.items()}
        values["total"] = float(total.detach())
        self.scalars.add(self.step, {f"loss/{k}": v for k, v in values.items()}
                          | {f"monitor/{k}": v for k, v in self.method.monitored().items()}
                          | {"lr": self.scheduler.get_last_lr()[0]})
        return values

    def _end_epoch(self, epoch_terms: dict[str, list[float]]) -> None:
        epoch = -(-self.step // self.config.iters_per_epoch)  # a budget's last may be partial
        # every rank sees the same mean (ranks must keep one learning rate)
        ranks = distributed.gather_floats(self.ctx, float(np.mean(epoch_terms["total"])))
        record: dict[str, Any] = {
            "epoch": epoch, "step": self.step, "lr": None,
            "loss": {k: float(np.mean(v)) for k, v in epoch_terms.items()},
        }
        if monitored := self.method.monitored():
            record["monitor"] = monitored
        if self.data_seconds:  # the time a step waited for its batch (loader too slow if high)
            record["data_seconds"] = float(np.mean(self.data_seconds))
            self.scalars.add(self.step, {"time/data_seconds": record["data_seconds"]})
            self.data_seconds = []
        every = self.config.val_every
        validating = bool(every and self.data.val and (
            epoch % every == 0 or self.step >= self.total_steps))
        if validating:
            if self.ctx.is_main:
                record["val"] = validation_scores(self.method, self.data.val, self.config,
                                                  self.data.convention)
                self.scalars.add(self.step, {f"val/{k}": v for k, v in record["val"].items()})
                if record["val"][self.score_key] > self.best:
                    self.best = record["val"][self.score_key]
                    self._save("best")
            self.ctx.barrier()
        value = (float(np.mean(ranks)) if self.plateau_key is None else
                 record["val"][self.plateau_key] if validating and self.ctx.is_main else
                 float("nan"))
        end_schedule_epoch(self.scheduler, self.ctx, value,
                           watches_validation=self.plateau_key is not None,
                           validated=validating)
        record["lr"] = self.scheduler.get_last_lr()[0]
        if self.ctx.is_main:
            if epoch % self.config.checkpoint_every == 0 or self.step >= self.total_steps:
                self._save("last")
            with open(self.out / "log.jsonl", "a") as log:
                log.write(json.dumps(record) + "\n")
            self.curves()
            if not self.console.is_terminal:
                self.console.print(epoch_line(record), highlight=False)

    # --- outputs ---------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        spacing = self.config.data.target_spacing
        return {
            "method": self.config.method, "method_source": self.method_source,
            "config": self.config.to_dict(), "modalities": list(self.data.modalities),
            "label_convention": self.data.convention and self.data.convention.to_dict(),
            "preprocess": self.data.preprocess.to_dict(),
            "spacing": list(spacing) if spacing else None,
            "training_spacing": list(self.data.spacing) if self.data.spacing else None,
            "epoch": self.step // self.config.iters_per_epoch, "step": self.step,
            "best": self.best, "model": self.method.state_dict(),
        }

    def _keep_snapshot(self) -> None:
        """Keep the weights as checkpoints/minute-M.pt when training time passes a multiple M
        of keep_every_minutes (one snapshot per multiple, also across resumed sessions)."""
        every = self.config.keep_every_minutes
        if not every:
            return
        mark = int(self._train_seconds() // (60 * every))
        if mark > self.kept_mark:
            self.kept_mark = mark
            self._save(snapshot_name(mark * every))

    def _save(self, which: str) -> None:
        if not self.ctx.is_main:
            return
        payload = self._payload()
        if which == "last":
            payload |= {"optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(),
                        "rng": {"torch": torch.get_rng_state()},
                        "train_seconds": self._train_seconds()}
        save_checkpoint(self.out / "checkpoints" / f"{which}.pt", payload)

    def _write_run_files(self, status: str, **extra: Any) -> dict:
        info = {
            "status": status, "method": self.config.method,
            "method_source": self.method_source, "config": self.config.to_dict(),
            "data": [str(d) for d in self.data_dirs], "split": self.data.split,
            "modalities": list(self.data.modalities),
            "label_convention": self.data.convention and self.data.convention.to_dict(),
            "preprocess": self.data.preprocess.to_dict(), "world_size": self.ctx.world_size,
            "amp": self.amp, "versions": versions(),
            "step": self.step, "best": self.best if self.best > -float("inf") else None,
            **({"fold": {"index": self.fold[0], "folds": self.fold[1]}} if self.fold else {}),
            **({"init": self.init_report} if self.init_report else {}),
            **({"budget": self.budget.fitted} if self.budget.fitted else {}),
            **({"amp_probe": self.amp_probe} if self.amp_probe else {}),
            **extra,
        }
        return write_run_files(self.out, self.config, info)

    def _train_seconds(self) -> float:
        """Training time of the run: every earlier session's up to its last checkpoint, and
        this one's so far."""
        return self.seconds_before + time.monotonic() - self.started

    def _finish(self, status: str) -> dict:
        checksums = distributed.gather_floats(
            self.ctx, distributed.parameter_checksum(self.method))
        info: dict = {}
        if self.ctx.is_main:
            self.curves(final=True)
            info = self._write_run_files(status,
                                         train_seconds=self._train_seconds(),
                                         rank_checksums=checksums, memory=memory())
            self.scalars.close()
        self.ctx.barrier()
        distributed.teardown(self.ctx)
        return info
