"""Metrics over every class of a label map at once (mmsegmentation's mean IoU and mean per-class
accuracy), from the confusion matrix."""

from __future__ import annotations

import math

import numpy as np


def confusion_matrix(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) voxel counts; rows are reference classes, columns predicted."""
    pred = np.asarray(pred).astype(np.int64, copy=False).ravel()
    ref = np.asarray(ref).astype(np.int64, copy=False).ravel()
    if pred.shape != ref.shape:
        raise ValueError(f"prediction size {pred.size} differs from reference size {ref.size}")
    for name, arr in (("prediction", pred), ("reference", ref)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} has class values outside 0..{num_classes - 1}")
    counts = np.bincount(ref * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def multiclass_metrics(
    pred: np.ndarray, ref: np.ndarray, num_classes: int, include_background: bool = True
) -> dict[str, float]:
    """Mean per-class accuracy ("mpa") and mean IoU ("miou") of two class maps.

    Follows mmsegmentation: class c's accuracy is tp_c / (reference voxels of c), NaN when c is
    absent from the reference; its IoU is tp_c / |pred_c union ref_c|, NaN when c is absent from
    both maps. Means skip NaN classes (NaN when every class is NaN). With
    include_background=False class 0 is left out of the means only: background voxels still
    count as false positives and negatives of the other classes.
    """
    conf = confusion_matrix(pred, ref, num_classes).astype(np.float64)
    tp = np.diag(conf)
    ref_sizes, pred_sizes = conf.sum(axis=1), conf.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = tp / ref_sizes
        iou = tp / (ref_sizes + pred_sizes - tp)
    first = 0 if include_background else 1
    return {"mpa": _nanmean(accuracy[first:]), "miou": _nanmean(iou[first:])}
