"""The BraTS peers' small-ET rule: predicted enhancing tumour under a volume becomes
necrosis, on brain conventions and whole-head fields of view only."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from contraseg.data.labels import BRAIN_CLASS_NAMES, LabelConvention


def has_enhancing_class(convention: LabelConvention) -> bool:
    """Whether the convention uses the canonical brain classes (3 = enhancing, 1 = necrosis)."""
    return tuple(convention.class_names[:4]) == BRAIN_CLASS_NAMES


BRATS_FIELD_OF_VIEW_MM = 100.0  # the ET rule's scope: scans at least this wide on every axis


def et_rule_threshold(min_voxels: int, shape: Sequence[int], spacing: Sequence[float],
                      convention: LabelConvention | None = None) -> int:
    """The small-ET rule's threshold in voxels of a grid of `shape` and `spacing` (mm); 0: off,
    also for a `convention` without an enhancing-tumour class (the rule is the brain's).

    BraTS's peers count `min_voxels` (500) voxels on BraTS's 1 mm isotropic grid, i.e. a
    physical volume of `min_voxels` mm^3: the threshold keeps that volume on any grid (2 mm
    voxels: 63, since 62 voxels are 496 mm^3). The rule is defined for whole-head scans
    (BraTS: 240 x 240 x 155 mm); on a field of view under BRATS_FIELD_OF_VIEW_MM along any
    axis (the 64 mm phantom, a crop) it is off, because a 500 mm^3 enhancing rim is no longer
    "small" there (it turned a 94% ET Dice on the phantom into HD95 373).
    """
    if min_voxels <= 0 or (convention is not None and not has_enhancing_class(convention)):
        return 0
    extent = np.asarray(shape, dtype=float) * np.asarray(spacing, dtype=float)
    if np.any(extent < BRATS_FIELD_OF_VIEW_MM):
        return 0
    # a whole number of voxels under min_voxels mm^3 is one under ceil(min_voxels / volume)
    volume = float(np.prod(np.asarray(spacing, dtype=float)))
    return max(1, math.ceil(min_voxels / volume - 1e-9))


def postprocess_et(labels_canonical: np.ndarray, min_voxels: int, et_class: int = 3,
                   replace_with: int = 1) -> np.ndarray:
    """The BraTS peers' rule: predicted enhancing tumour of fewer than `min_voxels` voxels
    (counted over the whole map) becomes `replace_with` (necrosis / non-enhancing core), so the
    tumour core is unchanged and ET becomes empty. `min_voxels <= 0` disables it; callers pass
    `et_rule_threshold(...)`, the count for the map's own grid.

    Only meaningful for canonical brain classes (`has_enhancing_class`); `Predictor` skips it
    for other conventions. Returns a new array when it relabels, else the input itself.
    """
    if min_voxels <= 0:
        return labels_canonical
    enhancing = labels_canonical == et_class
    count = int(enhancing.sum())
    if count == 0 or count >= min_voxels:
        return labels_canonical
    out = labels_canonical.copy()
    out[enhancing] = replace_with
    return out
