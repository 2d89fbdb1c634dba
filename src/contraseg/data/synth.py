"""Building blocks shared by the synthetic phantoms (brain and parotid).

Smooth random fields, rotations, ellipsoids, masked partial-volume smoothing, Rician noise and
the NIfTI writer. Every function takes its randomness from the generator it is given, so a
phantom case is a pure function of its seed.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

INT16_MAX = 32767


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, int, int], nodes: int | tuple[int, int, int]
) -> np.ndarray:
    """Gaussian noise on a coarse grid of `nodes` per axis, smoothly upsampled; mean 0, sd 1.

    The upsampling is separable (one Gaussian-kernel matrix per axis), so it costs little more
    than writing the output (float32).
    """
    counts = (nodes,) * 3 if isinstance(nodes, int | np.integer) else tuple(nodes)
    coarse = rng.standard_normal(counts)
    mats = [_upsampling_matrix(n, k) for n, k in zip(shape, counts, strict=True)]
    field = np.einsum("abc,ia,jb,kc->ijk", coarse, *mats, optimize=True)
    field -= field.mean()
    field /= field.std() + 1e-12
    return field.astype(np.float32)


def _upsampling_matrix(n: int, nodes: int) -> np.ndarray:
    t = (np.arange(n) + 0.5) / n
    centres = np.linspace(0.0, 1.0, nodes)
    weights = np.exp(-0.5 * ((t[:, None] - centres[None, :]) * (nodes - 1)) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


def rotation(angles: np.ndarray) -> np.ndarray:
    """The rotation matrix Rz @ Ry @ Rx of three angles (radians) about x, y and z."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def ellipsoid(
    q: list[np.ndarray], centre: tuple[float, ...], radii: tuple[float, ...]
) -> np.ndarray:
    """Squared normalised radius of an axis-aligned ellipsoid (< 1 inside)."""
    return sum(((c - m) / r) ** 2 for c, m, r in zip(q, centre, radii, strict=True))


def random_grid_point(
    rng: np.random.Generator, grid: list[np.ndarray], candidates: np.ndarray, shape: tuple[int, ...]
) -> tuple[float, ...]:
    """The coordinates on the sparse `grid` of one of the flat voxel indices `candidates`, drawn
    uniformly (one `rng.integers` call)."""
    index = np.unravel_index(candidates[rng.integers(candidates.size)], shape)
    return tuple(float(g.ravel()[i]) for g, i in zip(grid, index, strict=True))


def connected_to(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The connected components of `mask` that touch `seed`."""
    components, _ = ndimage.label(mask)
    keep = np.unique(components[seed & mask])
    return np.isin(components, keep[keep > 0])


def smooth_inside(
    image: np.ndarray, mask: np.ndarray, sigma: float | tuple[float, ...]
) -> np.ndarray:
    """Gaussian smoothing that only averages voxels inside `mask` (no dark rim at the edge)."""
    weight = mask.astype(np.float32)
    num = ndimage.gaussian_filter(image * weight, sigma)
    den = ndimage.gaussian_filter(weight, sigma)
    return np.where(mask, num / np.maximum(den, 1e-6), 0).astype(np.float32)


def rician(rng: np.random.Generator, signal: np.ndarray, sd: float) -> np.ndarray:
    """The magnitude of `signal` plus complex Gaussian noise of `sd` per channel (float32)."""
    sd = np.float32(sd)
    real = signal + sd * rng.standard_normal(signal.shape, dtype=np.float32)
    imag = sd * rng.standard_normal(signal.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag)


def to_scanner_units(magnitude: np.ndarray, scale: float) -> np.ndarray:
    """Integer values in [1, 32767] as a scanner writes them (float32 holding integers)."""
    return np.clip(np.rint(magnitude * np.float32(scale)), 1, INT16_MAX)


def save_nifti(array: np.ndarray, dtype: type, affine: np.ndarray, path: Path) -> None:
    """Write `array` as `dtype` with `affine` in both the qform and sform (units mm)."""
    image = nib.Nifti1Image(array.astype(dtype), affine)
    image.header.set_data_dtype(dtype)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)
