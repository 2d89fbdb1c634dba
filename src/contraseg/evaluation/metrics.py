"""Segmentation metrics with explicit, documented conventions.

Hand-written rather than taken from a library because published numbers depend on small choices
(which voxels form a surface, how HD95 pools the two directions, what an empty mask scores) and
every one of them must be exact and stated. The choices made here:

* Masks are binary: any non-zero value is foreground. Arrays may have any number of dimensions
  (2D and 3D in practice).
* Surface: the mask minus its erosion by the face-connected structuring element
  (``generate_binary_structure(ndim, 1)``), with everything outside the image counted as
  background, so foreground voxels on the image edge are surface voxels.
* Surface distances: for each surface voxel of one mask, the Euclidean distance to the nearest
  surface voxel of the other, from an exact Euclidean distance transform. ``spacing=None`` gives
  voxel units; a spacing gives physical units (mm).
* HD is the largest distance in either direction. ASSD is the mean of the pooled distances of
  both directions (MedPy 0.5.2's ``assd``). HD95 has two definitions:
  ``"brats"`` (also MedPy's ``hd95``): 95th percentile, linear interpolation, of the pooled
  distances; ``"monai"``: the larger of the two directed 95th percentiles (MONAI's
  ``compute_hausdorff_distance(percentile=95)``).
* Empty masks follow an :class:`EmptyPolicy` (presets ``"brats"`` and ``"nan"``).

The BraTS evaluation package's published global Dice and HD95 (voxel units) are reproduced by
``binary_metrics(pred, ref, spacing=None, hd95_definition="brats", empty_policy="brats")``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple

import numpy as np
from scipy import ndimage

from contraseg.data.labels import LabelConvention, get_convention
from contraseg.errors import ConfigError

Spacing = float | Sequence[float] | None
HD95_DEFINITIONS = ("brats", "monai")
UNITS = ("voxel", "mm")
METRIC_NAMES = (
    "dice", "iou", "sensitivity", "specificity", "precision", "vs", "hd", "hd95", "assd"
)
SURFACE_DEFINITION = (
    "mask XOR its binary erosion with the face-connected (6-neighbour in 3D) structure; "
    "outside the image counts as background, so foreground on the image edge is surface"
)
DISTANCE_DEFINITION = (
    "exact Euclidean distance transform; each surface voxel to the nearest surface voxel of the "
    "other mask"
)
HD95_DESCRIPTIONS = {
    "brats": "95th percentile (linear interpolation) of the pooled distances of both directions "
    "(BraTS evaluation package, MedPy hd95)",
    "monai": "maximum of the two directed 95th percentiles (MONAI compute_hausdorff_distance)",
}


# ---------------------------------------------------------------------------------------------
# Empty-mask policy


@dataclass(frozen=True)
class EmptyPolicy:
    """Values given to metrics that an empty mask leaves undefined.

    Attributes:
        name: the preset's name, written into reports.
        both_empty: any overlap ratio that is 0/0 because prediction and reference are both empty
            (dice, iou, sensitivity, precision, vs). Specificity stays defined (tn / tn).
        undefined: any other 0/0 ratio: sensitivity with an empty reference, precision with an
            empty prediction, specificity with a reference that fills the image. Dice, IoU and
            VS are always defined (0) when exactly one mask is empty.
        both_empty_distance: hd, hd95 and assd when both masks are empty.
        one_empty_distance: hd, hd95 and assd when exactly one mask is empty.
    """

    name: str
    both_empty: float
    undefined: float
    both_empty_distance: float
    one_empty_distance: float

    def to_dict(self) -> dict[str, str | float | None]:
        """JSON-ready description; NaN is written as None (null)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in asdict(self).items()}


# 373.13 is the legacy BraTS penalty: the diagonal of the 240x240x155 BraTS grid
# (sqrt(240^2 + 240^2 + 155^2) = 373.128...), the largest distance possible in that grid.
BRATS_EMPTY_DISTANCE = 373.13

EMPTY_POLICIES: dict[str, EmptyPolicy] = {
    # Legacy BraTS: agreeing on "no tumour" is perfect (1 / distance 0); an unmatched mask scores
    # 0 and the maximal distance; a one-sided 0/0 ratio scores 0 (as tp / (tp + fn + tiny)).
    "brats": EmptyPolicy("brats", 1.0, 0.0, 0.0, BRATS_EMPTY_DISTANCE),
    # Strict: nothing is invented; every undefined value is NaN (drop it when aggregating).
    "nan": EmptyPolicy("nan", math.nan, math.nan, math.nan, math.nan),
}


def get_empty_policy(policy: str | EmptyPolicy) -> EmptyPolicy:
    """Look an empty-mask policy up by preset name (or pass an EmptyPolicy through)."""
    if isinstance(policy, EmptyPolicy):
        return policy
    try:
        return EMPTY_POLICIES[policy.lower()]
    except (KeyError, AttributeError):
        known = ", ".join(EMPTY_POLICIES)
        raise ConfigError(f"unknown empty-mask policy '{policy}' (known: {known})") from None


# ---------------------------------------------------------------------------------------------
# Overlap metrics


class ConfusionCounts(NamedTuple):
    """Voxel counts of a binary prediction against a binary reference."""

    tp: int
    fp: int
    fn: int
    tn: int


def _as_masks(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred).astype(bool, copy=False)
    ref = np.asarray(ref).astype(bool, copy=False)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    return pred, ref


def confusion_counts(pred: np.ndarray, ref: np.ndarray) -> ConfusionCounts:
    """tp, fp, fn, tn (Python ints) of two masks; non-zero values are foreground."""
    pred, ref = _as_masks(pred, ref)
    tp = int(np.count_nonzero(pred & ref))
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(ref))
    return ConfusionCounts(tp, n_pred - tp, n_ref - tp, pred.size - n_pred - n_ref + tp)


def _ratio(num: int, den: int, fallback: float) -> float:
    return num / den if den else fallback


def overlap_metrics(
    counts: ConfusionCounts, empty_policy: str | EmptyPolicy = "brats"
) -> dict[str, float]:
    """dice, iou, sensitivity, specificity, precision and vs from confusion counts.

    vs is the volumetric similarity 1 - |Vp - Vr| / (Vp + Vr). A 0/0 ratio takes the policy's
    `both_empty` value when both masks are empty and its `undefined` value otherwise.
    """
    policy = get_empty_policy(empty_policy)
    tp, fp, fn, tn = counts
    n_pred, n_ref = tp + fp, tp + fn
    fallback = policy.both_empty if n_pred == 0 and n_ref == 0 else policy.undefined
    vs_diff = _ratio(abs(n_pred - n_ref), n_pred + n_ref, math.nan)
    return {
        "dice": _ratio(2 * tp, n_pred + n_ref, fallback),
        "iou": _ratio(tp, tp + fp + fn, fallback),
        "sensitivity": _ratio(tp, n_ref, fallback),
        "specificity": _ratio(tn, tn + fp, fallback),
        "precision": _ratio(tp, n_pred, fallback),
        "vs": fallback if math.isnan(vs_diff) else 1.0 - vs_diff,
    }


# ---------------------------------------------------------------------------------------------
# Surface distances


def _spacing_array(spacing: Spacing, ndim: int) -> np.ndarray | None:
    if spacing is None:
        return None
    values = np.asarray(spacing, dtype=np.float64)
    if values.ndim == 0:
        values = np.full(ndim, float(values))
    if values.shape != (ndim,) or not np.all(values > 0):
        raise ValueError(f"spacing {spacing} must be one or {ndim} positive numbers")
    return values


def _union_box(pred: np.ndarray, ref: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of pred | ref grown by one voxel, clipped at the image edge."""
    union = pred | ref
    box = []
    for axis in range(union.ndim):
        others = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=others))
        box.append(slice(max(int(hits[0]) - 1, 0), min(int(hits[-1]) + 2, union.shape[axis])))
    return tuple(box)


def mask_surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels of a mask: the mask minus its face-connected erosion (edge = background)."""
    mask = np.asarray(mask).astype(bool, copy=False)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask ^ ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _directed(from_surface: np.ndarray, to_surface: np.ndarray, spacing: np.ndarray | None):
    # The EDT measures the distance to the nearest zero, so the target surface must be the zeros.
    field = ndimage.distance_transform_edt(~to_surface, sampling=spacing)
    return field[from_surface]


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Spacing = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (pred -> ref, ref -> pred), in voxels or in spacing units.

    Raises ValueError when either mask is empty (the distances do not exist).
    """
    pred, ref = _as_masks(pred, ref)
    if not pred.any() or not ref.any():
        raise ValueError("surface distances need two non-empty masks")
    sampling = _spacing_array(spacing, pred.ndim)
    # Cropping to the union's box changes nothing: every surface voxel lies inside it, the
    # one-voxel margin is true background (or the image edge, which the erosion treats as
    # background anyway), so each voxel's erosion sees the same neighbours; and the EDT
    # depends only on index differences, which a crop does not change. Voxel order is kept too.
    box = _union_box(pred, ref)
    pred_surface, ref_surface = mask_surface(pred[box]), mask_surface(ref[box])
    return (
        _directed(pred_surface, ref_surface, sampling),
        _directed(ref_surface, pred_surface, sampling),
    )


def _check_hd95_definition(definition: str) -> None:
    if definition not in HD95_DEFINITIONS:
        known = ", ".join(HD95_DEFINITIONS)
        raise ConfigError(f"unknown hd95 definition '{definition}' (known: {known})")


def hd95_from_distances(
    d_pred_ref: np.ndarray, d_ref_pred: np.ndarray, definition: str = "brats"
) -> float:
    """HD95 from directed distances: "brats" pools both directions, "monai" takes the max."""
    _check_hd95_definition(definition)
    if definition == "brats":
        return float(np.percentile(np.hstack((d_pred_ref, d_ref_pred)), 95))
    return float(max(np.percentile(d_pred_ref, 95), np.percentile(d_ref_pred, 95)))


def distance_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Spacing = None,
    hd95_definition: str = "brats",
    empty_policy: str | EmptyPolicy = "brats",
) -> dict[str, float]:
    """hd, hd95 and assd of two masks; an empty mask gives the policy's distance values."""
    pred, ref = _as_masks(pred, ref)
    policy = get_empty_policy(empty_policy)
    _check_hd95_definition(hd95_definition)
    pred_any, ref_any = bool(pred.any()), bool(ref.any())
    if not (pred_any and ref_any):
        value = policy.both_empty_distance if pred_any == ref_any else policy.one_empty_distance
        return {"hd": value, "hd95": value, "assd": value}
    d_ab, d_ba = surface_distances(pred, ref, spacing)
    return {
        "hd": float(max(d_ab.max(), d_ba.max())),
        "hd95": hd95_from_distances(d_ab, d_ba, hd95_definition),
        "assd": float(np.concatenate((d_ab, d_ba)).mean()),
    }


# ---------------------------------------------------------------------------------------------
# Per-mask and per-region scores


def binary_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Spacing = None,
    hd95_definition: str = "brats",
    empty_policy: str | EmptyPolicy = "brats",
) -> dict[str, float]:
    """All metrics of METRIC_NAMES for one binary prediction against one binary reference."""
    pred, ref = _as_masks(pred, ref)
    scores = overlap_metrics(confusion_counts(pred, ref), empty_policy)
    scores.update(distance_metrics(pred, ref, spacing, hd95_definition, empty_policy))
    return scores


def region_metrics(
    pred_canonical: np.ndarray,
    ref_canonical: np.ndarray,
    convention: str | LabelConvention,
    spacing: Spacing = None,
    hd95_definition: str = "brats",
    empty_policy: str | EmptyPolicy = "brats",
) -> dict[str, dict[str, float]]:
    """binary_metrics of each region of the convention (e.g. WT, TC, ET) from canonical maps."""
    conv = get_convention(convention)
    pred_regions = conv.region_masks(np.asarray(pred_canonical))
    ref_regions = conv.region_masks(np.asarray(ref_canonical))
    return {
        name: binary_metrics(
            pred_regions[name], ref_regions[name], spacing, hd95_definition, empty_policy
        )
        for name in conv.regions
    }


# ---------------------------------------------------------------------------------------------
# Settings and the score report


@dataclass(frozen=True)
class MetricSettings:
    """The conventions a set of scores was computed with, for reports."""

    units: Literal["voxel", "mm"] = "voxel"
    hd95_definition: str = "brats"
    empty_policy: str | EmptyPolicy = "brats"
    spacing: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.units not in UNITS:
            raise ConfigError(f"unknown units '{self.units}' (known: {', '.join(UNITS)})")
        _check_hd95_definition(self.hd95_definition)
        object.__setattr__(self, "empty_policy", get_empty_policy(self.empty_policy))
        if self.units == "mm" and self.spacing is None:
            raise ConfigError("units 'mm' need the voxel spacing")
        if self.spacing is not None:
            object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))

    @property
    def distance_spacing(self) -> tuple[float, ...] | None:
        """The spacing passed to the distance metrics: None (voxel units) unless units are mm."""
        return self.spacing if self.units == "mm" else None

    def to_dict(self) -> dict:
        """JSON-ready statement of every convention behind the scores."""
        spacing = self.distance_spacing
        return {
            "surface": SURFACE_DEFINITION,
            "distance": DISTANCE_DEFINITION,
            "units": self.units,
            "spacing": list(spacing) if spacing is not None else None,
            "hd95_definition": self.hd95_definition,
            "hd95": HD95_DESCRIPTIONS[self.hd95_definition],
            "assd": "mean of the pooled distances of both directions (MedPy assd)",
            "vs": "1 - |Vpred - Vref| / (Vpred + Vref)",
            "empty_policy": self.empty_policy.to_dict(),
        }


def score_label_maps(
    pred_raw: np.ndarray,
    ref_raw: np.ndarray,
    convention: str | LabelConvention | Mapping,
    spacing: Spacing = None,
    units: Literal["voxel", "mm"] = "voxel",
    hd95_definition: str = "brats",
    empty_policy: str | EmptyPolicy = "brats",
) -> dict:
    """Score a raw prediction label map against a raw reference label map, region by region.

    Both maps go through the convention's `to_canonical` (unknown values raise ValueError).
    units="voxel" ignores `spacing`; units="mm" requires it. Returns
    ``{"conventions": {...}, "regions": {"WT": {...}, ...}}``.
    """
    conv = get_convention(convention)
    ndim = np.ndim(ref_raw)
    given = None if spacing is None else tuple(_spacing_array(spacing, ndim))
    settings = MetricSettings(units, hd95_definition, empty_policy, given)
    regions = region_metrics(
        conv.to_canonical(np.asarray(pred_raw)),
        conv.to_canonical(np.asarray(ref_raw)),
        conv,
        settings.distance_spacing,
        settings.hd95_definition,
        settings.empty_policy,
    )
    conventions = {
        "label_convention": conv.name,
        "region_classes": {name: list(classes) for name, classes in conv.regions.items()},
        **settings.to_dict(),
    }
    return {"conventions": conventions, "regions": regions}
