"""Segmenting with a trained run: `Predictor` (one run's network) and `FoldEnsemble` (the
folds of a cross-validation). Probabilities go back to the input grid (crop, resampling and
reorientation undone: data.preprocess); engine.case_segmenter does the rest.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from contraseg.data.io import LoadedCase
from contraseg.data.labels import LabelConvention, is_whole_tumour
from contraseg.data.preprocess import (
    GridRecord,
    PreprocessSettings,
    invert_probabilities,
    labels_from_probabilities,
    preprocess,
    reoriented_spacing,
)
from contraseg.engine.case_segmenter import CaseSegmenter
from contraseg.engine.checkpoint import describe_checkpoint, load_method
from contraseg.engine.config import InferConfig, config_from_dict, infer_config
from contraseg.engine.distributed import resolve_device
from contraseg.engine.et_rule import has_enhancing_class
from contraseg.engine.folds import cross_validation_folds
from contraseg.engine.input_checks import (
    SPACING_RATIO_WARNING,
    format_mm,
    warn_if_not_skull_stripped,
)
from contraseg.engine.sliding_window import sliding_window_probabilities
from contraseg.errors import ContrasegWarning, InputError
from contraseg.models.base import Method, MethodKind


@dataclass
class Predictor(CaseSegmenter):
    """A trained method with everything needed to use it: modality names (channel order),
    label convention, preprocessing, window size and inference settings (the file and folder
    side: CaseSegmenter)."""

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
                 *, infer: InferConfig | None = None, bf16: bool = False,
                 overrides: Mapping[str, object] | None = None) -> Predictor | FoldEnsemble:
        """Load a run folder (its `which` checkpoint) or a checkpoint file. `infer` replaces
        the run's inference settings; `overrides` changes some of them (None values keep the
        run's: the options of predict and evaluate). A cross-validation folder (`train
        --folds`) gives the ensemble of its folds (`FoldEnsemble`)."""
        if (folds := cross_validation_folds(run)) is not None:
            return FoldEnsemble([cls.from_run(fold, which, device, infer=infer, bf16=bf16,
                                                 overrides=overrides) for fold in folds])
        method, meta = load_method(run, which, resolve_device(str(device)))
        if method.kind is not MethodKind.SEGMENTATION:
            use = {MethodKind.GENERATOR: "`contraseg normal` uses it",
                   MethodKind.PRETRAINING: "fine-tune from it: `contraseg train --init RUN`"}
            raise InputError(meta.get("path", run), f"is a {method.kind} run "
                             f"({meta['method']}), not a segmenter; "
                             f"{use.get(method.kind, 'it cannot segment')}")
        config = config_from_dict(meta["config"])
        spacing = meta.get("training_spacing")
        predictor = cls(method, tuple(meta["modalities"]),
                        LabelConvention.from_dict(meta["label_convention"]),
                        PreprocessSettings.from_dict(meta["preprocess"]),
                        tuple(int(n) for n in config.data.patch_size), infer or config.infer,
                        bf16, describe_checkpoint(meta), tuple(spacing) if spacing else None)
        predictor.override(overrides or {})
        return predictor

    def override(self, changes: Mapping[str, object]) -> None:
        """Replace the run's inference settings named in `changes` (None: keep the run's);
        values are type-checked like `--set infer.KEY=VALUE`."""
        given = {key: value for key, value in changes.items() if value is not None}
        if given:
            self.infer = infer_config({**asdict(self.infer), **given})

    @property
    def method_name(self) -> str:
        return self.method.name

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
        seen = (f"{loaded.case_id}: voxels of {format_mm(spacing)} differ {ratio:.1f}x from "
                "the run's ")
        if self.preprocess.target_spacing is not None:
            warnings.warn(seen + f"{format_mm(reference)} grid; resampled to it, but detail the "
                          "scan never had cannot come back", ContrasegWarning, stacklevel=2)
            return self.preprocess
        warnings.warn(seen + f"training scans ({format_mm(reference)}); resampled to that spacing",
                      ContrasegWarning, stacklevel=2)
        return replace(self.preprocess, target_spacing=tuple(reference))

    def _preprocessed_probabilities(self, loaded: LoadedCase) -> tuple[np.ndarray, GridRecord]:
        """(C, *S') class probabilities of one case on the preprocessed grid, and the record
        that maps that grid back to the input's."""
        self._check_names(loaded)
        if has_enhancing_class(self.convention) or is_whole_tumour(self.convention):
            warn_if_not_skull_stripped(loaded)  # a brain run; a neck scan is never stripped
        pre = preprocess(loaded, self.settings_for(loaded))
        image, available = self.channels(pre.image, pre.modalities)
        prob = sliding_window_probabilities(self.method, image, available, self.infer,
                                            self.roi_size, bf16=self.bf16)
        return prob[0].cpu().numpy(), pre.record

    def probabilities(self, loaded: LoadedCase) -> np.ndarray:
        """(C, *S) class probabilities of one case on its input grid."""
        return invert_probabilities(*self._preprocessed_probabilities(loaded))

    def labels_and_probabilities(self, loaded: LoadedCase, probabilities: bool = False
                                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Canonical labels on the input grid (`labels_from_probabilities`, as evaluate), and the
        probabilities there when asked."""
        prob, record = self._preprocessed_probabilities(loaded)
        return (labels_from_probabilities(prob, record),
                invert_probabilities(prob, record) if probabilities else None)


class FoldEnsemble(CaseSegmenter):
    """The folds of a cross-validation as one segmenter: the mean of their class
    probabilities on the input grid (nnU-Net's ensembling), then argmax and the ET rule. It
    has one network per fold (`members`), none of its own."""

    def __init__(self, members: list[Predictor]):
        first = members[0]
        for member in members[1:]:
            if (member.modalities, member.convention.to_dict(), member.preprocess) != (
                    first.modalities, first.convention.to_dict(), first.preprocess):
                raise InputError(member.source, "this fold's modalities, labels or "
                                                "preprocessing differ from the first fold's")
        self.members = members
        self.modalities, self.convention = first.modalities, first.convention
        self.source = (f"the mean of {len(members)} folds "
                       f"({'; '.join(m.source for m in members)})")

    @property
    def infer(self) -> InferConfig:
        return self.members[0].infer

    @property
    def method_name(self) -> str:
        return self.members[0].method_name

    def override(self, changes: Mapping[str, object]) -> None:
        for member in self.members:
            member.override(changes)

    def probabilities(self, loaded: LoadedCase) -> np.ndarray:
        return np.mean([member.probabilities(loaded) for member in self.members], axis=0)

    def labels_and_probabilities(self, loaded: LoadedCase, probabilities: bool = False
                                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """The folds may resample a case differently (each its own training spacing): their
        probabilities are averaged on the input grid."""
        prob = self.probabilities(loaded)
        return prob.argmax(0).astype(np.uint8), prob if probabilities else None
