"""Overlay pictures: one display convention whatever the file's orientation, the brain's
grey levels, reference and predictions in panels of their own."""

from __future__ import annotations

import numpy as np
import pytest

from contraseg.evaluation.overlays import (
    brain_window,
    case_overlay,
    radiological,
    to_ras,
    tumour_slice,
)

SHAPE = (10, 12, 5)
# the same physical space stored two ways: LPS (BraTS, TCGA: i runs to the patient's left,
# j to posterior) and RAS; world x > 0 is the patient's right, y > 0 anterior
LPS = np.array([[-1.0, 0, 0, 4.5], [0, -1.0, 0, 5.5], [0, 0, 1.0, 0], [0, 0, 0, 1]])
RAS = np.array([[1.0, 0, 0, -4.5], [0, 1.0, 0, -5.5], [0, 0, 1.0, 0], [0, 0, 0, 1]])


def right_anterior_marker(affine: np.ndarray) -> np.ndarray:
    """A volume with one voxel at world (3.5, 3.5, 2): right of the midline, anterior."""
    volume = np.zeros(SHAPE)
    i, j, k = np.rint(np.linalg.inv(affine) @ [3.5, 3.5, 2.0, 1.0])[:3].astype(int)
    volume[i, j, k] = 1
    return volume


@pytest.mark.parametrize("affine", [LPS, RAS], ids=["LPS", "RAS"])
def test_right_anterior_is_drawn_top_left_whatever_the_storage(affine):
    """Radiological convention: the patient's right on the picture's left, anterior up."""
    picture = radiological(to_ras(right_anterior_marker(affine), affine)[:, :, 2])
    assert picture.shape == (12, 10)  # rows: anterior -> posterior; columns: right -> left
    assert [tuple(p) for p in np.argwhere(picture)] == [(2, 1)]


def test_brain_window_ignores_the_background():
    image = np.zeros((20, 20))
    image[5:15, 5:15] = np.linspace(100, 200, 100).reshape(10, 10)
    grey = brain_window(image)
    assert grey[0, 0] == 0 and grey[5, 5] == 0 and grey[14, 14] == 1
    assert 0.45 < grey[10, 10] < 0.6  # mid-brain grey, not washed out by the zeros
    assert brain_window(np.zeros((4, 4))).max() == 0


def test_tumour_slice_is_the_largest_cross_section():
    ref = np.zeros((8, 8, 10), np.uint8)
    ref[2:4, 2:5, 3], ref[1:4, 1:4, 6], ref[0, 0, 8] = 1, 2, 3
    assert tumour_slice(ref) == 6 and tumour_slice(np.zeros((8, 8, 10))) == 5


def test_case_overlay_draws_every_panel(tmp_path):
    rng = np.random.default_rng(0)
    ref = np.zeros(SHAPE, np.uint8)
    ref[3:7, 3:8, 2] = 2
    images = {m: rng.normal(size=SHAPE) for m in ("t1", "t1c", "t2", "flair")}
    path = case_overlay(images, LPS, ref, {"all four": ref, "flair": np.roll(ref, 1, 0)},
                        ("background", "necrosis", "edema", "enhancing"), tmp_path / "c.png",
                        "c1")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1.3 * height > 500  # 4 columns (the modalities) over 2 rows
    with pytest.raises(ValueError, match="one shape"):
        case_overlay(images, LPS, ref[:-1], {}, ("background", "tumour"), tmp_path / "x.png")
