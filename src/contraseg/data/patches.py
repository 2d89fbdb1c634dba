"""Training patches: sampling from the cases (`data.train_case`), augmentation, subsets.

Each training sample draws a modality subset uniformly among the
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

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from monai.data import get_track_meta, set_track_meta
from monai.transforms import (
    Compose,
    RandFlipd,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensityd,
)

from contraseg.data.train_case import DiskCase, TrainCase
from contraseg.errors import ConfigError

Case = TrainCase | DiskCase  # what the sampler reads patches from


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


@contextmanager
def plain_tensors() -> Iterator[None]:
    """MONAI transforms return plain tensors inside the block (no MetaTensor: a patch's
    augmentation keeps no metadata); the same values, checked, in about a fifth less time."""
    previous = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(previous)


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

    def __init__(self, cases: Sequence[Case], patch_size: Sequence[int],
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

    def _start(self, case: Case, rng: np.random.Generator) -> np.ndarray:
        """A crop's start. Foreground crops centre on a labelled voxel, clipped into the volume;
        random crops draw the start uniformly over [0, shape - patch] (a centre drawn over the
        volume and clipped would pile the crops up at the edges)."""
        upper = np.maximum(np.asarray(case.shape) - np.asarray(self.patch), 0)
        if case.case_id in self.free_starts:
            free = self.free_starts[case.case_id]
            return np.array([*(rng.integers(n + 1) for n in upper[:-1]),
                             free[rng.integers(len(free))]])
        if case.n_foreground and rng.random() < self.foreground_fraction:
            centre = case.foreground_voxel(rng.integers(case.n_foreground))
            return np.clip(centre - np.asarray(self.patch) // 2, 0, upper)
        return np.array([rng.integers(n + 1) for n in upper])

    def sample_one(self, rng: np.random.Generator, case: Case | None = None
                   ) -> dict[str, np.ndarray]:
        """One sample of `case` (drawn uniformly when not given)."""
        if case is None:
            case = self.cases[rng.integers(len(self.cases))]
        start = self._start(case, rng)
        item = {"image": case.image_patch(start, self.patch),
                "label": case.label_patch(start, self.patch)[None].astype(np.float32)}
        if (inputs := case.inputs_patch(start, self.patch)) is not None:
            item["case_inputs"] = inputs
        if self.augment is not None:
            self.augment.set_random_state(seed=int(rng.integers(2**31)))
            with plain_tensors():
                item = {key: np.asarray(value) for key, value in self.augment(item).items()}
            if not case.present.all():  # shifts never fill absent channels
                item["image"] = item["image"] * case.present[:, None, None, None]
        available = (sample_subset(case.present, rng, self.full_modality_prob)
                     if self.modality_dropout else case.present)
        out = {"images": item["image"].astype(np.float32),
               "target": np.rint(item["label"][0]).astype(np.uint8),  # classes < 256
               "available": available.copy(), "present": case.present.copy()}
        if "case_inputs" in item:
            out["case_inputs"] = item["case_inputs"].astype(np.float32)
        return out

    def sample(self, rng: np.random.Generator, batch_size: int,
               out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """A batch as stacked numpy arrays: images, target, available, present (and
        case_inputs when the cases have them); its cases are drawn without replacement
        (`draw_cases`). `out`: arrays of the batch's shapes to stack into (a loader's shared
        memory), returned filled."""
        picks = draw_cases(len(self.cases), batch_size, rng)
        items = [self.sample_one(rng, self.cases[i]) for i in picks]
        out = out or {}
        return {key: np.stack([item[key] for item in items], out=out.get(key))
                for key in items[0]}
