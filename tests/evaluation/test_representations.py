"""PCA of disentangled representations (DC-Seg Figure 3): projection, crop, figure."""

from __future__ import annotations

import numpy as np
import torch

from contraseg.evaluation.representations import (
    RepresentationSet,
    central_crop,
    pca_2d,
    representation_figure,
)


def test_pca_finds_the_main_direction():
    t = np.linspace(-1, 1, 9)
    rows = np.stack([3 * t, 4 * t, np.zeros_like(t)], axis=1) + 7  # a line in 3D, offset
    coords = pca_2d(rows)
    assert coords.shape == (9, 2)
    assert np.allclose(np.abs(coords[:, 0]), 5 * np.abs(t))  # distances along the line kept
    assert np.allclose(coords[:, 1], 0, atol=1e-9)
    assert np.allclose(pca_2d(np.ones((3, 4))), 0)  # identical rows: no direction


def test_central_crop_crops_and_pads_around_the_centre():
    image = torch.arange(2 * 6 * 4 * 3, dtype=torch.float32).view(2, 6, 4, 3)
    crop = central_crop(image, (2, 6, 3))
    assert crop.shape == (2, 2, 6, 3)
    assert torch.equal(crop[:, :, 1:5], image[:, 2:4])  # rows 2-3 of 6, all 4 columns
    assert torch.all(crop[:, :, 0] == 0) and torch.all(crop[:, :, 5] == 0)


def test_figure_is_written(tmp_path):
    reps = RepresentationSet(("t1", "flair"))
    gen = torch.Generator().manual_seed(0)
    for case in ("a", "b", "c"):
        reps.add(case, {"anatomical": torch.randn(1, 2, 3, 2, 2, 2, generator=gen),
                        "modality": torch.randn(1, 2, 8, generator=gen)},
                 torch.tensor([True, case != "c"]))
    assert len(reps) == 5 and reps.modality_index == [0, 1, 0, 1, 0]
    path = representation_figure(reps, tmp_path / "figures" / "rep.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
