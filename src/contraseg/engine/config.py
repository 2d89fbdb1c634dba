"""Typed run configuration: defaults <- a method's preset (YAML) <- `--set key=value` overrides.

Presets live in a YAML file per method, one mapping per preset name (`paper`: the
publication's settings; `cpu`: real scans on a CPU; `fast`: a phantom-sized run; `tiny`: tests
and smoke runs): `contraseg/configs/<method>.yaml` for the built-in methods, the file a plugin
names in `register(..., presets=...)` for others. The resolved
config is saved with every run and inside every checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import yaml

from contraseg.data.cache import IMAGE_DTYPES
from contraseg.errors import ConfigError


@dataclass
class DataConfig:
    patch_size: list[int] = field(default_factory=lambda: [128, 128, 128])  # voxels, per axis
    batch_size: int = 2  # samples per step (per process under DDP)
    foreground_fraction: float = 0.33  # share of patches centred on a labelled voxel
    modality_dropout: bool = True  # sample a modality subset per sample (uniform over subsets)
    full_modality_prob: float = 0.0  # with modality_dropout: share of samples kept whole first
    val_fraction: float = 0.2  # patient-wise, deterministic for the seed
    labels: str | None = None  # label convention override (else the layout's)
    resample_to: str | None = None  # modality whose grid the others are resampled onto
    target_spacing: list[float] | None = None  # mm; None keeps the input spacing
    orientation: str | None = "RAS"  # axis codes every case is reoriented to; None keeps it
    # crop each case to its brain's bounding box before resampling (false: the whole field of
    # view, so uniform patches also see the background around the head)
    crop_to_brain: bool = True
    cache_dir: str | None = None  # None: <run>/cache
    whole_tumour: bool = False  # merge the tumour classes into one (CLFC's released code)
    workers: int = 0  # processes preparing batches (0: the training process); same batches
    cache_dtype: str = "float32"  # float16 halves the cache on disk; patches are float32

    def __post_init__(self):
        for name in ("foreground_fraction", "full_modality_prob", "val_fraction"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"data.{name} {getattr(self, name)}: expected a value in "
                                  "[0, 1]")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) \
                or self.workers < 0:
            raise ConfigError(f"data.workers {self.workers!r}: expected an integer >= 0")
        if self.cache_dtype not in IMAGE_DTYPES:
            raise ConfigError(f"data.cache_dtype {self.cache_dtype!r}: expected one of "
                              f"{', '.join(IMAGE_DTYPES)}")


@dataclass
class AugmentConfig:
    flip_prob: float = 0.5  # per axis
    rotate_prob: float = 0.2  # per sample: a small rotation (3D: about every axis; 2D: in-plane)
    rotate_degrees: float = 10.0  # the rotation's largest angle
    scale_prob: float = 0.2  # per sample: the intensity scale below, a factor per modality
    scale: float = 0.1  # intensity x (1 + U(-scale, scale))
    shift_prob: float = 0.2  # per sample: the intensity shift below, an offset per modality
    shift: float = 0.1  # intensity + U(-shift, shift) (z-scored units)


@dataclass
class OptimConfig:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 2e-4  # the base learning rate
    weight_decay: float = 1e-4
    amsgrad: bool = True  # adam and adamw: the AMSGrad variant
    momentum: float = 0.99  # sgd only
    # poly, cosine, constant: per step; plateau: lr x plateau_factor after plateau_patience
    # epochs without a better plateau_metric (torch's ReduceLROnPlateau; no warm-up), never
    # below plateau_min_lr. plateau_metric: "loss" (the epoch's mean training loss, lower is
    # better) or "val:<key>" (a validation value, e.g. val:dice_ET, higher is better; patience
    # then counts validations)
    schedule: Literal["poly", "cosine", "constant", "plateau"] = "poly"
    poly_power: float = 0.9  # poly: lr x (1 - step / steps) ^ power
    plateau_factor: float = 0.1  # plateau: the lr's factor at each reduction
    plateau_patience: int = 10  # epochs
    plateau_min_lr: float = 0.0  # plateau: the lr is never reduced below this
    plateau_metric: str = "loss"  # plateau: "loss" or "val:<key>" (see schedule)
    warmup_steps: int = 0  # linear warm-up from 0 over these steps, then the schedule
    grad_clip: float | None = None  # max gradient norm


@dataclass
class InferConfig:
    overlap: float = 0.5  # the sliding window's overlap between neighbouring windows (0-1)
    blend: Literal["gaussian", "constant"] = "gaussian"  # window weights (MONAI's modes)
    # what the windows' weights average: logits (then one softmax), or each window's softmax
    # probabilities (RFNet's released inference: probabilities averaged uniformly)
    blend_space: Literal["logits", "probabilities"] = "logits"
    # Windows per forward call. Keep it > 1 on CPUs: for a single small window PyTorch picks its
    # naive conv3d instead of oneDNN (5.7x slower for a 240x240x155 case at 48^3, measured).
    sw_batch_size: int = 2
    tta_flips: bool = False  # test-time augmentation: the mean over every combination of flips
    # BraTS peers: predicted ET under 500 voxels (of a 1 mm grid: 500 mm^3, scaled to the
    # input's voxel size; off on fields of view under 100 mm) becomes necrosis; 0: off
    et_min_voxels: int = 0
    # Subsets decoded together per window during evaluation. On CPUs 1 is fastest once
    # sw_batch_size > 1 (15 U-Net subsets of a 128x128x96 case: 22.5 s at 1, 45.2 s at 15,
    # measured in one run); larger values may pay off on GPUs.
    subset_chunk: int = 1


@dataclass
class LogConfig:
    """What a run writes beside its log.jsonl for people to look at (nothing it needs)."""

    curves: bool = True  # progress.png, redrawn while training (evaluate's report shows it)
    tensorboard: bool = True  # tensorboard/ event files of every logged value


@dataclass
class TrainConfig:
    method: str
    preset: str = "fast"  # as `contraseg train` without --preset
    model: dict[str, Any] = field(default_factory=dict)
    loss_weights: dict[str, float] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    infer: InferConfig = field(default_factory=InferConfig)
    log: LogConfig = field(default_factory=LogConfig)
    epochs: int = 300  # the schedule's length is epochs x iters_per_epoch steps
    iters_per_epoch: int = 150  # steps between a log line and a checkpoint
    # minutes of training to fit the schedule to: the first steps are timed and `epochs` is
    # set so the lr schedule ends when the budget does (the result is recorded in run.json)
    budget_minutes: float | None = None
    val_every: int = 10  # epochs; 0 disables validation
    checkpoint_every: int = 1  # epochs
    # also keep the weights every N minutes of training as checkpoints/minute-M.pt, the points
    # of a learning curve (`evaluate --which minute-M`); None keeps none
    keep_every_minutes: float | None = None
    # autocast: none, bf16, fp16 (CUDA), or auto: the precision and layout in which a probe of
    # this method's training step ran fastest (engine.amp_probe, cached per machine, in run.json)
    amp: Literal["none", "bf16", "fp16", "auto"] = "none"
    seed: int = 0  # every random draw of a step derives from (seed, step, rank)
    deterministic: bool = True  # deterministic algorithms where PyTorch has them
    channels_last: bool = True  # 3D methods: channels-last-3d tensors (1.3-2.5x faster on CPU)
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    # a generator run (introvae) for methods that compare with a pseudo-normal brain (clfc)
    normal_run: str | None = None
    # weights to start from (--init): a run, a contraseg checkpoint or a timm/torchvision file
    init: str | None = None
    # a published split (`NAME[:k]`, `contraseg splits`) or a split file (`FILE.json[:k]`):
    # its train / val / test parts instead of a seeded split; the test part is held out
    split: str | None = None

    def __post_init__(self):
        if self.keep_every_minutes is not None and not float(self.keep_every_minutes) >= 1:
            raise ConfigError(f"keep_every_minutes {self.keep_every_minutes}: expected at least 1 "
                              "(minutes between kept snapshots), or null")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.iters_per_epoch


def preset_names(method: str) -> list[str]:
    return sorted(_presets(method))


def _presets(method: str) -> dict[str, dict]:
    """The method's presets by name ({} when it ships none); an unknown method is refused."""
    from contraseg.models.registry import get_entry

    source = get_entry(method).presets
    if source is None:
        return {}
    if not source.is_file():
        raise ConfigError(f"method '{method}': its preset file {source} does not exist")
    try:
        presets = yaml.safe_load(source.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(presets, dict):
        raise ConfigError(f"{source}: expected one mapping per preset name")
    return presets


def load_config(method: str, preset: str = "fast", overrides: list[str] | None = None
                ) -> TrainConfig:
    """The resolved config of `method` (a registered name or `package.module:Class`) under
    `preset`, with `key=value` overrides applied."""
    from contraseg.models.registry import canonical_name

    method = canonical_name(method)
    presets = _presets(method)
    if preset not in presets:
        raise ConfigError(f"method '{method}' has no preset '{preset}' "
                          f"(presets: {', '.join(sorted(presets)) or 'none shipped'})")
    values: dict[str, Any] = copy.deepcopy(presets[preset] or {})
    values.update(method=method, preset=preset)
    return apply_overrides(values, overrides or [])


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> TrainConfig:
    """A TrainConfig from `values` (a plain dict, not modified) with `key=value` overrides."""
    values = copy.deepcopy(values)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr=1e-3")
        _set_path(values, key.strip(), yaml.safe_load(raw))
    return config_from_dict(values)


def _set_path(values: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
    node[parts[-1]] = value


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Build (and type-check) a TrainConfig from a plain dict such as a saved run's config."""
    return _build(TrainConfig, values, "")


def infer_config(values: dict[str, Any]) -> InferConfig:
    """A type-checked InferConfig (e.g. a run's settings with command-line overrides)."""
    return _build(InferConfig, values, "infer.")


def _build(cls: type, values: dict[str, Any], prefix: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        where = prefix.rstrip(".") or "config"
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(prefix + u for u in unknown)} "
                          f"(known: {', '.join(sorted(known))})")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, prefix + name)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint, converting ints to floats where a float is wanted."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r}: expected {hint}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r}: expected one of {', '.join(map(str, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}={value!r}: expected a list")
        return [_coerce(v, args[0], key) for v in value] if args else list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r}: expected a mapping")
        return dict(value)
    if hint in (int, float) and isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
        try:
            value = hint(value)
        except ValueError:
            raise ConfigError(f"{key}={value!r}: expected {hint.__name__}") from None
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is Any or (isinstance(hint, type) and isinstance(value, hint)
                       and not (hint is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{key}={value!r}: expected {getattr(hint, '__name__', hint)}")
