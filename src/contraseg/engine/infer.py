"""Inference: sliding-window logits for many modality subsets at once, flip test-time
augmentation, the BraTS small-ET rule, and a `Predictor` that segments loaded cases, files or
whole dataset folders with a trained run.

Windows and subsets: `sliding_window_logits` runs MONAI's `sliding_window_inference` once; for
each window the method's `encode` runs once and its `decode` once per availability pattern
(batched `InferConfig.subset_chunk` patterns at a time), so K subsets cost one encoder pass per
window. Windows are the training patch size (rounded up to the method's `size_divisor`); MONAI
pads an image smaller than a window with zeros (the z-scored background value) and crops the
result back, so any image size works.

Flip TTA (nnU-Net's mirroring): softmax probabilities averaged over the 8 combinations of flips
of the three spatial axes, each output flipped back before averaging.

Predictions go back to the input grid: probabilities are inverted (crop, resampling,
reorientation) with `invert_probabilities`, then argmax, the ET rule, and the label convention's
raw values.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import Tensor

from contraseg.data.cases import CaseSpec, ImageRef
from contraseg.data.io import LoadedCase, load_case, save_nifti
from contraseg.data.labels import BRAIN_CLASS_NAMES, LabelConvention, is_whole_tumour
from contraseg.data.layouts import (
    MODALITY_SYNONYMS,
    canonical_modality,
    discover,
    strip_nifti_suffix,
)
from contraseg.data.preprocess import (
    PreprocessSettings,
    invert_probabilities,
    preprocess,
    reoriented_spacing,
)
from contraseg.engine.checkpoint import describe_checkpoint, load_method
from contraseg.engine.config import InferConfig, config_from_dict, infer_config
from contraseg.engine.distributed import autocast, resolve_device
from contraseg.errors import ContrasegError, ContrasegWarning, InputError
from contraseg.models.base import Method
from contraseg.utils.progress import progress_bar
from contraseg.utils.text import did_you_mean

# --- sliding window over many availability patterns ----------------------------------------------


def method_device(method: torch.nn.Module) -> torch.device:
    """The device of the method's parameters (the CPU for a method without any)."""
    first = next(method.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def window_size(method: Method, roi_size: Sequence[int]) -> tuple[int, ...]:
    """The ROI rounded up to a multiple of the method's `size_divisor` (1 when it has none).

    2D and 2.5D methods (`models.slices`) divide only the in-plane sizes; a 2.5D window spans
    the whole depth (-1: MONAI takes the image's size), so every slice sees its true neighbours
    and the result equals slice-by-slice inference.
    """
    divisor = int(getattr(method, "size_divisor", 1) or 1)
    rounded = [-(-int(n) // divisor) * divisor for n in roi_size]
    if method.spatial == "2d":
        rounded[-1] = int(roi_size[-1])
    elif method.spatial == "2.5d":
        rounded[-1] = -1
    return tuple(rounded)


def _tile(encoded: object, times: int) -> object:
    """Repeat every tensor in `encoded` (nested tuples/lists/dicts) `times` along dim 0."""
    if times == 1:
        return encoded
    if isinstance(encoded, Tensor):
        return encoded.repeat(times, *([1] * (encoded.ndim - 1)))
    if isinstance(encoded, Mapping):
        return {key: _tile(value, times) for key, value in encoded.items()}
    if isinstance(encoded, list | tuple):
        return type(encoded)(_tile(value, times) for value in encoded)
    return encoded


def _decode_chunk(method: Method, encoded: object, rows: Tensor, batch: int) -> Tensor:
    """Decode n patterns for a batch of B windows in one call: (B, n * C, *roi) logits."""
    n = rows.shape[0]
    available = rows.repeat_interleave(batch, dim=0)  # pattern-major, like `_tile`
    logits = method.decode(_tile(encoded, n), available)  # (n * B, C, *roi)
    return logits.unflatten(0, (n, batch)).transpose(0, 1).flatten(1, 2)


def _subset_predictor(method: Method, availability: Tensor, chunk: int, bf16: bool,
                      probabilities: bool = False) -> Callable[[Tensor], Tensor]:
    """The window predictor: one `encode`, then `decode` for every pattern, by chunks; with
    `probabilities`, each pattern's probabilities (`Method.activate`) instead of its logits."""
    device = method_device(method)

    def predict(window: Tensor) -> Tensor:
        with autocast("bf16" if bf16 else "none", device):
            encoded = method.encode(window)
            parts = [_decode_chunk(method, encoded, availability[i:i + chunk], window.shape[0])
                     for i in range(0, availability.shape[0], chunk)]
        out = torch.cat(parts, dim=1).float()
        if probabilities:
            out = method.activate(out.unflatten(1, (availability.shape[0], -1)), dim=2)
            out = out.flatten(1, 2)
        return out

    return predict


def _check_shapes(method: Method, image: Tensor, availability: Tensor, roi: Sequence[int]) -> None:
    if image.ndim != 2 + len(roi) or image.shape[0] != 1:
        raise ValueError(f"image must be (1, M, *S) with {len(roi)} spatial dims, "
                         f"not {tuple(image.shape)}")
    if availability.ndim != 2 or availability.shape[1] != image.shape[1]:
        raise ValueError(f"availability must be (K, {image.shape[1]}), "
                         f"not {tuple(availability.shape)}")
    if image.shape[1] != method.num_modalities:
        raise ValueError(f"image has {image.shape[1]} channels; the method takes "
                         f"{method.num_modalities} ({', '.join(method.modalities)})")


def sliding_window_logits(
    method: Method,
    image: Tensor,
    availability: Tensor,
    cfg: InferConfig,
    roi_size: Sequence[int],
    *,
    bf16: bool = False,
    out_device: str | torch.device | None = None,
) -> Tensor:
    """Logits (K, C, *S) of one image (1, M, *S) for each availability row (K, M) bool (with
    `cfg.blend_space` "probabilities": blended softmax probabilities instead).

    Windows of `roi_size` (rounded up to `size_divisor`) overlap by `cfg.overlap`, blended with
    `cfg.blend` weights (gaussian: sigma = roi / 8), `cfg.sw_batch_size` windows per call.
    Channels of unavailable modalities are masked by the method itself, so the image may hold
    all of them (evaluation over the 15 subsets of 4 modalities: one call, 15 logit maps).
    Runs under `torch.inference_mode` in eval mode (the method's mode is restored after), on the
    device of the method's parameters; the stitched result stays there unless `out_device` says
    otherwise. `bf16` runs the method under bfloat16 autocast; stitching is float32.
    """
    roi = window_size(method, roi_size)
    _check_shapes(method, image, availability, roi)
    device = method_device(method)
    rows = availability.to(device=device, dtype=torch.bool)
    predictor = _subset_predictor(method, rows, max(1, int(cfg.subset_chunk)), bf16,
                                  probabilities=cfg.blend_space == "probabilities")
    was_training = method.training
    method.eval()
    try:
        with torch.inference_mode():
            image = with_case_inputs(method, image.to(device=device, dtype=torch.float32),
                                     rows.any(0, keepdim=True))
            out = sliding_window_inference(
                image, roi, int(cfg.sw_batch_size),
                predictor, overlap=float(cfg.overlap), mode=cfg.blend, device=out_device,
            )
    finally:
        method.train(was_training)
    return torch.as_tensor(out)[0].unflatten(0, (rows.shape[0], -1))


def with_case_inputs(method: Method, image: Tensor, present: Tensor) -> Tensor:
    """The image (1, M, *S) with the method's per-case inputs appended as channels (computed
    from the modalities of `present` (1, M), which every pattern of the call may use)."""
    extra = method.case_inputs(image, present)
    return image if extra is None else torch.cat([image, extra.to(image)], dim=1)


def flip_combinations(spatial_dims: int = 3) -> list[tuple[int, ...]]:
    """The 2^d subsets of spatial axes of a (N, C, *S) tensor: (), (2,), (3,), ..., (2, 3, 4)."""
    axes = range(2, 2 + spatial_dims)
    return [dims for r in range(spatial_dims + 1) for dims in itertools.combinations(axes, r)]


def sliding_window_probabilities(
    method: Method,
    image: Tensor,
    availability: Tensor,
    cfg: InferConfig,
    roi_size: Sequence[int],
    *,
    bf16: bool = False,
    out_device: str | torch.device | None = None,
) -> Tensor:
    """Class probabilities (K, C, *S); with `cfg.tta_flips`, the mean over all flips.

    Each flipped pass flips the image, runs `sliding_window_logits`, takes the softmax (unless
    the windows already blended probabilities) and flips it back (nnU-Net's mirroring; 8
    passes in 3D). A region-based method averages its region sigmoids instead and returns the
    class scores of models/regions.py (argmax: nnU-Net's region rule).
    """
    flips = flip_combinations(image.ndim - 2) if cfg.tta_flips else [()]
    total: Tensor | None = None
    for dims in flips:
        flipped = image.flip(dims) if dims else image
        out = sliding_window_logits(method, flipped, availability, cfg, roi_size, bf16=bf16,
                                    out_device=out_device)
        prob = out if cfg.blend_space == "probabilities" else method.activate(out, dim=1)
        prob = prob.flip(dims) if dims else prob
        total = prob if total is None else total + prob
    return method.class_scores(total / len(flips), dim=1)


# --- post-processing -----------------------------------------------------------------------------


def has_enhancing_class(convention: LabelConvention) -> bool:
    """Whether the convention uses the canonical brain classes (3 = enhancing, 1 = necrosis)."""
    return tuple(convention.class_names[:4]) == BRAIN_CLASS_NAMES


BRATS_FIELD_OF_VIEW_MM = 100.0  # the ET rule's scope: scans at least this wide on every axis


def et_rule_threshold(min_voxels: int, shape: Sequence[int], spacing: Sequence[float]) -> int:
    """The small-ET rule's threshold in voxels of a grid of `shape` and `spacing` (mm); 0: off.

    BraTS's peers count `min_voxels` (500) voxels on BraTS's 1 mm isotropic grid, i.e. a
    physical volume of `min_voxels` mm^3: the threshold keeps that volume on any grid (2 mm
    voxels: 63, since 62 voxels are 496 mm^3). The rule is defined for whole-head scans
    (BraTS: 240 x 240 x 155 mm); on a field of view under BRATS_FIELD_OF_VIEW_MM along any
    axis (the 64 mm phantom, a crop) it is off, because a 500 mm^3 enhancing rim is no longer
    "small" there (it turned a 94% ET Dice on the phantom into HD95 373).
    """
    if min_voxels <= 0:
        return 0
    extent = np.asarray(shape, dtype=float) * np.asarray(spacing, dtype=float)
    if np.any(extent < BRATS_FIELD_OF_VIEW_MM):
        return 0
    # a whole number of voxels under min_voxels mm^3 is one under ceil(min_voxels / volume)
    volume = float(np.prod(np.asarray(spacing, dtype=float)))
    return max(1, math.ceil(min_voxels / volume - 1e-9))


def postprocess_et(labels_canonical: np.ndarray, min_voxels: int, et_class: int = 3,
                   replace_with: int = 1) -> np.ndarray:
    """The BraTS peers' rule: predicted enhancing tumour of fewer than `min_voxels` voxels
    (counted over the whole map) becomes `replace_with` (necrosis / non-enhancing core), so the
    tumour core is unchanged and ET becomes empty. `min_voxels <= 0` disables it; callers pass
    `et_rule_threshold(...)`, the count for the map's own grid.

    Only meaningful for canonical brain classes (`has_enhancing_class`); `Predictor` skips it
    for other conventions. Returns a new array when it relabels, else the input itself.
    """
    if min_voxels <= 0:
        return labels_canonical
    enhancing = labels_canonical == et_class
    count = int(enhancing.sum())
    if count == 0 or count >= min_voxels:
        return labels_canonical
    out = labels_canonical.copy()
    out[enhancing] = replace_with
    return out


# --- predicting cases with a trained run ---------------------------------------------------------


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


@dataclass
class Predictor:
    """A trained method with everything needed to use it: modality names (channel order),
    label convention, preprocessing, window size and inference settings."""

    method: Method
    modalities: tuple[str, ...]
    convention: LabelConvention
    preprocess: PreprocessSettings
    roi_size: tuple[int, ...]
    infer: InferConfig
    bf16: bool = False
    source: str = ""  # the checkpoint file and its training step
    training_spacing: tuple[float, ...] | None = None  # median of the training scans (mm)

    @classmethod
    def from_run(cls, run: str | Path, which: str = "auto", device: str | torch.device = "auto",
                 *, infer: InferConfig | None = None, bf16: bool = False) -> Predictor:
        """Load a run folder (its `which` checkpoint) or a checkpoint file; `infer` overrides
        the run's inference settings. A cross-validation folder (`train --folds`) gives the
        ensemble of its folds (`FoldEnsemble`)."""
        if (folds := cross_validation_folds(run)) is not None:
            return FoldEnsemble.of([cls.from_run(fold, which, device, infer=infer, bf16=bf16)
                                    for fold in folds])
        method, meta = load_method(run, which, resolve_device(str(device)))
        if method.kind != "segmentation":
            use = {"generator": "`contraseg normal` uses it",
                   "pretraining": "fine-tune from it: `contraseg train --init RUN`"}
            raise InputError(meta.get("path", run), f"is a {method.kind} run "
                             f"({meta['method']}), not a segmenter; "
                             f"{use.get(method.kind, 'it cannot segment')}")
        config = config_from_dict(meta["config"])
        spacing = meta.get("training_spacing")
        return cls(method, tuple(meta["modalities"]),
                   LabelConvention.from_dict(meta["label_convention"]),
                   PreprocessSettings.from_dict(meta["preprocess"]),
                   tuple(int(n) for n in config.data.patch_size), infer or config.infer, bf16,
                   describe_checkpoint(meta), tuple(spacing) if spacing else None)

    def override(self, changes: Mapping[str, object]) -> None:
        """Replace the run's inference settings named in `changes` (None: keep the run's);
        values are type-checked like `--set infer.KEY=VALUE`."""
        given = {key: value for key, value in changes.items() if value is not None}
        if given:
            self.infer = infer_config({**asdict(self.infer), **given})

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

    @property
    def method_name(self) -> str:
        return getattr(self.method, "method_name", type(self.method).__name__)

    def channels(self, image: np.ndarray, names: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(1, M_run, *S) image in the run's channel order (absent ones zero) and (1, M_run)."""
        full = np.zeros((len(self.modalities), *image.shape[1:]), dtype=np.float32)
        for channel, name in zip(image, names, strict=True):
            full[self.modalities.index(name)] = channel
        available = torch.tensor([[m in names for m in self.modalities]])
        return torch.from_numpy(full)[None], available

    def settings_for(self, loaded: LoadedCase) -> PreprocessSettings:
        """The run's preprocessing for this case. Voxels more than 2x the training spacing on
        some axis (5.5 mm clinical slices on a 1 mm model) get a warning, and a run that
        trained at the scans' own spacing resamples such a case to the training spacing."""
        spacing = reoriented_spacing(loaded.affine, self.preprocess.orientation)
        reference = self.preprocess.target_spacing or self.training_spacing
        if reference is None:
            return self.preprocess
        ratio = max(max(a / b, b / a) for a, b in zip(spacing, reference, strict=True))
        if ratio <= SPACING_RATIO_WARNING:
            return self.preprocess
        seen = f"{loaded.case_id}: voxels of {_mm(spacing)} differ {ratio:.1f}x from the run's "
        if self.preprocess.target_spacing is not None:
            warnings.warn(seen + f"{_mm(reference)} grid; resampled to it, but detail the scan "
                          "never had cannot come back", ContrasegWarning, stacklevel=2)
            return self.preprocess
        warnings.warn(seen + f"training scans ({_mm(reference)}); resampled to that spacing",
                      ContrasegWarning, stacklevel=2)
        return replace(self.preprocess, target_spacing=tuple(reference))

    def probabilities(self, loaded: LoadedCase) -> np.ndarray:
        """(C, *S) class probabilities of one case on its input grid."""
        self._check_names(loaded)
        if has_enhancing_class(self.convention) or is_whole_tumour(self.convention):
            warn_if_not_skull_stripped(loaded)  # a brain run; a neck scan is never stripped
        pre = preprocess(loaded, self.settings_for(loaded))
        image, available = self.channels(pre.image, pre.modalities)
        prob = sliding_window_probabilities(self.method, image, available, self.infer,
                                            self.roi_size, bf16=self.bf16)
        return invert_probabilities(prob[0].cpu().numpy(), pre.record)

    def predict_loaded(self, loaded: LoadedCase, *, probabilities: bool = False,
                       convention: LabelConvention | None = None) -> PredictionResult:
        """Segment one case whose modalities (by name) are a subset of the run's.

        The case is preprocessed with the run's settings; the probabilities are inverted onto
        the input grid, then argmax, the ET rule (brain conventions only) and the raw values
        of `convention` (default: the run's).
        """
        prob = self.probabilities(loaded)
        canonical = prob.argmax(0).astype(np.uint8)
        before = canonical
        if has_enhancing_class(self.convention):  # counted on the input grid, like BraTS peers
            threshold = et_rule_threshold(self.infer.et_min_voxels, loaded.shape, loaded.spacing)
            canonical = postprocess_et(canonical, threshold)
        out = convention or self.convention
        return PredictionResult(
            loaded.case_id, out.to_raw(canonical, dtype=_raw_dtype(out)), canonical,
            loaded.affine, loaded.header, tuple(loaded.modalities),
            prob if probabilities else None, int((before != canonical).sum()))

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


SPACING_RATIO_WARNING = 2.0
BACKGROUND_SHARE_STRIPPED = 0.25  # skull-stripped BraTS-like scans: ~80 % background voxels


def _mm(spacing) -> str:
    return "x".join(f"{s:.3g}" for s in spacing) + " mm"


def warn_if_not_skull_stripped(loaded: LoadedCase) -> None:
    """Warn when the first image has almost no constant background: the methods learnt from
    skull-stripped scans, whose brain sits in a zero background."""
    image = loaded.image[0]
    background = max(float((image == 0).mean()), float((image == image.min()).mean()))
    if background < BACKGROUND_SHARE_STRIPPED:
        warnings.warn(f"{loaded.sources.get(loaded.modalities[0], loaded.case_id)}: does not "
                      f"look skull-stripped ({100 * background:.0f} % background voxels; "
                      "stripped scans have most): strip it first (HD-BET, SynthStrip)",
                      ContrasegWarning, stacklevel=2)


def probabilities_path(out_path: str | Path) -> Path:
    """Where the probabilities of the label map `out_path` go: <stem>_probabilities.nii.gz, a
    4D float32 image (X, Y, Z, C) with the classes in the run's order."""
    out_path = Path(out_path)
    return out_path.with_name(f"{strip_nifti_suffix(out_path.name)}_probabilities.nii.gz")


def cross_validation_folds(run: str | Path) -> list[Path] | None:
    """The fold folders of a cross-validation root (fold-K/run.json, no run.json of its own),
    or None for any other path; refused unless every fold finished training."""
    run = Path(run)
    if not run.is_dir() or (run / "run.json").is_file():
        return None
    infos = sorted(run.glob("fold-*/run.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if not infos:
        return None
    unfinished = [f"{p.parent.name} {status}" for p in infos
                  if (status := json.loads(p.read_text()).get("status")) != "finished"]
    if unfinished:
        raise InputError(run, f"not every fold finished ({', '.join(unfinished)}): the "
                              "ensemble needs them all; give one fold's folder to use it alone")
    return [p.parent for p in infos]


@dataclass
class FoldEnsemble(Predictor):
    """The folds of a cross-validation as one predictor: the mean of their class
    probabilities on the input grid (nnU-Net's ensembling), then argmax and the ET rule."""

    members: list[Predictor] = field(default_factory=list)

    @classmethod
    def of(cls, members: list[Predictor]) -> FoldEnsemble:
        first = members[0]
        for member in members[1:]:
            if (member.modalities, member.convention.to_dict(), member.preprocess) != (
                    first.modalities, first.convention.to_dict(), first.preprocess):
                raise InputError(member.source, "this fold's modalities, labels or "
                                                "preprocessing differ from the first fold's")
        shared = {f.name: getattr(first, f.name) for f in dataclass_fields(Predictor)}
        shared["source"] = (f"the mean of {len(members)} folds "
                            f"({'; '.join(m.source for m in members)})")
        return cls(**shared, members=members)

    def override(self, changes: Mapping[str, object]) -> None:
        super().override(changes)
        for member in self.members:
            member.override(changes)

    def probabilities(self, loaded: LoadedCase) -> np.ndarray:
        return np.mean([member.probabilities(loaded) for member in self.members], axis=0)
