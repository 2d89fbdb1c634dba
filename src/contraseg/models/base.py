"""The method contract every method implements (docs/architecture.md, docs/extending.md).

A method is an `nn.Module` built from a typed config. It sees images (B, M, *S) whose missing
channels are zeroed, and `available` (B, M) bool; it must never read a missing channel's values
(filling them with noise or NaN must not change its output). Its objective is a dict of named
terms; each has a weight in the config, so every ablation row of a paper is a config override.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from contraseg.errors import ConfigError
from contraseg.models.regions import RegionHierarchy

Spatial = Literal["3d", "2.5d", "2d"]


class MethodKind(StrEnum):
    """What a method's `forward` gives, and so which verbs can use its runs."""

    SEGMENTATION = "segmentation"  # class (or region) logits: train, predict, evaluate, export
    GENERATOR = "generator"  # images (`pseudo_normal`): CLFC's normal-appearance network
    PRETRAINING = "pretraining"  # a self-supervised stage whose encoder `--init` takes


@dataclass
class Batch:
    """One training or validation batch.

    images: (B, M, *S) float; channels of modalities absent from the data are zeroed by the
        engine, channels dropped by modality dropout are NOT (some objectives use them).
    available: (B, M) bool, the modalities the segmentation path may use (the sampled subset
        during training); methods must mask the rest themselves (`mask_missing`).
    present: (B, M) bool, the modalities that exist in the data (a superset of `available`).
        Training-only auxiliary terms may use these (RFNet's and DC-Seg's per-modality
        decoders); nothing may read a channel that is not present. None means `available`.
    target: (B, *S) long canonical classes (0 background), or None at inference.
    epoch: the current epoch (some objectives switch terms on late, e.g. RFNet's fusion loss).
    extras: method-specific inputs (e.g. CLFC's pseudo-normal image), by name.
    """

    images: Tensor
    available: Tensor
    target: Tensor | None = None
    present: Tensor | None = None
    epoch: int = 0
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.present is None:
            self.present = self.available

    def to(self, device: torch.device | str) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.images), move(self.available), move(self.target),
                     move(self.present), self.epoch, {k: move(v) for k, v in self.extras.items()})


def mask_missing(images: Tensor, available: Tensor) -> Tensor:
    """Zero the channels that are not available (and anything NaN in them), without reading them.

    `torch.where` selects, so a NaN in a missing channel never reaches the result.
    """
    keep = available.to(torch.bool).view(*available.shape, *([1] * (images.ndim - 2)))
    return torch.where(keep, images, torch.zeros((), dtype=images.dtype, device=images.device))


class Method(nn.Module):
    """Base class: subclasses set `spatial`, implement `forward` and `losses`.

    `loss_weights` maps every term name `losses` may return to its weight; the engine computes
    the total as the weighted sum and logs every term. A term whose weight is 0 may be skipped by
    the method (it still appears in the weights, so the ablation is visible in the config).
    """

    # set by `register`: the name runs, presets and the command line know the method by
    method_name: ClassVar[str]
    spatial: ClassVar[Spatial] = "3d"
    kind: ClassVar[MethodKind] = MethodKind.SEGMENTATION
    loss_terms: ClassVar[tuple[str, ...]] = ("seg",)
    # the weight of a term the config leaves out (terms not named here weigh 1)
    loss_weight_defaults: ClassVar[dict[str, float]] = {}
    # the registered PRETRAINING method (`contraseg pretrain --method <this>`) whose run this
    # method's `--init` takes; None: no pre-training stage
    pretraining_stage: ClassVar[str | None] = None
    # patch and window sizes must be multiples of this (in-plane for 2D / 2.5D methods): the
    # network's total downsampling; methods whose depth varies define it as a property
    size_divisor: int = 1
    # whether the method compares with a pseudo-normal brain from a generator run
    # (`normal_run`, copied into `normal_generator()` by the engine)
    takes_normal_run: ClassVar[bool] = False
    # region-based outputs (one sigmoid per nested region, models/regions.py) or None: one
    # softmax over the classes
    regions: RegionHierarchy | None = None

    def __init__(self, modalities: tuple[str, ...], num_classes: int,
                 loss_weights: dict[str, float] | None = None):
        super().__init__()
        if not modalities:
            raise ConfigError("a method needs at least one modality")
        self.modalities = tuple(modalities)
        self.num_classes = int(num_classes)
        weights = self.default_weights()
        unknown = sorted(set(loss_weights or {}) - set(weights))
        if unknown:
            raise ConfigError(f"{type(self).__name__} has no loss terms {unknown} "
                              f"(its terms: {', '.join(self.loss_terms)})")
        weights.update({k: float(v) for k, v in (loss_weights or {}).items()})
        self.loss_weights = weights

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    @property
    def name(self) -> str:
        """The registered name (the class name for an unregistered subclass)."""
        return getattr(type(self), "method_name", type(self).__name__)

    @property
    def out_channels(self) -> int:
        """Channels of the network's output: one per region, or one per class."""
        return len(self.regions) if self.regions is not None else self.num_classes

    def activate(self, logits: Tensor, dim: int = 1) -> Tensor:
        """Output probabilities: a sigmoid per region, or a softmax over the classes. Averages
        (flips, window blending in probability space) are taken of these."""
        if self.regions is not None:
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=dim)

    def class_scores(self, probs: Tensor, dim: int = 1) -> Tensor:
        """Per-class scores whose argmax is the prediction, from `activate`'s output (the class
        probabilities themselves, or the region rule of models/regions.py)."""
        return self.regions.class_scores(probs, dim) if self.regions is not None else probs

    @classmethod
    def default_weights(cls) -> dict[str, float]:
        """Every loss term's weight when the config sets none."""
        return {name: 1.0 for name in cls.loss_terms} | cls.loss_weight_defaults

    @classmethod
    def check_batch_size(cls, loss_weights: dict[str, float], batch_size: int) -> None:
        """Refuse a training batch the objective with these weights is not defined for (the
        trainer calls this before reading data, `total_loss` on every batch)."""
        needed = cls.batch_size_needed(loss_weights)
        if batch_size < needed:
            raise ConfigError(f"{_name_of(cls)} needs "
                              f"data.batch_size >= {needed} (per process) with these loss "
                              f"weights, got {batch_size}")

    @classmethod
    def batch_size_needed(cls, loss_weights: dict[str, float]) -> int:
        """The smallest training batch (per process) the objective with these weights (terms
        not given weigh 1) is defined for; known before any data is read."""
        return 1

    @classmethod
    def needs_distinct_subjects(cls, loss_weights: dict[str, float]) -> bool:
        """Whether the objective with these weights compares a batch's samples with each other
        (negatives or positives taken from the other samples), so two crops of one subject in a
        batch would bias it. That is exactly why an objective needs two samples, so methods
        state it once, through `batch_size_needed`."""
        return cls.batch_size_needed(loss_weights) > 1

    @classmethod
    def check_training_cases(cls, loss_weights: dict[str, float], batch_size: int,
                             cases: int) -> None:
        """Refuse a batch (per process) larger than the training set when the objective needs
        distinct subjects: the sampler would then have to repeat a case within a batch."""
        if not cls.needs_distinct_subjects(loss_weights) or batch_size <= cases:
            return
        needed = cls.batch_size_needed(loss_weights)
        fix = (f"set data.batch_size <= {cases} or add training cases" if cases >= needed
               else f"add training cases (at least {needed})")
        raise ConfigError(f"{_name_of(cls)} compares the subjects "
                          f"of a batch, but data.batch_size {batch_size} is larger than the "
                          f"{cases} training cases: {fix}")

    @property
    def min_batch_size(self) -> int:
        return self.batch_size_needed(self.loss_weights)

    def check_patch(self, patch: list[int]) -> None:
        """Refuse a training patch the network cannot take: sizes must be multiples of
        `size_divisor` (in-plane only for 2D / 2.5D methods, whose depth is a slice stack)."""
        divisor = int(self.size_divisor)
        sizes = list(patch) if self.spatial == "3d" else list(patch)[:2]
        if any(int(n) % divisor for n in sizes):
            where = "" if self.spatial == "3d" else " in-plane"
            raise ConfigError(f"data.patch_size {list(patch)}: "
                              f"{self.name} needs "
                              f"multiples of {divisor}{where}")

    def load_init(self, state: dict[str, Tensor]) -> dict:
        """Start from other weights (`--init`): copy what fits, return {"loaded": [names],
        "skipped": ["name: reason"], ...}. Methods without transfer learning refuse."""
        raise ConfigError(f"{self.name} does not "
                          "take --init weights")

    def after_step(self, progress: float) -> None:
        """Called after every optimiser step with the share of training done (0-1]: e.g.
        MoCo's momentum update. Default: nothing."""

    def monitored(self) -> dict[str, float]:
        """Values to log beside the loss terms (learned temperatures, ...), by name. Default:
        none."""
        return {}

    def param_groups(self, lr: float) -> list[dict]:
        """The optimiser's parameter groups (one group at the run's lr unless a method needs
        several, e.g. IntroVAE's encoder and decoder learning rates). Frozen parameters
        (requires_grad False: CLFC's generator, MoCo's momentum encoder) are left out."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def forward(self, images: Tensor, available: Tensor) -> Tensor:  # pragma: no cover
        """(B, M, *S) images, (B, M) availability -> (B, C, *S) logits."""
        raise NotImplementedError

    def losses(self, batch: Batch) -> dict[str, Tensor]:  # pragma: no cover
        """Every named term of the objective (unweighted), as scalar tensors."""
        raise NotImplementedError

    def total_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted sum of `losses` and the terms themselves (for logging)."""
        self.check_batch_size(self.loss_weights, batch.images.shape[0])
        terms = self.losses(batch)
        unknown = sorted(set(terms) - set(self.loss_weights))
        if unknown:
            raise RuntimeError(f"{type(self).__name__}.losses returned unnamed terms {unknown}")
        total = sum(self.loss_weights[name] * value for name, value in terms.items())
        return total, terms

    # Per-case inputs a method derives from the image (CLFC's pseudo-normal T1): the engine
    # computes them once per case (training: cached on disk, keyed by the fingerprint;
    # inference: once per image, before the sliding window) and appends them as channels after
    # the M modalities; `forward` must accept both (B, M, *S) and (B, M + R, *S). They may
    # only use `available` channels; `forward` selects what each availability pattern may use.
    def case_inputs(self, images: Tensor, available: Tensor) -> Tensor | None:
        """(B, R, *S) channels computed from (B, M, *S) images, or None (most methods)."""
        return None

    def case_inputs_fingerprint(self) -> str | None:
        """What `case_inputs` depends on besides the image (e.g. the generator's weights), as
        a string for the training cache; None when the method has no case inputs."""
        return None

    # Evaluation over many modality subsets: methods with per-modality encoders override these
    # so that the encoders run once per window, not once per subset.
    def encode(self, images: Tensor) -> object:
        """Work that does not depend on which modalities are available (default: none)."""
        return images

    def decode(self, encoded: object, available: Tensor) -> Tensor:
        """Logits for one availability pattern from `encode`'s output."""
        return self(encoded, available)

    # Optional hooks (the engine checks what they return, never whether they exist).
    def representations(self, images: Tensor, present: Tensor) -> dict[str, Tensor] | None:
        """Disentangled representations to draw (`evaluate --figures`): `anatomical` (B, M, C,
        *S) maps and optionally `modality` (B, M, D) codes; None (default): nothing to draw."""
        return None

    def normal_generator(self) -> Method | None:
        """The frozen generator a `takes_normal_run` method holds (the engine copies the
        normal_run's weights into it); None when it has none (default, or left out by the
        settings)."""
        return None

    def pseudo_normal(self, images: Tensor) -> Tensor:
        """GENERATOR methods: (B, 1, H, W) normal-appearance reconstructions of (B, 1, H, W)
        z-scored slices."""
        raise NotImplementedError(f"{self.name} is a {self.kind} method, not a generator")


def _name_of(cls: type) -> str:
    return getattr(cls, "method_name", cls.__name__)


def memory_format(method: Method, channels_last: bool = True) -> torch.memory_format:
    """channels-last-3d for 3D methods when asked (oneDNN and cuDNN run 3D convs faster so:
    a U-Net step on CPU took 0.16 s instead of 0.42 s); contiguous otherwise."""
    if channels_last and method.spatial == "3d":
        return torch.channels_last_3d
    return torch.contiguous_format


class LossModule(nn.Module):
    """Wraps a method so that `forward(batch)` returns its weighted loss (what DDP needs:
    gradient synchronisation hooks on `forward`, while methods expose `losses`)."""

    def __init__(self, method: Method):
        super().__init__()
        self.method = method

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        return self.method.total_loss(batch)
