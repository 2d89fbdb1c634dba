"""`contraseg train`: the training loop shared by every method.

One step = one batch per rank drawn by the PatchSampler from a generator seeded with
(seed, step, rank) (prepared ahead by `data.workers` loader processes, or in this one; see
`engine.loader`), the method's weighted loss under optional autocast, backward, optional
gradient clipping, an optimiser step and a per-step lr schedule. Because every source of
randomness is derived from the step, a run stopped (or killed) after a checkpoint and resumed
with `--resume` ends with the same weights as an uninterrupted run (CPU, deterministic), with
any number of workers. The cases stay in the on-disk cache, read a patch at a time.

The run folder: config.yaml (resolved), run.json (data, split, modalities, convention, status),
log.jsonl (one line per epoch: loss terms, the method's monitored values, validation, the mean
time a step waited for its batch), checkpoints/last.pt and, when the run validates, best.pt (no
validation, no best.pt: `--which auto` then evaluates the last weights); for people to look at,
progress.png and tensorboard/ (`log.curves`, `log.tensorboard`: off skips drawing and writing).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Generator
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from contraseg.data.cache import CaseCache
from contraseg.data.cases import CaseSpec
from contraseg.data.dataset import Case, PatchSampler, build_augmentation
from contraseg.data.labels import LabelConvention, whole_tumour
from contraseg.data.layouts import discover, order_modalities
from contraseg.data.preprocess import PreprocessSettings, reoriented_spacing
from contraseg.data.train_case import common_convention, to_train_case
from contraseg.engine import distributed
from contraseg.engine.checkpoint import (
    load_checkpoint,
    read_init_weights,
    save_checkpoint,
    snapshot_name,
    versions,
)
from contraseg.engine.config import TrainConfig, config_from_dict
from contraseg.engine.curves import CurvePainter
from contraseg.engine.generator import (
    GENERATOR_MODALITIES,
    add_case_inputs,
    attach_normal_run,
    load_generator_weights,
    normal_t1_case,
    untrained_generator,
    validate_generator,
)
from contraseg.engine.loader import batches_from
from contraseg.engine.optim import make_optimizer, make_scheduler, plateau_validation_key
from contraseg.errors import ConfigError, InputError
from contraseg.models.base import Batch, LossModule, Method, memory_format
from contraseg.models.registry import build_method, get_entry, make_config
from contraseg.utils.fs import atomic_path
from contraseg.utils.memory import peak_rss_mb

# settings a resumed run may change (a section, or one key of it: workers change no batch)
RESUMABLE_CHANGES = {"epochs", "val_every", "checkpoint_every", "keep_every_minutes", "device",
                     "data.workers", "log"}
BUDGET_CALIBRATION_STEPS = 20  # steps timed to fit a budget (the first 3 warm up, not counted)
BUDGET_REFIT_STEPS = 20  # a fitted budget follows the pace of the last this many steps
BUDGET_MARGIN = 1.03  # per-step time x this: epoch ends and checkpoints cost a little too


@dataclass
class TrainData:
    modalities: tuple[str, ...]
    convention: LabelConvention | None  # None for a generator (unlabelled healthy brains)
    preprocess: PreprocessSettings
    train: list[Case]
    val: list[Case]
    split: dict[str, list[str]] = field(default_factory=dict)
    spacing: tuple[float, ...] | None = None  # median voxel size of the training scans (mm)


def split_cases(ids: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic patient-wise split: a seeded permutation, the first part for validation."""
    order = [ids[i] for i in np.random.default_rng([seed, 7919]).permutation(len(ids))]
    n_val = int(round(len(ids) * val_fraction))
    if val_fraction > 0 and len(ids) >= 2:
        n_val = min(max(n_val, 1), len(ids) - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


def fold_of(ids: list[str], folds: int, seed: int) -> dict[str, int]:
    """Deterministic patient-wise folds: a seeded permutation of the sorted ids dealt round
    robin, so fold sizes differ by at most one and depend only on (ids, folds, seed)."""
    if folds < 2 or folds > len(ids):
        raise ConfigError(f"--folds {folds}: need 2 <= folds <= the {len(ids)} cases")
    ordered = sorted(ids)
    order = np.random.default_rng([seed, 104729]).permutation(len(ordered))
    return {ordered[i]: rank % folds for rank, i in enumerate(order)}


def fold_split(ids: list[str], fold: int, folds: int, val_fraction: float, seed: int
               ) -> dict[str, list[str]]:
    """Cross-validation split: fold `fold` is the test set; the other folds are split into
    training and validation (for the best checkpoint) like a plain run."""
    if not 0 <= fold < folds:
        raise ConfigError(f"--fold {fold}: must be in 0..{folds - 1}")
    assignment = fold_of(ids, folds, seed)
    rest = [i for i in sorted(ids) if assignment[i] != fold]
    train, val = split_cases(rest, val_fraction, seed)
    return {"train": train, "val": val,
            "test": sorted(i for i in ids if assignment[i] == fold)}


def preprocess_settings(config: TrainConfig) -> PreprocessSettings:
    spacing = config.data.target_spacing
    return PreprocessSettings(orientation=config.data.orientation,
                              crop_to_brain=config.data.crop_to_brain,
                              target_spacing=tuple(spacing) if spacing else None)


def prepare_data(config: TrainConfig, data_dirs: list[Path], cache_dir: Path,
                 split: dict[str, list[str]] | None = None, console: Console | None = None,
                 *, kind: str = "segmentation", fold: tuple[int, int] | None = None
                 ) -> TrainData:
    """Discover, split and preprocess (cached) every labelled case of every data folder; for a
    "generator" `kind`, every case's healthy T1 instead (`engine.generator.normal_t1_case`);
    for "pretraining", every case, labelled or not, all for training. `fold` (k, n):
    cross-validation fold k of n, whose cases are held out (split["test"])."""
    specs = [discover(d, labels=config.data.labels) for d in data_dirs]
    if kind == "pretraining":
        convention = None
        modalities = order_modalities({m for s in specs for m in s.modalities})
        keyed = {f"{s.root.name}/{c.case_id}": (replace(c, label=None), s) for s in specs
                 for c in s.cases}
        if not keyed:
            raise InputError(data_dirs[0], "no case to pre-train on")
        split = split or {"train": sorted(keyed), "val": []}
    elif kind == "generator":
        convention, modalities = None, GENERATOR_MODALITIES
        keyed = {f"{s.root.name}/{c.case_id}": (normal, s) for s in specs for c in s.cases
                 if (normal := normal_t1_case(c, s.convention is not None)) is not None}
        if not keyed:
            raise InputError(data_dirs[0], "no case with a T1 (or a phantom normal T1) to "
                                           "train the generator on")
    else:
        convention = common_convention(specs)
        if config.data.whole_tumour:
            convention = whole_tumour(convention)
        modalities = order_modalities({m for s in specs for m in s.modalities})
        keyed = {f"{s.root.name}/{c.case_id}": (c, s) for s in specs for c in s.cases
                 if c.label is not None}
        if not keyed:
            raise InputError(data_dirs[0], "no labelled case to train on")
    if split is None and fold is not None:
        split = fold_split(sorted(keyed), *fold, config.data.val_fraction, config.seed)
    elif split is None:
        train_ids, val_ids = split_cases(sorted(keyed), config.data.val_fraction, config.seed)
        split = {"train": train_ids, "val": val_ids}
    settings = preprocess_settings(config)
    cache = CaseCache(cache_dir, image_dtype=config.data.cache_dtype)
    load = lambda key: to_train_case(*keyed[key], modalities, cache, settings,  # noqa: E731
                                     resample_to=config.data.resample_to, seed=config.seed,
                                     whole_tumour_only=config.data.whole_tumour)
    if console:
        console.print(f"preparing {len(keyed)} cases ({len(split['train'])} train, "
                      f"{len(split['val'])} validation) on modalities {', '.join(modalities)}")
    return TrainData(modalities, convention, settings, [load(k) for k in split["train"]],
                     [load(k) for k in split["val"]], split,
                     median_spacing([keyed[k][0] for k in split["train"]], settings))


def median_spacing(cases: list[CaseSpec], settings: PreprocessSettings
                   ) -> tuple[float, ...] | None:
    """The median voxel size of the cases' first images along the axes after reorientation
    (headers only); what a run that keeps the scans' own spacing expects at inference."""
    spacings = [reoriented_spacing(nib.load(next(iter(case.images.values())).path).affine,
                                   settings.orientation) for case in cases if case.images]
    return tuple(float(v) for v in np.median(spacings, axis=0)) if spacings else None


def validate(method: Method, cases: list[Case], config: TrainConfig,
             convention: LabelConvention) -> dict[str, float]:
    """Mean Dice per region over the validation cases, with every present modality."""
    from contraseg.engine.infer import sliding_window_logits
    from contraseg.evaluation.metrics import confusion_counts, overlap_metrics

    device = next(method.parameters()).device
    dice: dict[str, list[float]] = {region: [] for region in convention.regions}
    method.eval()
    for case in cases:
        image = torch.from_numpy(case.image)[None].to(device)
        available = torch.from_numpy(case.present)[None].to(device)
        logits = sliding_window_logits(method, image, available, config.infer,
                                       config.data.patch_size)
        probs = logits if config.infer.blend_space == "probabilities" else method.activate(logits)
        pred = method.class_scores(probs)[0].argmax(0).cpu().numpy()
        pred_regions = convention.region_masks(pred)
        for region, ref in convention.region_masks(case.label).items():
            scores = overlap_metrics(confusion_counts(pred_regions[region], ref))
            dice[region].append(scores["dice"])
    method.train()
    means = {f"dice_{r}": float(np.mean(v)) for r, v in dice.items()}
    means["dice_mean"] = float(np.mean(list(means.values())))
    return means


class Trainer:
    """Owns one run: its folder, data, method, optimiser, schedule and loop."""

    def __init__(self, config: TrainConfig, data_dirs: list[Path], out: Path, *,
                 resume: bool = False, console: Console | None = None,
                 fold: tuple[int, int] | None = None):
        self.out, self.resume, self.fold = Path(out), resume, fold
        self.console = console or Console(stderr=True)
        self.ctx = distributed.setup(config.device)
        self._check_run_folder()
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
        self.amp = distributed.resolve_amp(config.amp, self.ctx.device)  # `auto` resolved
        entry = get_entry(config.method)
        make_config(config.method, config.model)
        entry.cls.check_batch_size(config.loss_weights, config.data.batch_size)
        self.generator = entry.cls.kind == "generator"
        self.score_key = "psnr" if self.generator else "dice_mean"  # pretraining: no validation
        self.plateau_key = (plateau_validation_key(config.optim)
                            if config.optim.schedule == "plateau" else None)
        if self.plateau_key and not (config.val_every and config.data.val_fraction):
            raise ConfigError(f"optim.plateau_metric={config.optim.plateau_metric} needs "
                              "validation: data.val_fraction > 0 and val_every > 0")
        self.data_dirs = [Path(d).resolve() for d in data_dirs]
        run_info = self._read_run_info() if resume else {}
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
        self._check_plateau_key()
        self._seed_everything()
        num_classes = self.data.convention.num_classes if self.data.convention else 1
        self.method = build_method(config.method, self.data.modalities, num_classes,
                                   config.model, config.loss_weights).to(self.ctx.device)
        self.method.check_patch(config.data.patch_size)
        if generator_weights is not None:
            load_generator_weights(self.method, generator_weights)
        self.init_report = (self._load_init() if config.init and not resume
                            else run_info.get("init"))
        self.budget: dict | None = run_info.get("budget")  # a fitted budget is kept on resume
        add_case_inputs(self.method, self.data.train, cache_dir)
        self.memory_format = memory_format(self.method, config.channels_last)
        self.method.to(memory_format=self.memory_format)
        self.loss_module = self._wrap(LossModule(self.method))
        self.optimizer = make_optimizer(self.method.param_groups(config.optim.lr),
                                        config.optim)
        self.scheduler = make_scheduler(self.optimizer, config.optim, self.total_steps)
        self.sampler = PatchSampler(self.data.train, config.data.patch_size,
                                    config.data.foreground_fraction, config.data.modality_dropout,
                                    build_augmentation(config.augment, self.method.spatial),
                                    full_modality_prob=config.data.full_modality_prob,
                                    tumour_free=self.generator)
        self.step, self.best = 0, -float("inf")
        self.data_seconds: list[float] = []  # this epoch's waits for a batch
        self.seconds_before, self.started = 0.0, time.monotonic()  # training time of the run
        if resume:
            self._load_last()
        every = config.keep_every_minutes
        self.kept_mark = int(self.seconds_before // (60 * every)) if every else 0
        self.writer = None

    # --- set-up ----------------------------------------------------------------------------
    def _check_run_folder(self) -> None:
        last = self.out / "checkpoints" / "last.pt"
        if self.resume and not last.is_file():
            raise InputError(self.out, "nothing to resume (no checkpoints/last.pt)")
        if not self.resume and last.exists():
            raise InputError(self.out, "already holds a run; pass --resume to continue it or "
                                       "choose another --out")

    def _read_run_info(self) -> dict[str, Any]:
        info = json.loads((self.out / "run.json").read_text())
        saved = config_from_dict(info["config"]).to_dict()
        changed = _diff(saved, self.config.to_dict())
        refused = sorted(k for k in changed if k.split(".")[0] not in RESUMABLE_CHANGES
                         and k not in RESUMABLE_CHANGES)
        if refused:
            raise ConfigError(f"--resume with settings that differ from the run's: "
                              f"{', '.join(refused)} (only {', '.join(sorted(RESUMABLE_CHANGES))} "
                              "may change)")
        return info

    def _load_init(self) -> dict:
        """Start from `config.init` (transfer learning); the summary goes to run.json."""
        report = self.method.load_init(read_init_weights(self.config.init))
        summary = {"source": str(Path(self.config.init).resolve()),
                   "loaded": len(report["loaded"]), "skipped": report["skipped"],
                   **{k: v for k, v in report.items() if k not in ("loaded", "skipped")}}
        if not report["loaded"]:
            raise InputError(self.config.init, "--init: no tensor fits the model "
                                               f"({len(report['skipped'])} skipped)")
        if self.ctx.is_main:
            self.console.print(f"init: {summary['loaded']} tensors from {self.config.init}, "
                               f"{len(summary['skipped'])} skipped")
        return summary

    def _seed_everything(self) -> None:
        torch.manual_seed(self.config.seed)
        if self.config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    def _wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        if not self.ctx.distributed:
            return module
        ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids)

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
        start = self.started = self.budget_clock = time.monotonic()
        self.budget_step = self.step
        epoch_terms: dict[str, list[float]] = {}
        step_seconds: list[float] = []
        stop_at = self._stop_at(max_steps)
        with (closing(self._batches()) as batches,  # closing stops the loader's workers
              self._progress() as bar,
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
                bar.update(task, advance=1, terms=_fmt_terms(terms))
                if self._fitting_budget() and len(step_seconds) == BUDGET_CALIBRATION_STEPS:
                    self._fit_budget(step_seconds[3:], time.monotonic() - start)
                    stop_at = self._stop_at(max_steps)
                    bar.update(task, total=stop_at)
                elif self._refitting_budget():
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
        return int(self.budget["total_steps"]) if self.budget else self.config.total_steps

    def _stop_at(self, max_steps: int | None) -> int:
        total = self.total_steps
        return min(total, max_steps) if max_steps is not None else total

    def _fitting_budget(self) -> bool:
        return self.config.budget_minutes is not None and self.budget is None

    def _refitting_budget(self) -> bool:
        """A fitted budget is checked again every BUDGET_REFIT_STEPS steps (not once an epoch:
        a machine that gets busier inside the last epoch would overrun the budget by up to
        its length)."""
        return (self.budget is not None and self.step < self.total_steps
                and self.step - self.budget_step >= BUDGET_REFIT_STEPS)

    def _refit_budget(self) -> None:
        """Move the end of the schedule (never before the current step) so that training ends
        with the budget at the pace since the last fit, every cost counted (checkpoints,
        logging, other work on the machine): the first 20 steps' median alone misjudges a long
        run."""
        now = time.monotonic()
        pace = (now - self.budget_clock) / max(self.step - self.budget_step, 1)
        pace = max(distributed.gather_floats(self.ctx, pace))
        remaining = 60 * float(self.config.budget_minutes) - self._train_seconds()
        total = self._same_on_every_rank(self.step + max(int(remaining / pace), 0))
        self.budget_step, self.budget_clock = self.step, now
        if total == self.total_steps:
            return
        self._set_budget_steps(total, step_seconds=pace, refits=self.budget.get("refits", 0) + 1)

    def _same_on_every_rank(self, total: int) -> int:
        """The smallest rank's step count: each rank timed its own clock, and all must stop
        at the same step (DDP)."""
        return int(min(distributed.gather_floats(self.ctx, float(total))))

    def _set_budget_steps(self, total: int, **facts: Any) -> None:
        """End training and the lr schedule after `total` steps (at least one): epochs is the
        whole epochs they span, the last one partial where the budget ends inside it (so a
        budget is never cut to a whole number of epochs)."""
        total = max(total, 1)
        iters = self.config.iters_per_epoch
        self.config = replace(self.config, epochs=-(-total // iters))
        self.budget = {**(self.budget or {}), **facts, "epochs": self.config.epochs,
                       "total_steps": total}
        self.scheduler.set_total_steps(total)
        if self.ctx.is_main:
            self._write_run_files(status="running")

    def _fit_budget(self, step_seconds: list[float], elapsed: float) -> None:
        """Set `epochs` so that training ends when `budget_minutes` does, from the median time
        of the steps so far (the slowest rank's under DDP), and stretch the lr schedule to it."""
        per_step = max(distributed.gather_floats(self.ctx, float(np.median(step_seconds))))
        remaining = 60 * float(self.config.budget_minutes) - elapsed
        total = self._same_on_every_rank(
            self.step + max(int(remaining / (per_step * BUDGET_MARGIN)), 0))
        self._set_budget_steps(total, minutes=self.config.budget_minutes, step_seconds=per_step,
                               timed_steps=len(step_seconds))
        self.budget_step, self.budget_clock = self.step, time.monotonic()
        if self.ctx.is_main and not self.console.is_terminal:
            self.console.print(f"budget {self.config.budget_minutes:g} min: {per_step:.3f} s "
                               f"per step -> {self.total_steps} steps", highlight=False)

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
        with distributed.autocast(self.amp, self.ctx.device):
            total, terms = self.loss_module(batch)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.config.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.method.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.method.after_step(self.step / self.total_steps)
        values = {name: float(value.detach()) for name, value in terms.items()}
        values["total"] = float(total.detach())
        self._log_scalars({f"loss/{k}": v for k, v in values.items()}
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
            self._log_scalars({"time/data_seconds": record["data_seconds"]})
            self.data_seconds = []
        every = self.config.val_every
        validating = bool(every and self.data.val and (
            epoch % every == 0 or self.step >= self.total_steps))
        if validating:
            if self.ctx.is_main:
                record["val"] = (
                    validate_generator(self.method, self.data.val, self.config)
                    if self.generator else
                    validate(self.method, self.data.val, self.config, self.data.convention))
                self._log_scalars({f"val/{k}": v for k, v in record["val"].items()})
                if record["val"][self.score_key] > self.best:
                    self.best = record["val"][self.score_key]
                    self._save("best")
            self.ctx.barrier()
        self._schedule_epoch(float(np.mean(ranks)), record, validating)
        record["lr"] = self.scheduler.get_last_lr()[0]
        if self.ctx.is_main:
            if epoch % self.config.checkpoint_every == 0 or self.step >= self.total_steps:
                self._save("last")
            with open(self.out / "log.jsonl", "a") as log:
                log.write(json.dumps(record) + "\n")
            self.curves()
            if not self.console.is_terminal:
                self.console.print(_epoch_line(record), highlight=False)

    def _check_plateau_key(self) -> None:
        """A plateau on validation watches a value validation reports, on validation cases."""
        if self.plateau_key is None:
            return
        if not self.data.val:  # also pre-training, which validates nothing
            raise ConfigError(f"optim.plateau_metric=val:{self.plateau_key}: no validation "
                              "case (raise data.val_fraction, or watch the loss)")
        reported = (["psnr"] if self.generator else
                    [f"dice_{r}" for r in self.data.convention.regions] + ["dice_mean"])
        if self.plateau_key not in reported:
            raise ConfigError(f"optim.plateau_metric=val:{self.plateau_key}: validation "
                              f"reports {', '.join(reported)}")

    def _schedule_epoch(self, mean_loss: float, record: dict[str, Any],
                        validating: bool) -> None:
        """End the schedule's epoch with the value it watches: the training loss, or (a plateau
        on validation) the main rank's validation value, shared with every rank; epochs
        without validation leave such a plateau alone."""
        key = self.plateau_key
        if key is None:
            self.scheduler.end_epoch(mean_loss)
            return
        if not validating:
            return
        value = record["val"][key] if self.ctx.is_main else float("nan")
        self.scheduler.end_epoch(distributed.gather_floats(self.ctx, value)[0])

    # --- outputs ---------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        spacing = self.config.data.target_spacing
        return {
            "method": self.config.method, "config": self.config.to_dict(),
            "modalities": list(self.data.modalities),
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
            "status": status, "method": self.config.method, "config": self.config.to_dict(),
            "data": [str(d) for d in self.data_dirs], "split": self.data.split,
            "modalities": list(self.data.modalities),
            "label_convention": self.data.convention and self.data.convention.to_dict(),
            "preprocess": self.data.preprocess.to_dict(), "world_size": self.ctx.world_size,
            "amp": self.amp, "versions": versions(),
            "step": self.step, "best": self.best if self.best > -float("inf") else None,
            **({"fold": {"index": self.fold[0], "folds": self.fold[1]}} if self.fold else {}),
            **({"init": self.init_report} if self.init_report else {}),
            **({"budget": self.budget} if self.budget else {}),
            **extra,
        }
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.out / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        with atomic_path(self.out / "run.json") as tmp:
            tmp.write_text(json.dumps(info, indent=2))
        return info

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
                                         rank_checksums=checksums, memory=_memory())
            if self.writer is not None:
                self.writer.close()
        self.ctx.barrier()
        distributed.teardown(self.ctx)
        return info

    def _log_scalars(self, values: dict[str, float]) -> None:
        if not (self.ctx.is_main and self.config.log.tensorboard):
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tensorboard"))
        for key, value in values.items():
            self.writer.add_scalar(key, value, self.step)

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[terms]}"),
            SpeedColumn(), TimeRemainingColumn(),
            console=self.console, disable=not (self.ctx.is_main and self.console.is_terminal),
        )


class StopOnInterrupt:
    """Ctrl-C during training: the first one ends the loop after the current step (the run is
    saved and marked interrupted, ready for --resume); a second one stops at once. Only for a
    single process in the main thread: ranks of a distributed run must stop together."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopOnInterrupt:
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


class SpeedColumn(ProgressColumn):
    """Steps per second (rich's task.speed is None until it has two samples)."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.2f} it/s" if task.speed else "- it/s")


def _memory() -> dict[str, float]:
    """Peak resident memory (MiB) of this process and of its largest finished child (the
    loader's workers), as the operating system counts them (pages shared with workers count
    in each)."""
    return {"peak_rss_mb": peak_rss_mb(), "children_peak_rss_mb": peak_rss_mb("children")}


def _fmt_terms(terms: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.3f}" for k, v in terms.items())


def _epoch_line(record: dict[str, Any]) -> str:
    line = f"epoch {record['epoch']} step {record['step']} lr {record['lr']:.2e} " + _fmt_terms(
        record["loss"])
    if "monitor" in record:
        line += " | " + " ".join(f"{k} {v:.3g}" for k, v in record["monitor"].items())
    if "val" in record:
        line += " | val " + " ".join(f"{k} {v:.3f}" for k, v in record["val"].items())
    return line


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict) and key not in ("model", "loss_weights"):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(prefix + key)
    return out
