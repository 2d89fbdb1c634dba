"""The Python API for notebooks and pipelines: numpy arrays and an affine in, labels (and
probabilities) out, with the run's whole pipeline (reorientation, crop, z-score, resampling,
sliding window, flips, the way back to the input grid, the ET rule).

    import nibabel as nib
    from contraseg import Segmenter

    seg = Segmenter("runs/unet")  # which="auto", device="auto"
    t1c, flair = (nib.load(f"case-{m}.nii.gz") for m in ("t1c", "flair"))
    result = seg.predict({"t1c": t1c.get_fdata(), "flair": flair.get_fdata()}, t1c.affine,
                         probabilities=True)
    result.labels         # (X, Y, Z) label values of the run's convention, on the input grid
    result.probabilities  # (C, X, Y, Z) class probabilities
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from contraseg.data.io import LoadedCase
from contraseg.data.layouts import canonical_modality
from contraseg.engine.case_segmenter import PredictionResult
from contraseg.engine.predictor import Predictor
from contraseg.errors import InputError


class Segmenter:
    """A trained run, ready to segment arrays. `infer` overrides the run's inference settings
    (overlap, tta_flips, et_min_voxels, blend, blend_space)."""

    def __init__(self, run: str | Path, which: str = "auto", device: str = "auto",
                 **infer: object):
        self.predictor = Predictor.from_run(run, which, device, overrides=infer)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities the run knows, in its channel order (any subset may be given)."""
        return self.predictor.modalities

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.predictor.convention.class_names)

    def predict(self, images: Mapping[str, np.ndarray], affine: np.ndarray | None = None, *,
                probabilities: bool = False, case_id: str = "array") -> PredictionResult:
        """Segment one case: `images` maps modality names (synonyms allowed: T1ce, FLAIR,
        t2f, ...) to (X, Y, Z) arrays on one grid; `affine` is that grid's voxel-to-world
        matrix (identity: 1 mm voxels, RAS). Returns labels (and probabilities) on that grid."""
        return self.predictor.predict_loaded(as_loaded_case(images, affine, case_id),
                                             probabilities=probabilities)


def as_loaded_case(images: Mapping[str, np.ndarray], affine: np.ndarray | None = None,
                   case_id: str = "array") -> LoadedCase:
    """Arrays and an affine as the LoadedCase the predictor takes."""
    if not images:
        raise InputError(case_id, "no image given")
    names = [canonical_modality(name) for name in images]
    arrays = [np.asarray(image, dtype=np.float32) for image in images.values()]
    shapes = {array.shape for array in arrays}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise InputError(case_id, f"images must be 3D arrays of one shape, not {sorted(shapes)}")
    if len(set(names)) != len(names):
        raise InputError(case_id, f"a modality is given twice: {', '.join(images)}")
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InputError(case_id, "affine must be a finite 4 x 4 matrix")
    header = nib.Nifti1Header()
    header.set_data_shape(arrays[0].shape)
    header.set_zooms(tuple(float(z) for z in nib.affines.voxel_sizes(affine)))
    return LoadedCase(case_id=case_id, modalities=tuple(names), image=np.stack(arrays),
                      label=None, brain_mask=None, affine=affine, header=header,
                      spacing=tuple(float(z) for z in nib.affines.voxel_sizes(affine)))
