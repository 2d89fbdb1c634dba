"""What every way of segmenting a case shares, whatever makes the probabilities (one run:
`engine.predictor.Predictor`; the folds of a cross-validation: `FoldEnsemble`): the ET rule and
the label values of the output, cases given as files, discovered cases and whole dataset
folders (one failing case is reported, the others go on)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import nibabel as nib
import numpy as np

from contraseg.data.cases import CaseSpec, ImageRef
from contraseg.data.io import LoadedCase, load_case, save_nifti
from contraseg.data.labels import LabelConvention
from contraseg.data.layouts import (
    MODALITY_SYNONYMS,
    canonical_modality,
    discover,
    strip_nifti_suffix,
)
from contraseg.engine.config import InferConfig
from contraseg.engine.et_rule import et_rule_threshold, postprocess_et
from contraseg.errors import ContrasegError, InputError
from contraseg.utils.progress import progress_bar
from contraseg.utils.text import did_you_mean


@dataclass
class PredictionResult:
    """One case's prediction on its input grid.

    labels: raw label values of the output convention; canonical: canonical classes (uint8);
    probabilities: (C, *S) float32 when asked for, else None; used: the modalities given to the
    method; et_relabelled: voxels the ET rule turned into necrosis (0 when it did not apply).
    """

    case_id: str
    labels: np.ndarray
    canonical: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    used: tuple[str, ...]
    probabilities: np.ndarray | None = None
    et_relabelled: int = 0


@dataclass
class CaseFailure:
    """A case of a folder that could not be predicted, with the one-line reason."""

    case_id: str
    message: str


def _raw_dtype(convention: LabelConvention) -> np.dtype:
    return np.min_scalar_type(max([0, *convention.class_to_raw.values()]))


class CaseSegmenter:
    """The file and folder side of segmenting. A subclass provides `modalities` (the run's, in
    channel order), `convention`, `infer` (InferConfig), `source`, `method_name` and
    `labels_and_probabilities`."""

    modalities: tuple[str, ...]
    convention: LabelConvention
    infer: InferConfig
    source: str

    @property
    def method_name(self) -> str:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def labels_and_probabilities(self, loaded: LoadedCase, probabilities: bool = False
                                 ) -> tuple[np.ndarray, np.ndarray | None]:  # pragma: no cover
        """Canonical labels of one case on its input grid, and its class probabilities there
        when asked."""
        raise NotImplementedError

    def _unknown(self, source: str | Path, name: str) -> InputError:
        names = [*self.modalities, *(synonym for synonym, modality in MODALITY_SYNONYMS.items()
                                     if modality in self.modalities)]
        return InputError(source, f"modality '{name}' is not one of the run's "
                                  f"{', '.join(self.modalities)} (method {self.method_name})"
                                  + did_you_mean(name, names))

    def _check_names(self, loaded: LoadedCase) -> None:
        """Refuse a modality the run does not know, naming its file."""
        for name in loaded.modalities:
            if name not in self.modalities:
                raise self._unknown(loaded.sources.get(name, loaded.case_id), name)
        if not loaded.modalities:
            raise InputError(loaded.case_id, "no input modality")

    def predict_loaded(self, loaded: LoadedCase, *, probabilities: bool = False,
                       convention: LabelConvention | None = None) -> PredictionResult:
        """Segment one case whose modalities (by name) are a subset of the run's.

        The case is preprocessed with the run's settings; the probabilities are inverted onto
        the input grid, then argmax, the ET rule (brain conventions only) and the raw values
        of `convention` (default: the run's).
        """
        canonical, prob = self.labels_and_probabilities(loaded, probabilities)
        before = canonical
        # counted on the input grid, like BraTS peers
        canonical = postprocess_et(canonical, et_rule_threshold(
            self.infer.et_min_voxels, loaded.shape, loaded.spacing, self.convention))
        out = convention or self.convention
        return PredictionResult(
            loaded.case_id, out.to_raw(canonical, dtype=_raw_dtype(out)), canonical,
            loaded.affine, loaded.header, tuple(loaded.modalities),
            prob, int((before != canonical).sum()))

    def _case_from_files(self, files: Mapping[str, str | Path], case_id: str) -> CaseSpec:
        images: dict[str, ImageRef] = {}
        for name, path in files.items():
            modality = canonical_modality(name)
            if modality not in self.modalities:
                raise self._unknown(path, name)
            if modality in images:
                raise InputError(path, f"'{name}' is {modality} again "
                                       f"(already given as {images[modality].path})")
            images[modality] = ImageRef(Path(path))
        if not images:
            raise InputError(case_id, f"no input image; the run uses {', '.join(self.modalities)}")
        return CaseSpec(case_id, images)

    def predict_files(self, files: Mapping[str, str | Path], out_path: str | Path,
                      resample_to: str | None = None, *,
                      convention: LabelConvention | None = None,
                      save_probabilities: bool = False) -> Path:
        """Segment one case given as {modality name: NIfTI file} and write the label map.

        Names may be synonyms (`T1ce`, `FLAIR`, `t2f`, ...). Without `resample_to` every file
        must share the first file's grid; with it, all are resampled onto that modality's
        grid. The label map is written atomically in that grid and affine.
        """
        out_path = Path(out_path)
        case = self._case_from_files(files, strip_nifti_suffix(out_path.name))
        reference = canonical_modality(resample_to) if resample_to else None
        loaded = load_case(case, resample_to=reference, with_label=False)
        return self._write(loaded, out_path, convention, save_probabilities)

    def _write(self, loaded: LoadedCase, out_path: str | Path,
               convention: LabelConvention | None, save_probabilities: bool) -> Path:
        """Segment `loaded` into the label map `out_path` (and, when asked, its probabilities
        beside it: `probabilities_path`)."""
        result = self.predict_loaded(loaded, convention=convention,
                                     probabilities=save_probabilities)
        if save_probabilities:
            save_nifti(np.moveaxis(result.probabilities, 0, -1), result.affine,
                       probabilities_path(out_path), header=result.header, dtype=np.float32)
        return save_nifti(result.labels, result.affine, out_path, header=result.header)

    def output_convention(self, found: LabelConvention | None) -> LabelConvention:
        """The dataset's convention when it has the run's classes, else the run's."""
        if found is not None and tuple(found.class_names) == tuple(self.convention.class_names):
            return found
        return self.convention

    def predict_case(self, case: CaseSpec, out_path: str | Path, *,
                     resample_to: str | None = None,
                     convention: LabelConvention | None = None,
                     save_probabilities: bool = False,
                     modalities: Sequence[str] | None = None) -> Path:
        """Segment a discovered case with the run's modalities it has (others are not read;
        with `modalities`, only those)."""
        wanted = self.modalities if modalities is None else modalities
        images = {m: ref for m, ref in case.images.items()
                  if m in self.modalities and m in wanted}
        if not images:
            where = next(iter(case.images.values())).path.parent if case.images else case.case_id
            raise InputError(where, f"case {case.case_id} has none of the run's modalities "
                                    f"{', '.join(self.modalities)}")
        case = replace(case, images=images, missing={}, label=None)
        reference = canonical_modality(resample_to) if resample_to else None
        loaded = load_case(case, resample_to=reference, with_label=False)
        return self._write(loaded, out_path, convention, save_probabilities)

    def predict_folder(self, data_dir: str | Path, out_dir: str | Path, *, progress: bool = True,
                       labels: str | None = None, resample_to: str | None = None,
                       save_probabilities: bool = False,
                       modalities: Sequence[str] | None = None) -> list[CaseFailure]:
        """Segment every case `discover` finds, one at a time, into `<out_dir>/<case>.nii.gz`.

        A case missing some modalities is predicted from those it has; modalities the run does
        not know (or not in `modalities`) are not read. Labels use the dataset's convention when
        it has the run's classes
        (`labels` overrides it), else the run's. A case that fails is reported as a
        CaseFailure with its one-line error, and the others go on.
        """
        spec = discover(data_dir, labels=labels)
        output = self.output_convention(spec.convention)
        failures: list[CaseFailure] = []
        bar = progress_bar() if progress else nullcontext()
        with bar:
            task = bar.add_task("predict", total=len(spec.cases)) if progress else None
            for case in spec.cases:
                try:
                    self.predict_case(case, Path(out_dir) / f"{case.case_id}.nii.gz",
                                      resample_to=resample_to, convention=output,
                                      save_probabilities=save_probabilities,
                                      modalities=modalities)
                except ContrasegError as error:
                    failures.append(CaseFailure(case.case_id, str(error)))
                if progress:
                    bar.advance(task)
        return failures


def probabilities_path(out_path: str | Path) -> Path:
    """Where the probabilities of the label map `out_path` go: <stem>_probabilities.nii.gz, a
    4D float32 image (X, Y, Z, C) with the classes in the run's order."""
    out_path = Path(out_path)
    return out_path.with_name(f"{strip_nifti_suffix(out_path.name)}_probabilities.nii.gz")
