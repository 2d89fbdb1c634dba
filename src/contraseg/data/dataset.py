"""Training data: preprocessed cases on one modality list, patches, augmentation, subsets.

Cases from several datasets may have different modalities (TCGA with four, BraTS 2015 with
FLAIR and T1c): every case is laid out on the union of modality names, absent channels zeroed
and marked not present. Each training sample draws a modality subset uniformly among the
non-empty subsets of its present modalities (modality dropout), so one model serves them all.

Randomness comes only from the `numpy.random.Generator` passed in; the engine derives it from
(seed, step, rank), which makes a resumed run replay the same patches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from monai.transforms import (
    Compose,
    RandFlipd,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from contraseg.data.cache import CaseCache
from contraseg.data.cases import CaseSpec, DatasetSpec
from contraseg.data.labels import LabelConvention, whole_tumour
from contraseg.data.preprocess import PreprocessSettings
from contraseg.errors import ConfigError

MAX_FOREGROUND_COORDS = 20_000  # per case, enough to sample tumour-centred patches from


@dataclass
class TrainCase:
    """One case ready for patch sampling (arrays on the preprocessed grid)."""

    case_id: str
    image: np.ndarray  # (M, X, Y, Z) float32 on the run's modality list; absent channels zero
    label: np.ndarray  # (X, Y, Z) uint8 canonical classes
    present: np.ndarray  # (M,) bool
    foreground: np.ndarray  # (K, 3) int coordinates of labelled voxels (a random subset)
    case_inputs: np.ndarray | None = None  # (R, X, Y, Z) the method's per-case inputs


def common_convention(specs: Sequence[DatasetSpec]) -> LabelConvention:
    """The label convention of the first dataset, after checking all share canonical classes."""
    conventions = [s.convention for s in specs]
    for spec, conv in zip(specs, conventions, strict=True):
        if conv is None:
            raise ConfigError(f"{spec.root}: label convention unknown; pass data.labels=NAME")
    first = conventions[0]
    for spec, conv in zip(specs[1:], conventions[1:], strict=True):
        if conv.class_names != first.class_names:
            raise ConfigError(f"{spec.root}: classes {conv.class_names} differ from "
                              f"{specs[0].root} {first.class_names}")
    return first


def to_train_case(case: CaseSpec, spec: DatasetSpec, modalities: Sequence[str],
                  cache: CaseCache, settings: PreprocessSettings, *,
                  resample_to: str | None = None, seed: int = 0,
                  whole_tumour_only: bool = False) -> TrainCase:
    """Preprocess (through the cache) and lay one case out on `modalities` (a case without a
    label gets an all-background one; `whole_tumour_only` merges the tumour classes)."""
    prep = cache.load_or_compute(case.present_only(), settings, resample_to=resample_to)
    image = np.zeros((len(modalities), *prep.image.shape[1:]), dtype=np.float32)
    present = np.zeros(len(modalities), dtype=bool)
    for channel, name in enumerate(prep.modalities):
        image[modalities.index(name)] = prep.image[channel]
        present[modalities.index(name)] = True
    if prep.label is None:  # unlabelled (the normal brains of a generator): all background
        label = np.zeros(prep.image.shape[1:], dtype=np.uint8)
    else:
        convention = whole_tumour(spec.convention) if whole_tumour_only else spec.convention
        label = convention.to_canonical(np.asarray(prep.label))
    coords = np.argwhere(label > 0)
    if len(coords) > MAX_FOREGROUND_COORDS:
        rng = np.random.default_rng([seed, len(coords)])
        coords = coords[rng.choice(len(coords), MAX_FOREGROUND_COORDS, replace=False)]
    return TrainCase(case.case_id, image, label, present, coords.astype(np.int32))


def sample_subset(present: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A subset of the present modalities, uniform over the 2^p - 1 non-empty ones."""
    indices = np.flatnonzero(present)
    code = int(rng.integers(1, 2 ** len(indices)))
    available = np.zeros_like(present)
    available[indices[[bool(code >> i & 1) for i in range(len(indices))]]] = True
    return available


def _patch_start(centre: np.ndarray, shape: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    start = np.asarray(centre) - np.asarray(patch) // 2
    upper = np.maximum(np.asarray(shape) - np.asarray(patch), 0)
    return np.clip(start, 0, upper)


def crop_patch(array: np.ndarray, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """array[..., start:start+patch] over the last three axes, zero-padded where it runs out."""
    window = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
    out = array[(..., *window)]
    missing = [(0, p - n) for p, n in zip(patch, out.shape[-3:], strict=True)]
    if any(after for _, after in missing):
        out = np.pad(out, [(0, 0)] * (out.ndim - 3) + missing)
    return out


def build_augmentation(cfg) -> Compose:
    """MONAI transforms for flips, small rotations and intensity scale/shift (AugmentConfig);
    a method's per-case inputs (`case_inputs`) follow the spatial ones only."""
    radians = float(np.deg2rad(cfg.rotate_degrees))
    keys = ["image", "label", "case_inputs"]
    return Compose([
        *(RandFlipd(keys, prob=cfg.flip_prob, spatial_axis=axis, allow_missing_keys=True)
          for axis in range(3)),
        RandRotated(keys, range_x=radians, range_y=radians, range_z=radians,
                    prob=cfg.rotate_prob, mode=("bilinear", "nearest", "bilinear"),
                    padding_mode="zeros", allow_missing_keys=True),
        RandScaleIntensityd("image", factors=cfg.scale, prob=cfg.scale_prob, channel_wise=True),
        RandShiftIntensityd("image", offsets=cfg.shift, prob=cfg.shift_prob, channel_wise=True),
    ])


class PatchSampler:
    """Draws training batches: patches with foreground oversampling, augmentation, subsets."""

    def __init__(self, cases: Sequence[TrainCase], patch_size: Sequence[int],
                 foreground_fraction: float, modality_dropout: bool,
                 augment: Callable | None = None):
        if not cases:
            raise ConfigError("no training cases")
        self.cases = list(cases)
        self.patch = tuple(int(p) for p in patch_size)
        self.foreground_fraction = float(foreground_fraction)
        self.modality_dropout = modality_dropout
        self.augment = augment

    def _centre(self, case: TrainCase, rng: np.random.Generator) -> np.ndarray:
        if len(case.foreground) and rng.random() < self.foreground_fraction:
            return case.foreground[rng.integers(len(case.foreground))]
        return np.array([rng.integers(n) for n in case.label.shape])

    def sample_one(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        case = self.cases[rng.integers(len(self.cases))]
        start = _patch_start(self._centre(case, rng), case.label.shape, self.patch)
        item = {"image": crop_patch(case.image, start, self.patch),
                "label": crop_patch(case.label[None], start, self.patch).astype(np.float32)}
        if case.case_inputs is not None:
            item["case_inputs"] = crop_patch(case.case_inputs, start, self.patch)
        if self.augment is not None:
            self.augment.set_random_state(seed=int(rng.integers(2**31)))
            item = {key: np.asarray(value) for key, value in self.augment(item).items()}
            # shifts never fill absent channels
            item["image"] = item["image"] * case.present[:, None, None, None]
        available = sample_subset(case.present, rng) if self.modality_dropout else case.present
        out = {"images": item["image"].astype(np.float32),
               "target": np.rint(item["label"][0]).astype(np.int64),
               "available": available.copy(), "present": case.present.copy()}
        if "case_inputs" in item:
            out["case_inputs"] = item["case_inputs"].astype(np.float32)
        return out

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        """A batch as stacked numpy arrays: images, target, available, present (and
        case_inputs when the cases have them)."""
        items = [self.sample_one(rng) for _ in range(batch_size)]
        return {key: np.stack([item[key] for item in items]) for key in items[0]}
