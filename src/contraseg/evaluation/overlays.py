"""Overlay pictures of one case: the slice with the most tumour, the way a radiologist reads it.

Display convention: radiological, as PACS viewers and ITK-SNAP show axial slices: the patient's
right on the picture's LEFT, anterior at the TOP; every panel carries A / P / R / L markers.
Volumes are first reoriented from their affine to RAS (nibabel's `io_orientation`), so LPS
files (BraTS, TCGA, the phantom) and RAS files look the same. Grey levels are windowed on the
1st-99th percentile of the brain (the non-zero voxels of a skull-stripped scan), not of the
whole slice, whose background would wash the brain out.

Layout: the first row shows each modality; the second the reference and each prediction side
by side, as filled classes over the tumour's best-contrast modality (FLAIR when there is one),
so the two can never be mistaken for one another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from contraseg.utils.figures import save_png

# background, then brain-tumour classes (BraTS colours: necrosis red, edema green, ET yellow)
CLASS_COLOURS = ("#00000000", "#e41a1c", "#4daf4a", "#ffd92f", "#377eb8", "#984ea3", "#ff7f00")
BACKDROP_ORDER = ("flair", "t2", "t1c", "t1")  # the modality the classes are drawn over


def to_ras(volume: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The array reoriented so its axes run towards Right, Anterior, Superior."""
    return nib.orientations.apply_orientation(np.asarray(volume),
                                              nib.orientations.io_orientation(affine))


def radiological(slice_ras: np.ndarray) -> np.ndarray:
    """An axial RAS slice [x, y] as picture rows and columns: row 0 anterior, column 0 the
    patient's right."""
    return np.asarray(slice_ras)[::-1, ::-1].T


def tumour_slice(reference_ras: np.ndarray) -> int:
    """The axial index with the most tumour voxels (the middle slice when there is none)."""
    counts = (np.asarray(reference_ras) != 0).sum(axis=(0, 1))
    return int(np.argmax(counts)) if counts.any() else reference_ras.shape[2] // 2


def brain_window(image: np.ndarray) -> np.ndarray:
    """Grey levels in [0, 1] from the 1st-99th percentile of the non-zero (brain) voxels."""
    image = np.asarray(image, dtype=np.float64)
    brain = image[image != 0]
    if brain.size < 10:
        brain = image.ravel()
    low, high = np.percentile(brain, (1, 99))
    return np.clip((image - low) / (high - low), 0, 1) if high > low else np.zeros_like(image)


def _markers(ax) -> None:
    style = {"color": "white", "fontsize": 8, "fontweight": "bold",
             "transform": ax.transAxes}
    ax.text(0.5, 0.98, "A", ha="center", va="top", **style)
    ax.text(0.5, 0.02, "P", ha="center", va="bottom", **style)
    ax.text(0.02, 0.5, "R", ha="left", va="center", **style)
    ax.text(0.98, 0.5, "L", ha="right", va="center", **style)


def _panel(ax, grey: np.ndarray, title: str, labels: np.ndarray | None = None,
           classes: int = 0) -> None:
    ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if labels is not None:
        colours = ListedColormap(CLASS_COLOURS[:classes])
        ax.imshow(np.ma.masked_equal(labels, 0), cmap=colours, vmin=0, vmax=classes - 1,
                  alpha=0.55, interpolation="nearest")
    _markers(ax)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def case_overlay(images: Mapping[str, np.ndarray], affine: np.ndarray, reference: np.ndarray,
                 predictions: Mapping[str, np.ndarray], class_names: Sequence[str],
                 path: str | Path, title: str = "") -> Path:
    """Draw one case: 3D `images` by modality, the canonical `reference` and `predictions`
    (name -> canonical labels) on the grid of `affine`; returns `path` (PNG)."""
    shapes = {np.shape(v) for v in (*images.values(), reference, *predictions.values())}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or not images:
        raise ValueError(f"overlay needs 3D images and label maps of one shape, got {shapes}")
    if len(class_names) > len(CLASS_COLOURS):
        raise ValueError(f"at most {len(CLASS_COLOURS)} classes can be drawn")
    ref = to_ras(reference, affine)
    index = tumour_slice(ref)

    def axial(volume: np.ndarray) -> np.ndarray:
        return radiological(to_ras(volume, affine)[:, :, index])

    greys = {name: brain_window(axial(image)) for name, image in images.items()}
    backdrop = next((m for m in BACKDROP_ORDER if m in greys), next(iter(greys)))
    labelled = {"reference": axial(reference)} | {
        f"prediction: {name}": axial(pred) for name, pred in predictions.items()}
    columns = max(len(greys), len(labelled))
    fig = Figure(figsize=(2.6 * columns, 5.6))
    for k, (name, grey) in enumerate(greys.items()):
        _panel(fig.add_subplot(2, columns, k + 1), grey, name)
    for k, (name, labels) in enumerate(labelled.items()):
        _panel(fig.add_subplot(2, columns, columns + k + 1), greys[backdrop], name, labels,
               len(class_names))
    patches = [Patch(color=CLASS_COLOURS[c], label=class_names[c])
               for c in range(1, len(class_names))]
    fig.legend(handles=patches, loc="lower center", ncol=len(patches), fontsize=8,
               frameon=False)
    fig.suptitle(f"{title}{', ' if title else ''}axial slice {index} (RAS), radiological: "
                 f"patient's right on the left; classes over {backdrop}", fontsize=9)
    return save_png(fig, path)
