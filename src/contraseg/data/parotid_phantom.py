"""A synthetic head-and-neck MRI dataset with a parotid tumour (`data phantom --anatomy parotid`).

Swin-MoCo's setting: axial STIR, T1 and T2 slices through both parotid glands, thick slices,
one tumour class. Each subject is an axial slab (192 mm field of view, 64 mm of 16 slices of
4 mm by default) through the neck at the level of the parotid glands: skin fat, muscle, both
parotid glands (superficial and deep lobes, wrapped round the mandibular ramus), the rami
(cortex and fatty marrow), the retromandibular veins, external and internal carotid arteries
and internal jugular veins (flow voids), the oropharyngeal airway and the cervical spine
(vertebral body, spinal canal, cord). The anatomy differs per subject by a random scale,
rotation and shift, a smooth random deformation, and random gland sizes.

One parotid gland holds a tumour, of one of two kinds:
- benign (pleomorphic-adenoma-like, 70% of cases): round, gently lobulated, a sharp margin with
  a thin dark capsule, homogeneous, very bright on STIR and T2;
- malignant: irregular, spiculated and infiltrating beyond the gland, an ill-defined (blurred)
  margin, heterogeneous, less bright on T2.
Both are dark on T1 against the fatty gland.

Signals come from one table (`INTENSITY`): fat bright on T1 and T2 and suppressed on STIR, fluid
bright on T2 and STIR, bone and flowing blood dark everywhere, air black with noise. Each slice
is rendered from 4 sub-slices and averaged (the thick-slice partial volume), then given a
multiplicative bias field, Rician noise (outside the body too: no skull stripping in the neck)
and an arbitrary integer scale. Unlike the brain phantom, voxels are anisotropic and the
anatomy is built in millimetres, so every size keeps the same physical anatomy.

Array axis 0 runs right->left, axis 1 anterior->posterior, axis 2 inferior->superior (LPS); the
volume centre is at world (0, 0, 0).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from contraseg.data.parotid_anatomy import AIR, AIRWAY, BONE, TISSUE_NAMES, draw_anatomy
from contraseg.data.synth import (
    connected_to,
    ellipsoid,
    random_grid_point,
    rician,
    rotation,
    save_nifti,
    smooth_field,
    to_scanner_units,
)
from contraseg.errors import ConfigError, InputError
from contraseg.utils.fs import atomic_dir, atomic_path

MODALITIES = ("stir", "t1", "t2")
SEG_SUFFIX = "seg"
TUMOUR = 1  # label value
KINDS = ("benign", "malignant")
BENIGN_PROB = 0.7  # most parotid tumours are benign (pleomorphic adenoma, Warthin)

_BENIGN, _MALIGNANT, _CAPSULE = 10, 11, 12  # rendering-only classes

# Relative signal of each class per modality, before bias, noise and scaling. Fat: bright on T1
# and fast-spin-echo T2, nulled on STIR; the gland is fatty (between muscle and fat on T1).
INTENSITY: dict[str, dict[str, float]] = {
    "stir": {"air": 0.0, "fat": 0.06, "muscle": 0.22, "parotid": 0.38, "bone": 0.03,
             "marrow": 0.10, "vessel": 0.04, "airway": 0.0, "csf": 0.95, "cord": 0.40,
             "benign": 1.00, "malignant": 0.72, "capsule": 0.12},
    "t1": {"air": 0.0, "fat": 1.00, "muscle": 0.36, "parotid": 0.68, "bone": 0.03,
           "marrow": 0.85, "vessel": 0.05, "airway": 0.0, "csf": 0.18, "cord": 0.45,
           "benign": 0.30, "malignant": 0.33, "capsule": 0.25},
    "t2": {"air": 0.0, "fat": 0.78, "muscle": 0.24, "parotid": 0.55, "bone": 0.03,
           "marrow": 0.55, "vessel": 0.05, "airway": 0.0, "csf": 1.00, "cord": 0.42,
           "benign": 1.05, "malignant": 0.75, "capsule": 0.15},
}  # fmt: skip
_CLASS_KEYS = (*TISSUE_NAMES, "benign", "malignant", "capsule")
MODALITY_SCALE: dict[str, float] = {"stir": 700.0, "t1": 1500.0, "t2": 1200.0}
SCALE_JITTER = (0.85, 1.15)

FOV_MM = 192.0  # in-plane field of view
SLAB_MM = 64.0  # slab thickness (all slices)
DEFAULT_SIZE = 384  # in-plane voxels: 0.5 mm
DEFAULT_SLICES = 16  # 4 mm slices
SUBSLICES = 4  # sub-slices rendered per slice (thick-slice partial volume)
PV_SIGMA = 0.5  # in-plane partial-volume smoothing, voxels
NOISE_FRACTION = 0.03  # Rician sd as a fraction of the modality's brightest class
BIAS_SD = 0.12  # sd of the log bias field (surface coils)
TEXTURE_SD = 0.04
TUMOUR_TEXTURE_SD = {"benign": 0.05, "malignant": 0.15}
MALIGNANT_BLUR_MM = 1.5  # ill-defined margin: the tumour signal fades over about this
CAPSULE_MM = 1.0  # a benign tumour's fibrous capsule


@dataclass
class ParotidSubject:
    """One synthetic head-and-neck subject.

    `images` maps "stir", "t1", "t2" to float32 arrays holding integer values; `label` is 1 in
    the tumour; `tissue` is the healthy anatomy at each slice's centre (codes AIR ... CORD);
    `kind` is "benign" or "malignant"; `side` the gland ("right" or "left"); `affine` LPS in mm.
    """

    images: dict[str, np.ndarray]
    label: np.ndarray
    tissue: np.ndarray
    kind: str
    side: str
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.abs(np.diag(self.affine)[:3]))  # type: ignore[return-value]


def case_id(index: int) -> str:
    """The case name of parotid phantom case `index` ("Parotid-00003")."""
    return f"Parotid-{index:05d}"


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of case `index` (independent of the brain phantom's case `index`)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), 1]))


def normalise_size(size: int | tuple[int, int, int]) -> tuple[int, int, int]:
    """An int (in-plane edge; 16 slices) or 3 ints -> (nx, ny, nz); in-plane under 16 or fewer
    than 4 slices are refused."""
    dims = (size, size, DEFAULT_SLICES) if isinstance(size, int | np.integer) else tuple(size)
    valid = len(dims) == 3 and all(int(d) == d for d in dims)
    if not valid or min(dims[:2]) < 16 or dims[2] < 4:
        raise ConfigError("parotid phantom size must be an int (in-plane voxels, at least 16) or "
                          f"3 ints (x, y, slices; slices at least 4) (got {size})")
    return tuple(int(d) for d in dims)  # type: ignore[return-value]


def spacing_of(shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """Voxel size in mm: the fixed field of view over the grid."""
    return (FOV_MM / shape[0], FOV_MM / shape[1], SLAB_MM / shape[2])


def _subslice_steps(shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """Point spacing in mm of the sub-slice grid (in-plane voxels, a quarter slice apart)."""
    spacing = spacing_of(shape)
    return (spacing[0], spacing[1], spacing[2] / SUBSLICES)


def parotid_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """LPS affine of `shape` (`spacing_of`) with the volume centre at world (0, 0, 0)."""
    spacing = np.array(spacing_of(shape))
    affine = np.diag([*(spacing * [-1.0, -1.0, 1.0]), 1.0])
    centre = (np.asarray(shape, dtype=float) - 1) / 2
    affine[:3, 3] = centre * spacing * np.array([1.0, 1.0, -1.0])
    return affine


def make_subject(rng: np.random.Generator, size: int | tuple[int, int, int]) -> ParotidSubject:
    """Generate one subject; the same generator state and size give identical arrays."""
    shape = normalise_size(size)
    fine = (shape[0], shape[1], shape[2] * SUBSLICES)
    grid = _grid_mm(shape)
    anatomy = _warp(rng, grid, fine)
    tissue, glands = draw_anatomy(rng, anatomy, fine)
    side = "right" if rng.uniform() < 0.5 else "left"
    kind = KINDS[0] if rng.uniform() < BENIGN_PROB else KINDS[1]
    tumour = _tumour(rng, grid, tissue, glands[side], kind, fine)
    classes = _with_tumour(tissue, tumour, kind, shape)
    texture = 1 + TEXTURE_SD * smooth_field(rng, fine, (24, 24, 8))
    tumour_texture = 1 + TUMOUR_TEXTURE_SD[kind] * smooth_field(rng, fine, (40, 40, 12))
    weight = _tumour_weight(tumour, kind, shape)
    images = {}
    for modality in MODALITIES:
        bias = np.exp(BIAS_SD * smooth_field(rng, shape, (4, 4, 3)))
        scale = MODALITY_SCALE[modality] * rng.uniform(*SCALE_JITTER)
        images[modality] = _render(rng, classes, tissue, weight, modality, texture,
                                   tumour_texture, bias, scale)
    label = (_slice_mean(tumour.astype(np.float32)) >= 0.5).astype(np.uint8)
    centre_tissue = tissue[..., SUBSLICES // 2 :: SUBSLICES]
    return ParotidSubject(images, label, centre_tissue.copy(), kind, side, parotid_affine(shape))


# --- writing -----------------------------------------------------------------------------------

def write_parotid_phantom(
    out_dir: str | Path,
    cases: int = 8,
    size: int | tuple[int, int, int] = DEFAULT_SIZE,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write `cases` subjects as `<case>/<case>-{stir,t1,t2,seg}.nii.gz` and a `contraseg.json`
    manifest (modalities stir, t1, t2; class 1 `tumour`, region TUMOUR) under `out_dir`.

    Case folders are written atomically, then the manifest (which names the tumour kind and side
    of each case). Existing case folders or manifest are an error unless `overwrite`.
    """
    from contraseg.data.layouts import MANIFEST_NAME

    if cases < 0:
        raise ConfigError(f"number of phantom cases must be >= 0 (got {cases})")
    shape = normalise_size(size)
    out_dir = Path(out_dir)
    folders = [out_dir / case_id(i) for i in range(cases)]
    existing = [p for p in [*folders, out_dir / MANIFEST_NAME] if p.exists()]
    if existing and not overwrite:
        raise InputError(existing[0], "already exists; pass --overwrite (overwrite=True) to "
                                      "replace the phantom")
    tumours = {}
    for i, folder in enumerate(folders):
        subject = make_subject(case_rng(seed, i), shape)
        write_case(subject, folder, overwrite=overwrite)
        tumours[folder.name] = {"kind": subject.kind, "side": subject.side,
                                "voxels": int(subject.label.sum())}
        if progress is not None:
            progress(i)
    manifest = manifest_dict([f.name for f in folders], shape, seed, tumours)
    with atomic_path(out_dir / MANIFEST_NAME) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    return folders


def manifest_dict(ids: list[str], shape: tuple[int, int, int], seed: int,
                  tumours: dict[str, dict]) -> dict:
    """The `contraseg.json` of a parotid phantom (see `layouts.read_manifest`)."""
    return {
        "modalities": list(MODALITIES),
        "labels": {"name": "parotid", "classes": {str(TUMOUR): "tumour"},
                   "regions": {"TUMOUR": [TUMOUR]}},
        "files": {"images": {m: f"{{case}}/{{case}}-{m}.nii.gz" for m in MODALITIES},
                  "label": f"{{case}}/{{case}}-{SEG_SUFFIX}.nii.gz"},
        "cases": ids,
        "phantom": {"anatomy": "parotid", "seed": seed, "shape": list(shape),
                    "spacing_mm": list(spacing_of(shape)), "tumours": tumours},
    }


def write_case(subject: ParotidSubject, folder: str | Path, overwrite: bool = False) -> Path:
    """Write one subject as `folder/<name>-stir.nii.gz` ... `<name>-seg.nii.gz`, atomically."""
    folder = Path(folder)
    name = folder.name
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        for modality, image in subject.images.items():
            save_nifti(image, np.int16, subject.affine, tmp / f"{name}-{modality}.nii.gz")
        save_nifti(subject.label, np.uint8, subject.affine, tmp / f"{name}-{SEG_SUFFIX}.nii.gz")
    return folder


# --- anatomy -----------------------------------------------------------------------------------

def _grid_mm(shape: tuple[int, int, int]) -> list[np.ndarray]:
    """Sub-slice centres in mm (x right->left, y anterior->posterior, z upwards), sparse."""
    counts = (shape[0], shape[1], shape[2] * SUBSLICES)
    steps = _subslice_steps(shape)
    axes = [((np.arange(n) + 0.5) * d - n * d / 2).astype(np.float32)
            for n, d in zip(counts, steps, strict=True)]
    return list(np.meshgrid(*axes, indexing="ij", sparse=True))


def _warp(rng: np.random.Generator, grid: list[np.ndarray], fine: tuple[int, int, int]
          ) -> list[np.ndarray]:
    """Anatomical coordinates (mm) of each sub-slice point: inverse of a random scale, rotation
    (mostly about the vertical axis) and shift, plus a smooth deformation of about 2.5 mm."""
    angles = np.deg2rad(rng.uniform([-2, -2, -7], [2, 2, 7]))
    scale = rng.uniform([0.9, 0.9, 0.95], [1.08, 1.08, 1.05])
    shift = rng.uniform([-5, -5, -4], [5, 5, 4])
    inverse = (rotation(angles).T / scale[:, None]).astype(np.float32)
    centred = [g - np.float32(s) for g, s in zip(grid, shift, strict=True)]
    warped = []
    for row in inverse:
        coord = row[0] * centred[0] + row[1] * centred[1] + row[2] * centred[2]
        warped.append(coord + np.float32(2.5) * smooth_field(rng, fine, (6, 6, 3)))
    return warped


def _tumour(rng: np.random.Generator, grid: list[np.ndarray], tissue: np.ndarray,
            gland: np.ndarray, kind: str, fine: tuple[int, int, int]) -> np.ndarray:
    """The tumour mask on the sub-slice grid, centred at a random voxel of `gland`.

    Benign: radius 6-14 mm, boundary modulated by +-10% at a 12 mm scale (lobulated, smooth).
    Malignant: radius 7-17 mm, +-45% at a 5 mm scale (spiculated), free to cross the gland.
    """
    benign = kind == "benign"
    radius = rng.uniform(6, 14) if benign else rng.uniform(7, 17)
    stretch = rng.uniform(0.8, 1.25, 3)
    centre = _voxel_of(rng, grid, gland)
    nodes, amplitude = ((16, 16, 6), 0.10) if benign else ((40, 40, 14), 0.45)
    boundary = radius * (1 + amplitude * np.tanh(smooth_field(rng, fine, nodes)))
    dist = np.sqrt(ellipsoid(grid, centre, tuple(stretch)))
    tumour = (dist < boundary) & ~np.isin(tissue, [AIR, AIRWAY, BONE])
    return connected_to(tumour, tumour & (dist < 0.5 * radius))


def _voxel_of(rng: np.random.Generator, grid: list[np.ndarray], mask: np.ndarray
              ) -> tuple[float, float, float]:
    """The mm coordinates of a random voxel of `mask` (the volume centre when it is empty)."""
    candidates = np.flatnonzero(mask)
    if not candidates.size:
        return (0.0, 0.0, 0.0)
    return random_grid_point(rng, grid, candidates, mask.shape)  # type: ignore[return-value]


def _with_tumour(tissue: np.ndarray, tumour: np.ndarray, kind: str,
                 shape: tuple[int, int, int]) -> np.ndarray:
    """Rendering classes: the tissue, the tumour, and a benign tumour's capsule round it."""
    classes = tissue.copy()
    classes[tumour] = _BENIGN if kind == "benign" else _MALIGNANT
    if kind == "benign":
        grown = ndimage.distance_transform_edt(~tumour, sampling=_subslice_steps(shape))
        grown = grown <= CAPSULE_MM
        classes[grown & ~tumour & (tissue != AIR)] = _CAPSULE
    return classes


def _tumour_weight(tumour: np.ndarray, kind: str, shape: tuple[int, int, int]) -> np.ndarray:
    """How much of the tumour's signal each point shows: 1 inside a benign tumour (sharp), a
    blurred indicator for a malignant one (ill-defined margin)."""
    weight = tumour.astype(np.float32)
    if kind == "malignant":
        sigma = [MALIGNANT_BLUR_MM / d for d in _subslice_steps(shape)]
        weight = ndimage.gaussian_filter(weight, sigma)
    return weight


# --- rendering ---------------------------------------------------------------------------------

def _render(rng: np.random.Generator, classes: np.ndarray, tissue: np.ndarray,
            weight: np.ndarray, modality: str, texture: np.ndarray, tumour_texture: np.ndarray,
            bias: np.ndarray, scale: float) -> np.ndarray:
    """One modality: table lookup, tumour blend, in-plane partial volume, slice averaging, bias,
    Rician noise, integer scale (float32)."""
    table = INTENSITY[modality]
    lut = np.array([table[k] for k in _CLASS_KEYS], dtype=np.float32)
    malignant = classes == _MALIGNANT
    signal = lut[np.where(malignant, tissue, classes)] * texture  # the tissue under a malignancy
    benign = classes == _BENIGN
    signal[benign] *= tumour_texture[benign]
    if malignant.any():  # the malignant signal fades into the tissue round it
        signal += weight * (lut[_MALIGNANT] * texture * tumour_texture - signal)
    signal = ndimage.gaussian_filter(signal, (PV_SIGMA, PV_SIGMA, 0))
    signal = _slice_mean(signal) * bias
    sd = NOISE_FRACTION * max(table.values())
    return to_scanner_units(rician(rng, signal, sd), scale).astype(np.float32)


def _slice_mean(fine: np.ndarray) -> np.ndarray:
    """Average the sub-slices of each slice (float32)."""
    x, y, z = fine.shape
    return fine.reshape(x, y, z // SUBSLICES, SUBSLICES).mean(axis=3, dtype=np.float32)
