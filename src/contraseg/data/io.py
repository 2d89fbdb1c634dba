"""Read NIfTI images, labels and whole cases; check their grids; write NIfTI outputs.

Every problem with an input file is an `InputError` whose one-line message starts with the
file's path. Input files are only ever read.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from scipy import ndimage

from contraseg.data.cases import CaseSpec, ImageRef
from contraseg.data.labels import MAX_UNKNOWN_LISTED
from contraseg.errors import ConfigError, InputError
from contraseg.utils.fs import atomic_path

# What nibabel and gzip raise on a truncated or corrupt file (gzip.BadGzipFile is an OSError).
_READ_ERRORS = (EOFError, OSError, zlib.error, ValueError)
RESAMPLE_HINT = "pass resample_to=... (CLI: --resample-to MODALITY) to resample onto one grid"


@dataclass
class Volume:
    """One image read from disk: float32 data (a small integer dtype for labels) and geometry."""

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    path: Path
    channel: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.data.shape)

    @property
    def zooms(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three spatial axes, from the affine."""
        return tuple(float(z) for z in nib.affines.voxel_sizes(self.affine))

    @property
    def source(self) -> str:
        """The file, with the volume index for one volume of a 4D file."""
        return str(ImageRef(self.path, self.channel))


@dataclass
class LoadedCase:
    """All images of one case on one grid, plus what is needed to write outputs on that grid."""

    case_id: str
    modalities: tuple[str, ...]
    image: np.ndarray  # (M, X, Y, Z) float32, in `modalities` order
    label: np.ndarray | None  # (X, Y, Z) raw label values
    brain_mask: np.ndarray | None  # (X, Y, Z) bool
    affine: np.ndarray
    header: nib.Nifti1Header  # of the reference image
    spacing: tuple[float, float, float]
    sources: dict[str, str] = field(default_factory=dict)  # modality/"label"/"brain_mask" -> file
    reference: str = ""  # modality whose grid everything is on
    resampled: tuple[str, ...] = ()  # inputs that were resampled onto the reference grid

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.image.shape[1:])


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _gzip_problem(path: Path) -> str | None:
    """'truncated or corrupt gzip data' for a gzip file that does not decompress, else None."""
    with open(path, "rb") as raw:
        if raw.read(2) != b"\x1f\x8b":
            return None
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 20):
                pass
    except _READ_ERRORS as error:
        return f"truncated or corrupt gzip data ({_one_line(error)})"
    return None


def _open(path: Path) -> nib.Nifti1Pair:
    if not path.exists():
        raise InputError(path, "file not found")
    if not path.is_file():
        raise InputError(path, "is not a file")
    try:
        img = nib.load(path, mmap=False)  # never hold a writable view of an input
    except ImageFileError as error:
        # a .nii.gz cut inside its header also lands here: say so rather than "not NIfTI"
        problem = _gzip_problem(path) or f"not a NIfTI image ({_one_line(error)})"
        raise InputError(path, problem) from None
    except _READ_ERRORS as error:
        raise InputError(path, f"not a readable NIfTI image ({_one_line(error)})") from None
    if not isinstance(img, nib.Nifti1Pair):
        raise InputError(path, f"not a NIfTI image (nibabel reads it as {type(img).__name__})")
    return img


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape without trailing singleton dimensions beyond the third."""
    if len(shape) < 3:
        raise InputError(path, f"{len(shape)}D image of shape {shape}; a 3D volume is needed")
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 4:
        raise InputError(path, f"{len(shape)}D image of shape {shape} is not supported")
    return shape


def _read_data(img: nib.Nifti1Pair, path: Path, channel: int | None, expect_3d: bool) -> np.ndarray:
    shape = _spatial_shape(path, tuple(img.shape))
    count = shape[3] if len(shape) == 4 else 1
    if channel is not None and not 0 <= channel < count:
        raise InputError(
            path, f"volume index {channel} out of range: shape {shape} holds {count} volume(s)"
        )
    if channel is None and len(shape) == 4 and expect_3d:
        raise InputError(
            path, f"4D image of shape {shape} where a 3D volume was expected (pick one volume)"
        )
    try:
        if channel is not None and len(img.shape) == 4:
            return np.asarray(img.dataobj[..., channel])  # reads only what that volume needs
        return np.asarray(img.dataobj).reshape(shape)
    except _READ_ERRORS as error:
        raise InputError(path, f"truncated or corrupt image data ({_one_line(error)})") from None


def _check_finite(data: np.ndarray, path: Path) -> None:
    if data.dtype.kind not in "fc" or np.isfinite(data).all():
        return
    n_nan = int(np.isnan(data).sum())
    n_inf = int(np.isinf(data).sum())
    parts = [f"{n} {what} voxels" for n, what in ((n_nan, "NaN"), (n_inf, "inf")) if n]
    raise InputError(path, "contains " + " and ".join(parts))


def _read(ref: ImageRef | Path | str, expect_3d: bool) -> tuple[np.ndarray, Volume]:
    if isinstance(ref, ImageRef):
        path, channel = Path(ref.path), ref.channel
    else:
        path, channel = Path(ref), None
    img = _open(path)
    data = _read_data(img, path, channel, expect_3d)
    _check_finite(data, path)
    affine = np.asarray(img.affine, dtype=np.float64)
    volume = Volume(data, affine, img.header.copy(), path, channel)
    return data, volume


def read_image(ref: ImageRef | Path | str, *, expect_3d: bool = True,
               mask: bool = False) -> Volume:
    """Read one image (or one volume of a 4D file) as float32, with its affine and header.

    A 4D file with a trailing singleton dimension is read as 3D. With `expect_3d=False` a 4D
    file without a volume index is returned whole, as (X, Y, Z, T). An image with 2 to 8
    integer values is refused as a label map given as an image, unless it is a `mask`.
    """
    data, volume = _read(ref, expect_3d)
    if not mask:  # a brain mask is 0 / 1 by nature
        _refuse_label_maps(data, volume.path)
    volume.data = np.asarray(data, dtype=np.float32)
    return volume


LABEL_LIKE_VALUES = 8


def _refuse_label_maps(data: np.ndarray, path: Path) -> None:
    """An image with 2 to LABEL_LIKE_VALUES integer values is a label map (or a mask) given
    where an image belongs. One value (an all-zero stand-in for a missing scan) is allowed."""
    sample = data[::4, ::4, ::4] if data.ndim >= 3 else data
    if np.unique(sample).size > LABEL_LIKE_VALUES:  # the cheap answer for every real scan
        return
    values = np.unique(data)
    if 2 <= values.size <= LABEL_LIKE_VALUES and np.array_equal(values, np.rint(values)):
        shown = ", ".join(f"{v:g}" for v in values)
        raise InputError(path, f"has only the values {shown}: this looks like a label map, "
                               "not an image")


def _smallest_int_dtype(low: int, high: int) -> np.dtype:
    return np.promote_types(np.min_scalar_type(low), np.min_scalar_type(high))


def read_label(path: Path | str) -> Volume:
    """Read a label map; its values must be integers (0.0, 1.0, 4.0 stored as floats are fine)."""
    data, volume = _read(path, expect_3d=True)
    if data.dtype.kind == "f":
        bad = data != np.rint(data)
        if bad.any():
            values = np.unique(data[bad])
            shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if values.size > 5 else "")
            hint = (": this looks like an image, not a label map"
                    if values.size > MAX_UNKNOWN_LISTED else "")
            raise InputError(
                path, f"label map has non-integral values {shown} ({int(bad.sum())} voxels){hint}"
            )
        data = np.rint(data)
    low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
    volume.data = data.astype(_smallest_int_dtype(low, high))
    return volume


def _axcodes(affine: np.ndarray) -> str:
    return "".join(str(c) for c in nib.aff2axcodes(affine))


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def grid_difference(volume: Volume, reference: Volume, atol: float = 1e-3) -> str | None:
    """How `volume`'s grid differs from `reference`'s, or None when they match within `atol`."""
    shape, ref_shape = volume.shape[:3], reference.shape[:3]
    if shape != ref_shape:
        return f"shape {shape} differs from {reference.source} {ref_shape}"
    delta = float(np.abs(volume.affine - reference.affine).max())
    if delta <= atol:
        return None
    details = []
    if not np.allclose(volume.zooms, reference.zooms, atol=atol):
        details.append(f"spacing {_fmt(volume.zooms)} vs {_fmt(reference.zooms)}")
    if _axcodes(volume.affine) != _axcodes(reference.affine):
        details.append(f"orientation {_axcodes(volume.affine)} vs {_axcodes(reference.affine)}")
    if not np.allclose(volume.affine[:3, 3], reference.affine[:3, 3], atol=atol):
        details.append(f"origin {_fmt(volume.affine[:3, 3])} vs {_fmt(reference.affine[:3, 3])}")
    if not details:
        details.append("direction cosines differ")
    return (
        f"affine differs from {reference.source} by up to {delta:.4g} (atol {atol:g}): "
        + "; ".join(details)
    )


def check_same_grid(volumes: Sequence[Volume], reference: Volume, atol: float = 1e-3) -> None:
    """Raise InputError naming the first volume whose shape or affine differs from `reference`."""
    for volume in volumes:
        problem = grid_difference(volume, reference, atol)
        if problem:
            raise InputError(volume.path, f"{problem}; {RESAMPLE_HINT}")


def resample_to_grid(
    data: np.ndarray,
    affine: np.ndarray,
    ref_shape: Sequence[int],
    ref_affine: np.ndarray,
    order: int,
) -> np.ndarray:
    """Resample `data` onto another grid by world coordinates (zero outside the source)."""
    # voxel of the reference grid -> world -> voxel of the source grid
    matrix = np.linalg.solve(affine, ref_affine)
    return ndimage.affine_transform(
        data, matrix, output_shape=tuple(ref_shape), order=order, mode="constant", cval=0.0
    )


def _missing_error(case: CaseSpec) -> InputError:
    modality, expected = next(iter(case.missing.items()))
    return InputError(expected, f"missing {modality} image for case {case.case_id}")


def _read_case_volumes(case: CaseSpec, with_label: bool) -> dict[str, Volume]:
    volumes = {m: read_image(ref) for m, ref in case.images.items()}
    if with_label and case.label is not None:
        volumes["label"] = read_label(case.label)
    if case.brain_mask is not None:
        volumes["brain_mask"] = read_image(case.brain_mask, mask=True)
    return volumes


def _onto_reference(volumes: dict[str, Volume], reference: Volume, atol: float) -> tuple[str, ...]:
    """Resample (in place) every volume not already on the reference grid; return their names."""
    resampled = []
    for name, volume in volumes.items():
        if volume is reference or grid_difference(volume, reference, atol) is None:
            continue
        order = 0 if name == "label" else 1  # labels nearest; images and the mask trilinear
        volume.data = resample_to_grid(
            volume.data, volume.affine, reference.shape, reference.affine, order
        )
        resampled.append(name)
    return tuple(resampled)


def load_case(
    case: CaseSpec,
    *,
    resample_to: str | None = None,
    atol: float = 1e-3,
    with_label: bool = True,
) -> LoadedCase:
    """Read every image of a case (and its label and brain mask) onto one grid.

    Without `resample_to` all files must share the first modality's grid (shape, and affine
    within `atol` mm); with it, everything is resampled onto that modality's grid.
    """
    if case.missing:
        raise _missing_error(case)
    if not case.images:
        raise ConfigError(f"case {case.case_id} has no images")
    if resample_to is not None and resample_to not in case.images:
        known = ", ".join(case.images)
        raise ConfigError(
            f"resample_to '{resample_to}' is not a modality of case {case.case_id} ({known})"
        )
    volumes = _read_case_volumes(case, with_label)
    ref_name = resample_to or next(iter(case.images))
    reference = volumes[ref_name]
    resampled: tuple[str, ...] = ()
    if resample_to is None:
        check_same_grid([v for v in volumes.values() if v is not reference], reference, atol)
    else:
        resampled = _onto_reference(volumes, reference, atol)
    label = volumes.get("label")
    mask = volumes.get("brain_mask")
    return LoadedCase(
        case_id=case.case_id,
        modalities=case.modalities,
        image=np.stack([volumes[m].data for m in case.images]).astype(np.float32, copy=False),
        label=None if label is None else label.data,
        brain_mask=None if mask is None else mask.data > 0.5,  # some masks store 0.99999997
        affine=reference.affine,
        header=reference.header,
        spacing=reference.zooms,
        sources={name: v.source for name, v in volumes.items()},
        reference=ref_name,
        resampled=resampled,
    )


def _output_dtype(array: np.ndarray, dtype: np.dtype | type | str | None) -> np.dtype:
    if dtype is not None:
        return np.dtype(dtype)
    if array.dtype == bool:
        return np.dtype(np.uint8)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:  # NIfTI readers dislike int64
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        return _smallest_int_dtype(low, high)
    return array.dtype


def save_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: Path | str,
    *,
    header: nib.Nifti1Header | None = None,
    dtype: np.dtype | type | str | None = None,
) -> Path:
    """Write `array` as NIfTI atomically; with `header`, keep its qform/sform codes and units."""
    array = np.asarray(array)
    out_dtype = _output_dtype(array, dtype)
    if out_dtype.kind in "iu" and array.dtype.kind == "f":
        array = np.rint(array)
    array = array.astype(out_dtype, copy=False)
    hdr = nib.Nifti1Header() if header is None else header.copy()
    hdr.set_data_dtype(out_dtype)
    hdr.set_slope_inter(None, None)  # data are written as they are, never rescaled
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    if header is None or qcode == scode == 0:
        qcode, scode = 0, 2  # nibabel's default: the affine in the sform, "aligned"
    img = nib.Nifti1Image(array, affine, hdr)
    img.set_qform(affine, code=qcode)
    img.set_sform(affine, code=scode)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)
