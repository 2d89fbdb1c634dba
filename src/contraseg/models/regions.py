"""Region-based outputs: one sigmoid per nested evaluation region instead of one softmax per class.

nnU-Net's BraTS entry (Isensee et al., "nnU-Net for Brain Tumor Segmentation", BrainLes 2020) and
MONAI's BraTS tutorial train on the regions that are scored (WT ⊇ TC ⊇ ET) rather than on the
classes, so that the loss optimises the reported Dice directly. A `RegionHierarchy` names those
regions as sets of canonical classes, outermost first; it must be a chain (each region inside the
previous one) in which every foreground class has its own depth, so that the classes can be read
back: class c lies in exactly the first depth(c) regions.

Reading back is nnU-Net's rule: a voxel is in region r when its probability p_r > 0.5, checked
from the outermost region inwards, and takes the class of the deepest region reached. `class_scores`
turns region probabilities into per-class scores whose argmax is that rule, so the rest of the
engine (flip averaging, resampling, argmax, the ET rule) is unchanged:

    score(c) = min(p_1, ..., p_d, 1 - p_{d+1})   with d = depth(c) (no 1 - p term at the deepest)

(background: 1 - p_1). Exactly one score exceeds 0.5 unless some p_r is exactly 0.5. The scores
are not a distribution (they need not sum to 1); `predict --probabilities` writes them as they are.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from contraseg.errors import ConfigError

# BraTS regions on the canonical classes (1 necrosis, 2 edema, 3 enhancing): WT, TC, ET
BRAIN_REGION_CLASSES = ((1, 2, 3), (1, 3), (3,))


class RegionHierarchy:
    """Nested regions (outermost first) of canonical classes 1..num_classes-1."""

    def __init__(self, regions: Sequence[Sequence[int]], num_classes: int):
        self.regions = tuple(tuple(sorted({int(c) for c in r})) for r in regions)
        self.num_classes = int(num_classes)
        self._check()
        # depth of each class: how many regions contain it (background 0)
        self.depth = tuple(sum(c in r for r in self.regions) for c in range(self.num_classes))

    def _check(self) -> None:
        where = f"model.regions {[list(r) for r in self.regions]}"
        if not self.regions:
            raise ConfigError(f"{where}: give at least one region")
        foreground = set(range(1, self.num_classes))
        if set(self.regions[0]) != foreground:
            raise ConfigError(f"{where}: the first region must hold every foreground class "
                              f"{sorted(foreground)}")
        for outer, inner in itertools.pairwise(self.regions):
            if not set(inner) < set(outer) or not inner:
                raise ConfigError(f"{where}: each region must be a smaller, non-empty part of "
                                  f"the one before it")
        depths = [sum(c in r for r in self.regions) for c in sorted(foreground)]
        if len(set(depths)) != len(depths):
            raise ConfigError(f"{where}: two classes lie in the same regions, so a region map "
                              f"cannot tell them apart")

    def __len__(self) -> int:
        return len(self.regions)

    def target_masks(self, target: Tensor) -> Tensor:
        """(B, *S) canonical classes -> (B, R, *S) float region masks."""
        inside = torch.tensor([[c in r for c in range(self.num_classes)] for r in self.regions],
                              dtype=torch.float32, device=target.device)  # (R, C)
        return inside[:, target.long()].movedim(0, 1)

    def class_scores(self, probs: Tensor, dim: int = 1) -> Tensor:
        """Region probabilities (..., R, ...) on `dim` -> class scores (..., C, ...) whose
        argmax is the hierarchical threshold rule (module docstring)."""
        probs = probs.movedim(dim, 0)
        scores = []
        for c in range(self.num_classes):
            d = self.depth[c]
            parts = [probs[r] for r in range(d)]
            if d < len(self.regions):
                parts.append(1.0 - probs[d])
            scores.append(torch.stack(parts).amin(0))
        return torch.stack(scores).movedim(0, dim)
