"""Reorient, crop to the brain, z-score and resample a loaded case, and undo it for predictions.

Every geometric step is recorded in a `GridRecord`, so a prediction made on the preprocessed grid
goes back to the input grid (and affine) exactly: `invert_labels` and `invert_probabilities`.

Brain mask rule (when a case has no brain mask file): a voxel is brain when ANY modality differs
from that modality's background value. The background value is the volume's minimum when that
minimum is a constant fill, i.e. it covers at least 5% of all voxels and at least half of the
voxels on the volume's six faces; otherwise it is 0. Skull-stripped raw scans have background 0
(their minimum may be a negative interpolation artefact inside the brain, covering a few voxels);
already z-scored scans such as the BraTS 2015 `*_subtrMeanDivStd` files have a constant negative
background (about 82-86% of the voxels and all face voxels) that is not 0. Taking the union over
modalities matters: in those T1c files thousands of brain voxels equal the background value.

Resampling to `target_spacing` keeps the field of view (voxel edges aligned, scipy `zoom` with
`grid_mode=True`), so the way back is the exact inverse index map onto the cropped grid. Images
and the brain mask are resampled linearly; label maps by resampling each value's indicator
linearly and taking the most likely value (smoother than nearest neighbour when shrinking).
On the way back labels use nearest neighbour and probabilities linear interpolation. Without
resampling, reorientation and cropping are undone voxel for voxel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields

import nibabel as nib
import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)
from scipy import ndimage

from contraseg.data.io import LoadedCase
from contraseg.data.labels import label_values
from contraseg.errors import ConfigError

PREPROCESS_VERSION = "1"  # bump when preprocessing changes what it produces (cache key)
BACKGROUND_MIN_FRACTION = 0.05  # of all voxels
BACKGROUND_FACE_FRACTION = 0.5  # of the voxels on the volume's faces
_AXIS_LETTERS = ("LR", "PA", "IS")


def _check_axcodes(orientation: str) -> str:
    codes = str(orientation).upper()
    axes = sorted(i for c in codes for i, pair in enumerate(_AXIS_LETTERS) if c in pair)
    if len(codes) != 3 or axes != [0, 1, 2]:
        raise ConfigError(f"orientation '{orientation}' is not 3 axis codes like RAS or LPS")
    return codes


@dataclass(frozen=True)
class PreprocessSettings:
    """What `preprocess` does. `target_spacing` is in mm along the axes after reorientation."""

    orientation: str | None = "RAS"
    crop_to_brain: bool = True
    crop_margin: int = 2
    zscore: bool = True
    target_spacing: tuple[float, float, float] | None = None
    version: str = PREPROCESS_VERSION

    def __post_init__(self) -> None:
        if self.orientation is not None:
            object.__setattr__(self, "orientation", _check_axcodes(self.orientation))
        if int(self.crop_margin) < 0:
            raise ConfigError(f"crop_margin must be >= 0, not {self.crop_margin}")
        object.__setattr__(self, "crop_margin", int(self.crop_margin))
        if self.target_spacing is not None:
            spacing = tuple(float(s) for s in np.ravel(self.target_spacing))
            if len(spacing) == 1:
                spacing = spacing * 3
            if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
                raise ConfigError(f"target_spacing must be 3 positive numbers, not {spacing}")
            object.__setattr__(self, "target_spacing", spacing)

    def to_dict(self) -> dict:
        """JSON-ready settings (part of the cache key)."""
        data = asdict(self)
        if self.target_spacing is not None:
            data["target_spacing"] = list(self.target_spacing)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> PreprocessSettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown preprocessing settings {unknown} (known: {sorted(known)})")
        return cls(**dict(data))


@dataclass
class GridRecord:
    """Everything needed to map an array on the preprocessed grid back onto the input grid."""

    original_shape: tuple[int, int, int]
    original_affine: np.ndarray  # (4, 4)
    start_ornt: np.ndarray  # (3, 2) orientation of the input grid (nibabel ornt)
    target_ornt: np.ndarray  # (3, 2) orientation after reorientation
    oriented_shape: tuple[int, int, int]
    crop: tuple[tuple[int, int], ...]  # (start, stop) per axis of the reoriented grid
    cropped_spacing: tuple[float, float, float]  # before resampling
    shape: tuple[int, int, int]  # of the preprocessed arrays
    spacing: tuple[float, float, float]
    affine: np.ndarray  # of the preprocessed grid

    @property
    def ornt(self) -> np.ndarray:
        """The orientation transform applied to the input (nibabel ornt)."""
        return ornt_transform(self.start_ornt, self.target_ornt)

    @property
    def cropped_shape(self) -> tuple[int, int, int]:
        return tuple(stop - start for start, stop in self.crop)

    @property
    def resampled(self) -> bool:
        return self.shape != self.cropped_shape

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "original_shape": list(self.original_shape),
            "original_affine": self.original_affine.tolist(),
            "start_ornt": self.start_ornt.tolist(),
            "target_ornt": self.target_ornt.tolist(),
            "ornt": self.ornt.tolist(),
            "oriented_shape": list(self.oriented_shape),
            "crop": [list(c) for c in self.crop],
            "cropped_spacing": list(self.cropped_spacing),
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "affine": self.affine.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> GridRecord:
        def ints(key: str) -> tuple[int, ...]:
            return tuple(int(v) for v in data[key])

        def floats(key: str) -> tuple[float, ...]:
            return tuple(float(v) for v in data[key])

        return cls(
            original_shape=ints("original_shape"),
            original_affine=np.asarray(data["original_affine"], dtype=np.float64),
            start_ornt=np.asarray(data["start_ornt"], dtype=np.float64),
            target_ornt=np.asarray(data["target_ornt"], dtype=np.float64),
            oriented_shape=ints("oriented_shape"),
            crop=tuple((int(a), int(b)) for a, b in data["crop"]),
            cropped_spacing=floats("cropped_spacing"),
            shape=ints("shape"),
            spacing=floats("spacing"),
            affine=np.asarray(data["affine"], dtype=np.float64),
        )


@dataclass
class Preprocessed:
    """A case ready for a network: arrays on the preprocessed grid and the way back."""

    case_id: str
    modalities: tuple[str, ...]
    image: np.ndarray  # (M, X, Y, Z) float32
    label: np.ndarray | None  # raw label values (mapping to classes is the convention's job)
    brain_mask: np.ndarray  # bool
    record: GridRecord


def background_value(volume: np.ndarray) -> float:
    """The constant value outside the head/brain: the minimum if it is a fill, else 0."""
    low = volume.min()
    if low == 0 or np.mean(volume == low) < BACKGROUND_MIN_FRACTION:
        return 0.0
    faces = [np.moveaxis(volume, axis, 0)[end] for axis in range(3) for end in (0, -1)]
    face_fraction = sum(int((f == low).sum()) for f in faces) / sum(f.size for f in faces)
    return float(low) if face_fraction >= BACKGROUND_FACE_FRACTION else 0.0


def compute_brain_mask(image: np.ndarray) -> np.ndarray:
    """Voxels where any modality of (M, X, Y, Z) differs from its background value."""
    mask = np.zeros(image.shape[1:], dtype=bool)
    for channel in image:
        mask |= channel != background_value(channel)
    return mask


def _crop_box(keep: np.ndarray, margin: int) -> tuple[tuple[int, int], ...]:
    """Bounding box of `keep` grown by `margin` voxels (the whole grid when `keep` is empty)."""
    box = ndimage.find_objects(keep.astype(np.uint8))
    if not box or box[0] is None:
        return tuple((0, n) for n in keep.shape)
    return tuple(
        (max(s.start - margin, 0), min(s.stop + margin, n))
        for s, n in zip(box[0], keep.shape, strict=True)
    )


def zscore(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(x - mean) / std per modality over the mask; 0 outside it."""
    out = np.zeros_like(image, dtype=np.float32)
    if not mask.any():
        return out
    for index, channel in enumerate(image):
        values = channel[mask].astype(np.float64)
        std = values.std()
        out[index][mask] = (values - values.mean()) / (std if std > 1e-8 else 1.0)
    return out


def resize(data: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Resample a 3D array to `shape`, keeping the field of view (voxel edges stay aligned).

    Resizing to shape B and back to shape A uses the exact inverse index map, so the way back
    lands on the original grid. Order 0 is nearest neighbour, order 1 linear.
    """
    shape = tuple(int(n) for n in shape)
    if data.shape == shape:
        return data
    factors = np.asarray(shape, dtype=np.float64) / np.asarray(data.shape)
    return ndimage.zoom(data, factors, order=order, mode="nearest", grid_mode=True)


def resize_labels(label: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resample a label map: each value's indicator linearly, then the most likely value.

    Smoother than nearest neighbour when shrinking; ties go to the smaller value.
    """
    shape = tuple(int(n) for n in shape)
    if label.shape == shape:
        return label
    best = np.full(shape, -1.0, dtype=np.float32)
    out = np.zeros(shape, dtype=label.dtype)
    for value in label_values(label):
        score = resize((label == value).astype(np.float32), shape, order=1)
        better = score > best
        out[better], best[better] = value, score[better]
    return out


def _resized_affine(affine: np.ndarray, old: Sequence[int], new: Sequence[int]) -> np.ndarray:
    scale = np.asarray(old, dtype=np.float64) / np.asarray(new)
    index_map = np.diag([*scale, 1.0])
    index_map[:3, 3] = (scale - 1) / 2  # voxel centres of the new grid in old voxel indices
    return affine @ index_map


def _target_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]):
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))


def reoriented_spacing(affine: np.ndarray, orientation: str | None) -> tuple[float, ...]:
    """Voxel sizes (mm) along the axes the grid has after reorientation to `orientation`
    (None: as stored), the axes `target_spacing` is given in."""
    start = io_orientation(affine)
    target = start if orientation is None else axcodes2ornt(tuple(orientation))
    sizes = nib.affines.voxel_sizes(affine)
    out = [0.0, 0.0, 0.0]
    for axis, (new_axis, _) in enumerate(ornt_transform(start, target)):
        out[int(new_axis)] = float(sizes[axis])
    return tuple(out)


def _reorient(loaded: LoadedCase, orientation: str | None):
    start = io_orientation(loaded.affine)
    target = start if orientation is None else axcodes2ornt(tuple(orientation))
    ornt = ornt_transform(start, target)
    image = np.stack([apply_orientation(c, ornt) for c in loaded.image])
    label = None if loaded.label is None else apply_orientation(loaded.label, ornt)
    given = loaded.brain_mask
    mask = compute_brain_mask(image) if given is None else apply_orientation(given, ornt)
    affine = loaded.affine @ inv_ornt_aff(ornt, loaded.shape)
    return image, label, mask, affine, start, target


def preprocess(loaded: LoadedCase, settings: PreprocessSettings) -> Preprocessed:
    """Reorient, crop, z-score and resample one loaded case, recording how to undo it.

    The crop box covers the brain mask and every labelled voxel (a few label voxels can lie just
    outside a brain mask: 120 in BraTS 2015 pat0003), plus `crop_margin`. Intensities are
    z-scored on the input resolution, before resampling.
    """
    image, label, mask, affine, start, target = _reorient(loaded, settings.orientation)
    oriented_shape = tuple(int(n) for n in mask.shape)
    crop = tuple((0, n) for n in oriented_shape)
    if settings.crop_to_brain:
        keep = mask if label is None else mask | (label != 0)
        crop = _crop_box(keep, settings.crop_margin)
    window = tuple(slice(a, b) for a, b in crop)
    image, mask = image[(slice(None), *window)], mask[window]
    label = None if label is None else label[window]
    affine = affine @ nib.affines.from_matvec(np.eye(3), [a for a, _ in crop])
    if settings.zscore:
        image = zscore(image, mask)
    cropped_shape, cropped_spacing = mask.shape, nib.affines.voxel_sizes(affine)
    shape = cropped_shape
    if settings.target_spacing is not None:
        shape = _target_shape(cropped_shape, cropped_spacing, settings.target_spacing)
        image = np.stack([resize(c, shape, order=1) for c in image])
        mask = resize(mask.astype(np.float32), shape, order=1) > 0.5
        label = None if label is None else resize_labels(label, shape)
        affine = _resized_affine(affine, cropped_shape, shape)
    record = GridRecord(
        original_shape=loaded.shape,
        original_affine=np.asarray(loaded.affine, dtype=np.float64),
        start_ornt=start,
        target_ornt=target,
        oriented_shape=oriented_shape,
        crop=crop,
        cropped_spacing=tuple(float(s) for s in cropped_spacing),
        shape=tuple(int(n) for n in shape),
        spacing=tuple(float(s) for s in nib.affines.voxel_sizes(affine)),
        affine=affine,
    )
    return Preprocessed(
        case_id=loaded.case_id,
        modalities=loaded.modalities,
        image=np.ascontiguousarray(image, dtype=np.float32),
        label=None if label is None else np.ascontiguousarray(label),
        brain_mask=np.ascontiguousarray(mask, dtype=bool),
        record=record,
    )


def _check_shape(shape: Sequence[int], record: GridRecord) -> None:
    if tuple(shape) != tuple(record.shape):
        raise ValueError(f"array of shape {tuple(shape)} is not on the grid {record.shape}")


def _uncrop(volume: np.ndarray, record: GridRecord, fill: float) -> np.ndarray:
    """Undo cropping and reorientation for one 3D array on the cropped grid."""
    full = np.full(record.oriented_shape, fill, dtype=volume.dtype)
    full[tuple(slice(a, b) for a, b in record.crop)] = volume
    back = apply_orientation(full, ornt_transform(record.target_ornt, record.start_ornt))
    return np.ascontiguousarray(back)


def _back_to_input(volume: np.ndarray, record: GridRecord, order: int, fill: float) -> np.ndarray:
    """Undo resampling, cropping and reorientation for one 3D array."""
    return _uncrop(resize(volume, record.cropped_shape, order), record, fill)


def invert_labels(pred: np.ndarray, record: GridRecord) -> np.ndarray:
    """A label map on the preprocessed grid -> the input grid (nearest; 0 outside the crop)."""
    _check_shape(pred.shape, record)
    return _back_to_input(np.asarray(pred), record, order=0, fill=0)


def invert_image(volume: np.ndarray, record: GridRecord, fill: float = 0.0) -> np.ndarray:
    """An image on the preprocessed grid -> the input grid (linear; `fill` outside the crop)."""
    _check_shape(volume.shape, record)
    return _back_to_input(np.asarray(volume, dtype=np.float32), record, order=1, fill=fill)


def labels_from_probabilities(prob: np.ndarray, record: GridRecord) -> np.ndarray:
    """Labels (uint8) on the input grid from class probabilities (C, ...) on the preprocessed
    grid: the argmax of `invert_probabilities`, taken on the crop before it is put back (outside
    the crop background has probability 1, label 0), so the input grid never holds C floats."""
    _check_shape(prob.shape[1:], record)
    on_crop = np.stack([resize(np.asarray(p, dtype=np.float32), record.cropped_shape, order=1)
                        for p in prob])
    return _uncrop(on_crop.argmax(0).astype(np.uint8), record, fill=0)


def invert_probabilities(prob: np.ndarray, record: GridRecord) -> np.ndarray:
    """Class probabilities (C, ...) -> (C, input shape): linear; outside the crop background=1."""
    _check_shape(prob.shape[1:], record)
    prob = np.asarray(prob, dtype=np.float32)
    return np.stack(
        [
            _back_to_input(p, record, order=1, fill=1.0 if c == 0 else 0.0)
            for c, p in enumerate(prob)
        ]
    )
