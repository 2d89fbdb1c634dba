"""Training data: preprocessed cases on one modality list, patches, augmentation, subsets.

Cases from several datasets may have different modalities (TCGA with four, BraTS 2015 with
FLAIR and T1c): every case is laid out on the union of modality names, absent channels zeroed
and marked not present. Each training sample draws a modality subset uniformly among the
non-empty subsets of its present modalities (modality dropout), so one model serves them all.

Sampling rules, chosen so that training sees what inference and the objectives assume:
- a batch draws its cases without replacement (further permutations only when it is larger than
  the training set), so no subject is its own negative in a contrastive term;
- a random crop's start is uniform over the valid starts [0, shape - patch] (RFNet's and MONAI's
  random crops); a foreground crop centres on a labelled voxel and is clipped into the volume
  (MONAI's RandCropByPosNegLabel);
- along an axis shorter than the patch the whole axis is taken and centred with zeros exactly as
  MONAI's `sliding_window_inference` pads it at inference (diff // 2 before, the rest after);
- rotations are 3D for 3D methods and in-plane only (about the last, slice axis) for 2D / 2.5D
  ones, whose slice stacks a 3D rotation would mix.

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


def sample_subset(present: np.ndarray, rng: np.random.Generator,
                  full_prob: float = 0.0) -> np.ndarray:
    """A subset of the present modalities: all of them with probability `full_prob`, else
    uniform over the 2^p - 1 non-empty ones (which include all of them)."""
    if full_prob and rng.random() < full_prob:
        return present.copy()
    indices = np.flatnonzero(present)
    code = int(rng.integers(1, 2 ** len(indices)))
    available = np.zeros_like(present)
    available[indices[[bool(code >> i & 1) for i in range(len(indices))]]] = True
    return available


def centred_padding(size: int, patch: int) -> tuple[int, int]:
    """Zeros before and after an axis of `size` voxels to fill a `patch`: the split MONAI's
    `sliding_window_inference` pads with (diff // 2 before, the rest after), so a small volume
    sits at the same place in a training patch as in an inference window."""
    diff = max(int(patch) - int(size), 0)
    return diff // 2, diff - diff // 2


def crop_patch(array: np.ndarray, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """array[..., start:start+patch] over the last three axes. An axis shorter than the patch is
    taken whole (its start must be 0) and centred with zeros (`centred_padding`); elsewhere the
    window must lie inside the array (no silent padding at the end)."""
    shape = array.shape[-3:]
    for s, p, n in zip(start, patch, shape, strict=True):
        if not 0 <= s <= max(n - p, 0):
            raise ValueError(f"crop start {list(start)} of a {list(patch)} patch does not fit "
                             f"a {list(shape)} volume")
    out = array[(..., *(slice(s, s + p) for s, p in zip(start, patch, strict=True)))]
    padding = [centred_padding(n, p) for n, p in zip(shape, patch, strict=True)]
    if any(before or after for before, after in padding):
        out = np.pad(out, [(0, 0)] * (out.ndim - 3) + padding)
    return out


def tumour_free_starts(label: np.ndarray, depth: int) -> np.ndarray:
    """Starts along the last axis of the windows of `depth` slices that hold no labelled voxel
    (a volume thinner than the window: start 0 when it is all background)."""
    free = ~label.reshape(-1, label.shape[-1]).any(axis=0)
    if len(free) <= depth:
        return np.zeros(int(free.all()), dtype=np.int64)
    runs = np.convolve(free.astype(np.int64), np.ones(depth, dtype=np.int64), mode="valid")
    return np.flatnonzero(runs == depth)


def draw_cases(n_cases: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of a batch's cases, without replacement: the first `n_cases` draws are one
    permutation, further ones come from fresh permutations (every case appears before any
    repeats), so a batch no larger than the training set never pairs a subject with itself."""
    rounds = -(-int(batch_size) // int(n_cases))
    return np.concatenate([rng.permutation(n_cases) for _ in range(rounds)])[:batch_size]


def build_augmentation(cfg, spatial: str) -> Compose:
    """MONAI transforms for flips, small rotations and intensity scale/shift (AugmentConfig);
    a method's per-case inputs (`case_inputs`) follow the spatial ones only.

    `spatial` is the method's ("3d", "2.5d", "2d"): 3D methods rotate about all three axes;
    2D / 2.5D methods only in-plane, about the last (slice) axis, since a 3D rotation would move
    voxels between the slices of a stack and zero-fill its centre slice. MONAI's `range_z` is
    that rotation (checked: it keeps every slice's values in that slice)."""
    if spatial not in ("3d", "2.5d", "2d"):
        raise ValueError(f"spatial must be 3d, 2.5d or 2d, got {spatial!r}")
    radians = float(np.deg2rad(cfg.rotate_degrees))
    out_of_plane = radians if spatial == "3d" else 0.0
    keys = ["image", "label", "case_inputs"]
    return Compose([
        *(RandFlipd(keys, prob=cfg.flip_prob, spatial_axis=axis, allow_missing_keys=True)
          for axis in range(3)),
        RandRotated(keys, range_x=out_of_plane, range_y=out_of_plane, range_z=radians,
                    prob=cfg.rotate_prob, mode=("bilinear", "nearest", "bilinear"),
                    padding_mode="zeros", allow_missing_keys=True),
        RandScaleIntensityd("image", factors=cfg.scale, prob=cfg.scale_prob, channel_wise=True),
        RandShiftIntensityd("image", offsets=cfg.shift, prob=cfg.shift_prob, channel_wise=True),
    ])


class PatchSampler:
    """Draws training batches: patches with foreground oversampling, augmentation, subsets
    (with `modality_dropout`, all present modalities with probability `full_modality_prob`,
    else a uniform non-empty subset). `tumour_free`: only patches whose slices (last axis) hold
    no labelled voxel (a generator learning normal appearance from the healthy slices of tumour
    cases); a case without such a window is left out."""

    def __init__(self, cases: Sequence[TrainCase], patch_size: Sequence[int],
                 foreground_fraction: float, modality_dropout: bool,
                 augment: Callable | None = None, *, full_modality_prob: float = 0.0,
                 tumour_free: bool = False):
        self.patch = tuple(int(p) for p in patch_size)
        self.free_starts: dict[str, np.ndarray] = {}
        if tumour_free:
            self.free_starts = {c.case_id: tumour_free_starts(c.label, self.patch[-1])
                                for c in cases}
            cases = [c for c in cases if len(self.free_starts[c.case_id])]
        if not cases:
            raise ConfigError("no training cases" + (" with a tumour-free patch" if tumour_free
                                                     else ""))
        self.cases = list(cases)
        self.foreground_fraction = float(foreground_fraction)
        self.modality_dropout = modality_dropout
        self.full_modality_prob = float(full_modality_prob)
        self.augment = augment

    def _start(self, case: TrainCase, rng: np.random.Generator) -> np.ndarray:
        """A crop's start. Foreground crops centre on a labelled voxel, clipped into the volume;
        random crops draw the start uniformly over [0, shape - patch] (a centre drawn over the
        volume and clipped would pile the crops up at the edges)."""
        upper = np.maximum(np.asarray(case.label.shape) - np.asarray(self.patch), 0)
        if case.case_id in self.free_starts:
            free = self.free_starts[case.case_id]
            return np.array([*(rng.integers(n + 1) for n in upper[:-1]),
                             free[rng.integers(len(free))]])
        if len(case.foreground) and rng.random() < self.foreground_fraction:
            centre = case.foreground[rng.integers(len(case.foreground))]
            return np.clip(centre - np.asarray(self.patch) // 2, 0, upper)
        return np.array([rng.integers(n + 1) for n in upper])

    def sample_one(self, rng: np.random.Generator, case: TrainCase | None = None
                   ) -> dict[str, np.ndarray]:
        """One sample of `case` (drawn uniformly when not given)."""
        if case is None:
            case = self.cases[rng.integers(len(self.cases))]
        start = self._start(case, rng)
        item = {"image": crop_patch(case.image, start, self.patch),
                "label": crop_patch(case.label[None], start, self.patch).astype(np.float32)}
        if case.case_inputs is not None:
            item["case_inputs"] = crop_patch(case.case_inputs, start, self.patch)
        if self.augment is not None:
            self.augment.set_random_state(seed=int(rng.integers(2**31)))
            item = {key: np.asarray(value) for key, value in self.augment(item).items()}
            # shifts never fill absent channels
            item["image"] = item["image"] * case.present[:, None, None, None]
        available = (sample_subset(case.present, rng, self.full_modality_prob)
                     if self.modality_dropout else case.present)
        out = {"images": item["image"].astype(np.float32),
               "target": np.rint(item["label"][0]).astype(np.int64),
               "available": available.copy(), "present": case.present.copy()}
        if "case_inputs" in item:
            out["case_inputs"] = item["case_inputs"].astype(np.float32)
        return out

    def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
        """A batch as stacked numpy arrays: images, target, available, present (and
        case_inputs when the cases have them); its cases are drawn without replacement
        (`draw_cases`)."""
        picks = draw_cases(len(self.cases), batch_size, rng)
        items = [self.sample_one(rng, self.cases[i]) for i in picks]
        return {key: np.stack([item[key] for item in items]) for key in items[0]}
