"""Training cases: a preprocessed case laid out on the run's modality list, read a patch at a time.

Cases from several datasets may have different modalities (TCGA with four, BraTS 2015 with
FLAIR and T1c): every case is laid out on the union of modality names, absent channels zeroed
and marked not present.

A training run keeps no case in memory (`DiskCase`): BraTS 2021's 1,251 cases are about 60 GB
of float32 arrays, more than most machines' RAM. Each patch maps its case's cache files, copies
the patch's voxels (only the pages holding them are read) and unmaps them again; a mapping held
open would count every page it ever touched in the resident memory of the process and of each
loader worker. `TrainCase` holds the same arrays in memory (tests, small tools): both offer the
interface the patch sampler reads (`shape`, `present`, `n_foreground`, `foreground_voxel`,
`image_patch`, `label_patch`, `inputs_patch`) and whole arrays for validation (`image`,
`label`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contraseg.data.cache import CaseCache
from contraseg.data.cases import CaseSpec, DatasetSpec
from contraseg.data.labels import LabelConvention, whole_tumour
from contraseg.data.preprocess import PreprocessSettings
from contraseg.errors import ConfigError
from contraseg.utils.fs import atomic_path

MAX_FOREGROUND_COORDS = 20_000  # per case, enough to sample tumour-centred patches from


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


def read_patch(path: Path, start: Sequence[int], patch: Sequence[int],
               dtype: np.dtype | type | None = None) -> np.ndarray:
    """`crop_patch` of the .npy file at `path`, memory-mapped: only the patch's pages are read,
    and the mapping is closed when this returns (the copy is all that stays)."""
    mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    return np.array(crop_patch(mapped, start, patch), dtype=dtype)


def foreground_coords(label: np.ndarray, seed: int) -> np.ndarray:
    """(K, 3) int32 coordinates of the labelled voxels of a canonical label map: all of them,
    or a seeded random subset of MAX_FOREGROUND_COORDS."""
    coords = np.argwhere(label > 0)
    if len(coords) > MAX_FOREGROUND_COORDS:
        rng = np.random.default_rng([seed, len(coords)])
        coords = coords[rng.choice(len(coords), MAX_FOREGROUND_COORDS, replace=False)]
    return coords.astype(np.int32)


@dataclass
class TrainCase:
    """One case in memory (arrays on the preprocessed grid)."""

    case_id: str
    image: np.ndarray  # (M, X, Y, Z) float32 on the run's modality list; absent channels zero
    label: np.ndarray  # (X, Y, Z) uint8 canonical classes
    present: np.ndarray  # (M,) bool
    foreground: np.ndarray  # (K, 3) int coordinates of labelled voxels (a random subset)
    case_inputs: np.ndarray | None = None  # (R, X, Y, Z) the method's per-case inputs

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.label.shape)

    @property
    def n_foreground(self) -> int:
        return len(self.foreground)

    def foreground_voxel(self, index: int) -> np.ndarray:
        return self.foreground[index]

    def image_patch(self, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
        return crop_patch(self.image, start, patch)

    def label_patch(self, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
        return crop_patch(self.label, start, patch)

    def inputs_patch(self, start: Sequence[int], patch: Sequence[int]) -> np.ndarray | None:
        return None if self.case_inputs is None else crop_patch(self.case_inputs, start, patch)

    def attach_inputs(self, path: Path) -> None:
        """The method's per-case inputs, from the .npy file `path`."""
        self.case_inputs = np.load(path)

    def content_key(self) -> str:
        """Identifies the image the case presents and its modalities: a digest of the array."""
        digest = hashlib.sha1(np.ascontiguousarray(self.image).tobytes())
        digest.update(self.present.tobytes())
        return digest.hexdigest()


class DiskCase:
    """One case read from its cache entry a patch at a time (see the module docstring); labels
    are mapped to canonical classes patch by patch, images computed in float32 whatever the
    stored type. The foreground coordinates are computed once and kept in the entry."""

    def __init__(self, case_id: str, entry: Path, modalities: Sequence[str],
                 convention: LabelConvention | None, seed: int = 0):
        meta = json.loads((entry / "record.json").read_text())
        self.case_id, self.entry = case_id, Path(entry)
        self.slots = np.array([list(modalities).index(m) for m in meta["modalities"]], int)
        self.present = np.zeros(len(modalities), dtype=bool)
        self.present[self.slots] = True
        self.convention = convention if meta["has_label"] else None
        self.shape = tuple(np.load(entry / "image.npy", mmap_mode="r").shape[1:])
        self.case_inputs: Path | None = None
        # computing the foreground checks the whole label against the convention (once per
        # entry and convention: the file is kept), so patches need not check theirs
        self._foreground = self._foreground_file(seed) if self.convention else None
        self.n_foreground = (len(np.load(self._foreground, mmap_mode="r"))
                             if self._foreground else 0)

    def _foreground_file(self, seed: int) -> Path:
        tag = json.dumps([self.convention.to_dict(), MAX_FOREGROUND_COORDS, seed],
                         sort_keys=True)
        path = self.entry / f"foreground-{hashlib.sha1(tag.encode()).hexdigest()[:12]}.npy"
        if not path.is_file():
            with atomic_path(path) as tmp:  # ranks may race: each writes its own, then renames
                np.save(tmp, foreground_coords(self.label, seed), allow_pickle=False)
        return path

    @property
    def image(self) -> np.ndarray:
        """The whole (M, X, Y, Z) float32 image on the run's modalities (read from disk)."""
        return self._layout(np.load(self.entry / "image.npy", allow_pickle=False))

    @property
    def label(self) -> np.ndarray:
        """The whole canonical label map (read from disk; all background without a label)."""
        if self.convention is None:
            return np.zeros(self.shape, dtype=np.uint8)
        return self.convention.to_canonical(np.load(self.entry / "label.npy", allow_pickle=False))

    def foreground_voxel(self, index: int) -> np.ndarray:
        return np.array(np.load(self._foreground, mmap_mode="r")[index])

    def image_patch(self, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
        return self._layout(read_patch(self.entry / "image.npy", start, patch, np.float32))

    def label_patch(self, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
        if self.convention is None:
            return np.zeros(tuple(patch), dtype=np.uint8)
        raw = read_patch(self.entry / "label.npy", start, patch)
        return self.convention.to_canonical(raw, checked=True)  # checked whole: `_foreground`

    def inputs_patch(self, start: Sequence[int], patch: Sequence[int]) -> np.ndarray | None:
        return None if self.case_inputs is None else read_patch(self.case_inputs, start, patch)

    def attach_inputs(self, path: Path) -> None:
        """The method's per-case inputs: the .npy file `path`, read a patch at a time."""
        self.case_inputs = Path(path)

    def content_key(self) -> str:
        """Identifies the image the case presents and its modalities without reading it: the
        entry's name holds the cache key (inputs, settings, stored type, version), and the
        run's modality layout places its channels."""
        return json.dumps([self.entry.name, self.slots.tolist(), len(self.present)])

    def _layout(self, stored: np.ndarray) -> np.ndarray:
        if np.array_equal(self.slots, np.arange(len(self.present))):  # already the run's order
            return stored.astype(np.float32, copy=False)
        out = np.zeros((len(self.present), *stored.shape[1:]), dtype=np.float32)
        out[self.slots] = stored
        return out


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
                  whole_tumour_only: bool = False) -> DiskCase:
    """Preprocess (through the cache) one case and lay it out on `modalities`, on disk (a case
    without a label gets an all-background one; `whole_tumour_only` merges the tumour
    classes)."""
    entry = cache.ensure(case.present_only(), settings, resample_to=resample_to)
    convention = spec.convention
    if whole_tumour_only and convention is not None:
        convention = whole_tumour(convention)
    return DiskCase(case.case_id, entry, modalities, convention, seed)
