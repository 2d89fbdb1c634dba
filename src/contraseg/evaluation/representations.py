"""Disentangled representations in two dimensions (DC-Seg's Figure 3).

A method that exposes `representations(images, present)` (DC-Seg) gives, for every case and
modality, an anatomical map and a modality code. Each is flattened and projected onto its first
two principal components (PCA by SVD of the centred rows; numpy is enough, no extra
dependency). Anatomical points are coloured by subject and shaped by modality: aligned anatomy
clusters by subject. Modality codes are coloured by modality: disentangled codes cluster by
modality whatever the subject.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from contraseg.utils.figures import save_png

MARKERS = "osD^vP*X"


@dataclass
class RepresentationSet:
    """Rows collected over cases: one per (case, present modality)."""

    modalities: tuple[str, ...]
    case_ids: list[str] = field(default_factory=list)
    modality_index: list[int] = field(default_factory=list)
    anatomical: list[np.ndarray] = field(default_factory=list)
    modality: list[np.ndarray] = field(default_factory=list)

    def add(self, case_id: str, reps: dict[str, torch.Tensor], present: torch.Tensor) -> None:
        """reps from `representations` for one case (batch of 1), present (M,) bool."""
        for j in torch.nonzero(present.cpu()).flatten().tolist():
            self.case_ids.append(case_id)
            self.modality_index.append(j)
            self.anatomical.append(reps["anatomical"][0, j].float().flatten().cpu().numpy())
            if "modality" in reps:
                self.modality.append(reps["modality"][0, j].float().cpu().numpy())

    def __len__(self) -> int:
        return len(self.case_ids)


def central_crop(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(C, *S) -> (C, *size): the centre of the image, zero-padded where it is smaller."""
    pads = []
    for extent, want in zip(reversed(image.shape[1:]), reversed(list(size)), strict=True):
        missing = max(0, want - extent)
        pads += [missing // 2, missing - missing // 2]
    image = torch.nn.functional.pad(image, pads)
    starts = [(extent - want) // 2 for extent, want in zip(image.shape[1:], size, strict=True)]
    return image[(slice(None), *(slice(s, s + w) for s, w in zip(starts, size, strict=True)))]


def pca_2d(rows: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, 2) coordinates on the first two principal components (zeros if n < 2)."""
    rows = np.asarray(rows, dtype=np.float64)
    centred = rows - rows.mean(0, keepdims=True)
    if len(rows) < 2 or not np.any(centred):
        return np.zeros((len(rows), 2))
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    coords = u[:, :2] * s[:2]
    return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))


def representation_figure(reps: RepresentationSet, path: str | Path, title: str = "") -> Path:
    """Anatomical PCA (colour = subject, marker = modality) and, when present, modality-code
    PCA (colour = modality)."""
    panels = 2 if reps.modality else 1
    fig = Figure(figsize=(5.2 * panels, 4.6))
    subjects = sorted(set(reps.case_ids))
    ax = fig.add_subplot(1, panels, 1)
    xy = pca_2d(np.stack(reps.anatomical))
    for k, (case, j) in enumerate(zip(reps.case_ids, reps.modality_index, strict=True)):
        subject = subjects.index(case)
        ax.scatter(*xy[k], color=colormaps["tab20"](subject % 20), s=40,
                   marker=MARKERS[j % len(MARKERS)],
                   label=reps.modalities[j] if subject == 0 else None)
    ax.set_title("anatomical (colour: subject, marker: modality)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    if reps.modality:
        ax = fig.add_subplot(1, panels, 2)
        xy = pca_2d(np.stack(reps.modality))
        for j, name in enumerate(reps.modalities):
            rows = [k for k, m in enumerate(reps.modality_index) if m == j]
            if rows:
                ax.scatter(xy[rows, 0], xy[rows, 1], color=colormaps["tab10"](j % 10), s=40,
                           label=name)
        ax.set_title("modality codes (colour: modality)", fontsize=9)
        ax.legend(fontsize=7, loc="best")
    for axis in fig.axes:
        axis.set_xlabel("PC 1")
        axis.set_ylabel("PC 2")
    fig.suptitle(title or f"PCA of {len(set(reps.case_ids))} cases", fontsize=10)
    return save_png(fig, path)
