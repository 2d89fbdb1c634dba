"""A synthetic multimodal brain-MRI dataset with glioma-like tumours (the default dataset).

Each subject is an ellipsoidal, skull-stripped brain (CSF rim and sulci, grey matter, white
matter, deep grey nuclei, paired lateral ventricles) whose anatomy is made different per subject by
a random global scale/rotation/shift and a smooth random deformation of the coordinate grid. A
tumour (necrotic core, enhancing rim, edema spreading mostly through white matter) sits in one
hemisphere. Four modalities are rendered from one intensity table (`INTENSITY`) with partial-volume
smoothing, a multiplicative bias field, Rician noise and an arbitrary integer scale, like BraTS.

Coordinates are normalised per axis to [-1, 1] over the volume; array axis 0 runs right->left,
axis 1 anterior->posterior, axis 2 inferior->superior (LPS, as BraTS stores it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contraseg.data.synth import (
    INT16_MAX,  # noqa: F401 - part of this module's API (the largest value written)
    connected_to,
    ellipsoid,
    random_grid_point,
    rician,
    rotation,
    save_nifti,
    smooth_field,
    smooth_inside,
    to_scanner_units,
)
from contraseg.errors import ConfigError, InputError
from contraseg.utils.fs import atomic_dir

# Tissue codes of `PhantomSubject.tissue` (the healthy anatomy; the tumour does not overwrite it).
BACKGROUND, CSF, GM, WM, VENTRICLE = 0, 1, 2, 3, 4
TISSUE_NAMES: dict[int, str] = {
    BACKGROUND: "background",
    CSF: "csf",
    GM: "grey matter",
    WM: "white matter",
    VENTRICLE: "ventricle",
}
# Tumour labels, BraTS 2023 convention.
NECROSIS, EDEMA, ENHANCING = 1, 2, 3

MODALITIES = ("t1", "t1c", "t2", "flair")
# BraTS 2023 file suffix of each modality.
FILE_SUFFIX: dict[str, str] = {"t1": "t1n", "t1c": "t1c", "t2": "t2w", "flair": "t2f"}
NORMAL_SUFFIX = "normal-t1n"
SEG_SUFFIX = "seg"

# Relative signal of each class per modality, before bias, noise and scaling.
INTENSITY: dict[str, dict[str, float]] = {
    "t1": {"csf": 0.25, "gm": 0.55, "wm": 0.80, "ventricle": 0.24,
           "necrosis": 0.18, "edema": 0.45, "enhancing": 0.52},
    "t1c": {"csf": 0.26, "gm": 0.56, "wm": 0.80, "ventricle": 0.25,
            "necrosis": 0.20, "edema": 0.48, "enhancing": 1.40},
    "t2": {"csf": 1.00, "gm": 0.56, "wm": 0.40, "ventricle": 1.00,
           "necrosis": 0.76, "edema": 0.72, "enhancing": 0.60},
    "flair": {"csf": 0.12, "gm": 0.60, "wm": 0.46, "ventricle": 0.10,
              "necrosis": 0.50, "edema": 0.95, "enhancing": 0.72},
}  # fmt: skip
# Integer scale of each modality (times a per-subject factor in SCALE_JITTER), like scanner units.
MODALITY_SCALE: dict[str, float] = {"t1": 1100.0, "t1c": 1400.0, "t2": 2600.0, "flair": 900.0}
SCALE_JITTER = (0.85, 1.15)

PV_SIGMA = 0.5  # voxels of partial-volume smoothing
NOISE_FRACTION = 0.03  # Rician noise sd as a fraction of the modality's white-matter signal
BIAS_SD = 0.10  # sd of the log bias field
TEXTURE_SD = 0.03  # healthy-tissue texture (relative)
TUMOUR_TEXTURE_SD = 0.10  # tumour heterogeneity (relative)

# Class order of the lookup tables: tissue codes, then 4 + tumour label.
_CLASS_KEYS = ("", "csf", "gm", "wm", "ventricle", "necrosis", "edema", "enhancing")
_BRAIN_RADII = np.array([0.72, 0.84, 0.72])  # ellipsoid half-axes (normalised units)


@dataclass
class PhantomSubject:
    """One synthetic subject.

    `images` maps "t1", "t1c", "t2", "flair" to float32 arrays holding integer values (0 outside
    the brain); `normal_t1` is the same brain without the tumour; `label` uses BraTS 2023 values
    (1 necrosis, 2 edema, 3 enhancing); `tissue` is the healthy anatomy coded with BACKGROUND, CSF,
    GM, WM and VENTRICLE; `affine` is 1 mm isotropic, LPS.
    """

    images: dict[str, np.ndarray]
    normal_t1: np.ndarray
    label: np.ndarray
    tissue: np.ndarray
    affine: np.ndarray

    @property
    def brain_mask(self) -> np.ndarray:
        """Voxels inside the brain (where every modality is non-zero)."""
        return self.tissue != BACKGROUND


def case_id(index: int) -> str:
    """The case name of phantom case `index` ("Phantom-00003")."""
    return f"Phantom-{index:05d}"


def case_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of case `index`, so each case is the same whatever the number generated."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def phantom_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """1 mm isotropic LPS affine (BraTS-like) with the volume centre at world (0, 0, 0)."""
    centre = (np.asarray(shape, dtype=float) - 1) / 2
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = centre * np.array([1.0, 1.0, -1.0])
    return affine


def normalise_size(size: int | tuple[int, int, int]) -> tuple[int, int, int]:
    """An int (cube) or 3 ints -> a 3-tuple; sizes under 16 voxels are refused."""
    dims = (size,) * 3 if isinstance(size, int | np.integer) else tuple(size)
    if len(dims) != 3 or any(int(d) != d or d < 16 for d in dims):
        raise ConfigError(f"phantom size must be an int or 3 ints, each at least 16 (got {size})")
    return tuple(int(d) for d in dims)  # type: ignore[return-value]


def make_subject(rng: np.random.Generator, size: tuple[int, int, int]) -> PhantomSubject:
    """Generate one subject; the same generator state and size give identical arrays."""
    shape = normalise_size(size)
    grid = _grid(shape)
    warped = _warp(rng, grid, shape)
    tissue, rho = _anatomy(rng, warped, shape)
    label = _tumour(rng, grid, tissue, rho, warped[0])
    texture = 1 + TEXTURE_SD * smooth_field(rng, shape, 14)
    tumour_texture = 1 + TUMOUR_TEXTURE_SD * smooth_field(rng, shape, 16)
    bias = {m: np.exp(BIAS_SD * smooth_field(rng, shape, 4)) for m in MODALITIES}
    scale = {m: MODALITY_SCALE[m] * rng.uniform(*SCALE_JITTER) for m in MODALITIES}

    brain = tissue != BACKGROUND
    classes = np.where(label > 0, label + 4, tissue).astype(np.uint8)
    sick_texture = np.where(label > 0, texture * tumour_texture, texture)
    images = {
        m: _render(rng, classes, m, sick_texture, bias[m], scale[m], brain) for m in MODALITIES
    }
    normal_t1 = _render(rng, tissue, "t1", texture, bias["t1"], scale["t1"], brain)
    return PhantomSubject(images, normal_t1, label, tissue.astype(np.uint8), phantom_affine(shape))


def write_phantom(
    out_dir: str | Path,
    cases: int = 8,
    size: int | tuple[int, int, int] = 96,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[Path]:
    """Write `cases` phantom cases in the BraTS 2023 layout under `out_dir`; return their folders.

    Each case folder is built under a temporary name and renamed when complete. Existing case
    folders are an error unless `overwrite`; `progress(i)` is called after case i is written.
    """
    if cases < 0:
        raise ConfigError(f"number of phantom cases must be >= 0 (got {cases})")
    shape = normalise_size(size)
    out_dir = Path(out_dir)
    folders = [out_dir / case_id(i) for i in range(cases)]
    existing = [f for f in folders if f.exists()]
    if existing and not overwrite:
        raise InputError(
            existing[0],
            f"already exists ({len(existing)} of the {cases} case folders do); "
            "pass --overwrite (overwrite=True) to replace them",
        )
    for i, folder in enumerate(folders):
        write_case(make_subject(case_rng(seed, i), shape), folder, overwrite=overwrite)
        if progress is not None:
            progress(i)
    return folders


def write_case(subject: PhantomSubject, folder: str | Path, overwrite: bool = False) -> Path:
    """Write one subject as `folder/<name>-t1n.nii.gz` ... (BraTS 2023 names), atomically."""
    folder = Path(folder)
    name = folder.name
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        affine = subject.affine
        for modality, image in subject.images.items():
            save_nifti(image, np.int16, affine, tmp / f"{name}-{FILE_SUFFIX[modality]}.nii.gz")
        save_nifti(subject.normal_t1, np.int16, affine, tmp / f"{name}-{NORMAL_SUFFIX}.nii.gz")
        save_nifti(subject.label, np.uint8, affine, tmp / f"{name}-{SEG_SUFFIX}.nii.gz")
    return folder


def _grid(shape: tuple[int, int, int]) -> list[np.ndarray]:
    """Voxel-centre coordinates normalised to [-1, 1] per axis, as 3 broadcastable arrays."""
    axes = [((np.arange(n) + 0.5) / n * 2 - 1).astype(np.float32) for n in shape]
    return list(np.meshgrid(*axes, indexing="ij", sparse=True))


def _warp(
    rng: np.random.Generator, grid: list[np.ndarray], shape: tuple[int, int, int]
) -> list[np.ndarray]:
    """Anatomical coordinates of each voxel: inverse global transform plus a smooth deformation."""
    angles = np.deg2rad(rng.uniform(-5, 5, 3))
    scale = rng.uniform(0.93, 1.03, 3)
    shift = rng.uniform(-0.03, 0.03, 3)
    inverse = rotation(angles).T / scale[:, None]
    centred = [g - s for g, s in zip(grid, shift, strict=True)]
    warped = []
    for row in inverse.astype(np.float32):
        coord = row[0] * centred[0] + row[1] * centred[1] + row[2] * centred[2]
        warped.append(coord + np.float32(0.02) * smooth_field(rng, shape, 5))
    return warped


def _anatomy(
    rng: np.random.Generator, q: list[np.ndarray], shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue map evaluated on the warped grid, and the brain-ellipsoid radius (for the tumour)."""
    x, _, z = q
    rho = np.sqrt(ellipsoid(q, (0.0, 0.0, 0.0), tuple(_BRAIN_RADII)))
    # sulci are the zero sheets of a random field; white matter reaches further out under gyri
    # (where the field is far from zero) than under sulci
    folds = np.abs(smooth_field(rng, shape, 20))
    wm_edge = 0.75 + 0.07 * np.minimum(folds, 1.5) + 0.015 * smooth_field(rng, shape, 9)
    rim = 0.03 + 0.01 * rng.uniform()
    tissue = np.full(shape, WM, dtype=np.uint8)
    tissue[rho >= wm_edge] = GM
    tissue[(rho >= wm_edge + 0.015) & (folds < 0.12)] = CSF
    tissue[(np.abs(x) < 0.018) & (z > -0.15) & (rho > 0.4)] = CSF  # interhemispheric fissure
    tissue[rho >= 1 - rim] = CSF

    _add_deep_structures(rng, q, tissue)
    tissue[rho >= 1] = BACKGROUND
    _clear_border(tissue)
    return tissue, rho


def _add_deep_structures(rng: np.random.Generator, q: list[np.ndarray], tissue: np.ndarray) -> None:
    """Paint paired deep grey nuclei and C-shaped lateral ventricles into `tissue`."""
    x, y, z = q
    deep = rng.uniform(0.85, 1.15)
    vent = rng.uniform(0.8, 1.3)
    for side in (-1.0, 1.0):
        nucleus = (side * 0.17, 0.03, -0.08)
        tissue[ellipsoid(q, nucleus, (0.07 * deep, 0.11 * deep, 0.08 * deep)) < 1] = GM
        horns = [x - side * 0.085, y, z - 0.06 - 0.6 * y**2]  # the horns curve upwards
        radii = (0.06 * vent, 0.32 * vent, 0.09 * vent)
        tissue[ellipsoid(horns, (0.0, 0.0, 0.0), radii) < 1] = VENTRICLE


def _clear_border(volume: np.ndarray) -> None:
    """Zero the outermost voxel layer, so the brain never touches the edge of the volume."""
    for axis in range(volume.ndim):
        view = np.moveaxis(volume, axis, 0)
        view[0] = 0
        view[-1] = 0


def _tumour(
    rng: np.random.Generator,
    grid: list[np.ndarray],
    tissue: np.ndarray,
    rho: np.ndarray,
    lateral: np.ndarray,
) -> np.ndarray:
    """BraTS 2023 label map of a glioma-like tumour centred in the white matter of one hemisphere.

    `lateral` is the anatomical left-right coordinate: edema does not cross the midline.
    """
    shape = tissue.shape
    side = 1.0 if rng.uniform() < 0.5 else -1.0
    r_core = rng.uniform(0.13, 0.26)
    r_edema = min(r_core * rng.uniform(1.3, 1.9), 0.42)
    rim = rng.uniform(0.045, 0.075)
    kind = rng.uniform()  # most tumours have a necrotic core, some a small one, a few none
    if kind < 0.1:
        r_necrosis = 0.0
    elif kind < 0.25:
        r_necrosis = rng.uniform(0.05, 0.08)
    else:
        r_necrosis = max(r_core - rim, 0.05)
    stretch = rng.uniform(0.85, 1.2, 3)
    margin = r_core * stretch[0] * 1.25 + 0.03  # keeps the core off the midline
    centre = _tumour_centre(rng, grid, tissue, rho, side * lateral, margin)
    f_core, f_necrosis, f_edema = (smooth_field(rng, shape, n) for n in (16, 20, 22))

    dist = np.sqrt(ellipsoid(grid, centre, tuple(stretch)))
    # noise-modulated radii, bounded by tanh so no lobe runs far away
    core = dist < r_core * (1 + 0.18 * np.tanh(f_core))
    core &= (tissue != BACKGROUND) & (side * lateral > 0)
    necrosis = core & (dist < r_necrosis * (1 + 0.2 * np.tanh(f_necrosis)))
    reach = r_edema * (1 + 0.35 * np.tanh(f_edema))
    # edema follows white-matter tracts: it reaches further in WM than in GM, never into CSF,
    # and stays in the tumour's hemisphere
    edema = ((tissue == WM) & (dist < reach)) | ((tissue == GM) & (dist < 0.7 * reach))
    edema &= side * lateral > 0
    edema |= (tissue != BACKGROUND) & (dist < r_core + 0.04)
    edema = connected_to(edema | core, core)
    label = np.zeros(shape, dtype=np.uint8)
    label[edema] = EDEMA
    label[core] = ENHANCING
    label[necrosis] = NECROSIS
    return label


def _tumour_centre(
    rng: np.random.Generator,
    grid: list[np.ndarray],
    tissue: np.ndarray,
    rho: np.ndarray,
    lateral: np.ndarray,
    margin: float,
) -> tuple[float, float, float]:
    """A random white-matter voxel at least `margin` from the midline on the side of `lateral` > 0.

    The margin is relaxed when no voxel qualifies (tiny volumes).
    """
    white = (tissue == WM) & (rho < 0.75)
    for gap in (margin, margin / 2, 0.0):
        candidates = np.flatnonzero(white & (lateral > gap))
        if candidates.size:
            break
    else:
        return (0.3, 0.0, 0.0)
    return random_grid_point(rng, grid, candidates, tissue.shape)  # type: ignore[return-value]


def _render(
    rng: np.random.Generator,
    classes: np.ndarray,
    modality: str,
    texture: np.ndarray,
    bias: np.ndarray,
    scale: float,
    brain: np.ndarray,
) -> np.ndarray:
    """One modality: table lookup, partial volume, bias, Rician noise, integer scale (float32)."""
    table = INTENSITY[modality]
    lut = np.array([0.0] + [table[k] for k in _CLASS_KEYS[1:]], dtype=np.float32)
    signal = smooth_inside(lut[classes] * texture, brain, PV_SIGMA) * bias
    values = to_scanner_units(rician(rng, signal, NOISE_FRACTION * table["wm"]), scale)
    return np.where(brain, values, 0).astype(np.float32)
