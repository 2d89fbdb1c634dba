"""The parotid phantom's anatomy: the tissue classes of an axial neck slab (fat, muscle, the
parotid glands, mandibular ramus, vessels, spine, airway) on a warped grid."""

from __future__ import annotations

import numpy as np

from contraseg.data.synth import (
    ellipsoid,
    smooth_field,
)

# Tissue codes of `ParotidSubject.tissue` (the healthy anatomy; the tumour does not overwrite it).
AIR, FAT, MUSCLE, PAROTID, BONE, MARROW, VESSEL, AIRWAY, CSF, CORD = range(10)
TISSUE_NAMES = ("air", "fat", "muscle", "parotid", "bone", "marrow", "vessel", "airway", "csf",
                "cord")  # fmt: skip


def draw_anatomy(rng: np.random.Generator, q: list[np.ndarray], fine: tuple[int, int, int]
             ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Tissue codes on the sub-slice grid, and each side's parotid mask (for the tumour)."""
    x, y, z = q
    half_x = 68 * (1 + 0.08 * z / 32)  # the neck widens towards the mastoids
    body = ellipsoid([x / half_x, y], (0.0, 6.0), (1.0, 60.0)) < 1
    fat_mm = rng.uniform(4, 9)
    inner = ellipsoid([x / (half_x - fat_mm), y], (0.0, 6.0), (1.0, 60.0 - fat_mm)) < 1
    tissue = np.full(fine, AIR, dtype=np.uint8)
    tissue[body] = FAT
    tissue[inner] = MUSCLE
    glands = {}
    lobulation = smooth_field(rng, fine, (16, 16, 6))
    for side, s in (("right", -1.0), ("left", 1.0)):
        tissue[ellipsoid([x, y], (s * 20, -4), (6, 11)) < 1] = FAT  # parapharyngeal fat
        gland = _gland(rng, q, s, lobulation) & body
        tissue[gland] = PAROTID
        glands[side] = gland
    for s in (-1.0, 1.0):
        _ramus(q, s, tissue)
        _vessels(rng, q, s, tissue)
    tissue[ellipsoid([x, y - 0.1 * z], (0.0, -6.0), (12.0, 7.0)) < 1] = AIRWAY
    _spine(q, tissue)
    for side in glands:
        glands[side] &= tissue == PAROTID
    return tissue, glands


def _gland(rng: np.random.Generator, q: list[np.ndarray], s: float, lobulation: np.ndarray
           ) -> np.ndarray:
    """One parotid: a superficial lobe lateral to and behind the ramus, a deep lobe medially."""
    size = rng.uniform(0.85, 1.15)
    zc = rng.uniform(-4, 4)
    superficial = ellipsoid(q, (s * 47, 6.0, zc), (13 * size, 19 * size, 24 * size))
    deep = ellipsoid(q, (s * 33, 14.0, zc - 5), (8 * size, 8 * size, 14 * size))
    limit = 1 + 0.25 * np.tanh(lobulation)
    return (superficial < limit) | (deep < limit)


def _ramus(q: list[np.ndarray], s: float, tissue: np.ndarray) -> None:
    """The mandibular ramus: a plate of cortex round fatty marrow, tilting back as it rises."""
    x, y, z = q
    y_ramus = y - 0.2 * z
    tissue[ellipsoid([x, y_ramus], (s * 44, -20.0), (4.5, 12.0)) < 1] = BONE
    tissue[ellipsoid([x, y_ramus], (s * 44, -20.0), (3.0, 10.5)) < 1] = MARROW


def _vessels(rng: np.random.Generator, q: list[np.ndarray], s: float, tissue: np.ndarray) -> None:
    """Retromandibular vein and external carotid (in the gland), internal carotid and jugular."""
    x, y, _ = q
    for cx, cy, r in ((45, 4, 2.5), (41, 8, 1.8), (26, 12, 3.0), (30, 20, 4.5)):
        dx, dy = rng.uniform(-2, 2, 2)
        tissue[ellipsoid([x, y], (s * (cx + dx), cy + dy), (r, r)) < 1] = VESSEL


def _spine(q: list[np.ndarray], tissue: np.ndarray) -> None:
    """A cervical vertebral body (cortex, marrow), the spinal canal (CSF) and the cord."""
    x, y, _ = q
    tissue[ellipsoid([x, y], (0.0, 24.0), (12.0, 10.0)) < 1] = BONE
    tissue[ellipsoid([x, y], (0.0, 24.0), (10.5, 8.5)) < 1] = MARROW
    tissue[ellipsoid([x, y], (0.0, 42.0), (9.0, 8.0)) < 1] = CSF
    tissue[ellipsoid([x, y], (0.0, 42.0), (5.0, 4.0)) < 1] = CORD


# --- tumour ------------------------------------------------------------------------------------
