"""The data of a training run: every case discovered, split (or held out by a fold),
preprocessed once into the case cache, and any per-case inputs the method derives (CLFC's
pseudo-normals) computed once.

A generator (IntroVAE) learns normal appearance from healthy T1: `normal_t1_case` picks, per
case, the phantom's tumour-free T1 (`-normal-t1n`, the `normal_t1` extra) when there is one,
else the case's T1: a healthy subject's scan (e.g. IXI), or the slices of a labelled tumour case
that hold no tumour (the trainer samples only those).
"""

from __future__ import annotations

# settings a resumed run may change (a section, or one key of it: workers change no batch)
import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from rich.console import Console

from contraseg.data.cache import CaseCache
from contraseg.data.cases import CaseSpec, ImageRef
from contraseg.data.labels import LabelConvention, whole_tumour
from contraseg.data.layouts import discover, order_modalities
from contraseg.data.patches import Case
from contraseg.data.preprocess import PreprocessSettings, reoriented_spacing
from contraseg.data.splits import keyed_split, load_split
from contraseg.data.train_case import common_convention, to_train_case
from contraseg.engine.config import TrainConfig
from contraseg.engine.folds import fold_split, split_cases
from contraseg.errors import InputError
from contraseg.models.base import Method, MethodKind
from contraseg.utils.fs import atomic_path

GENERATOR_MODALITIES = ("t1",)


@dataclass
class TrainData:
    modalities: tuple[str, ...]
    convention: LabelConvention | None  # None for a generator (unlabelled healthy brains)
    preprocess: PreprocessSettings
    train: list[Case]
    val: list[Case]
    split: dict[str, list[str]] = field(default_factory=dict)
    spacing: tuple[float, ...] | None = None  # median voxel size of the training scans (mm)


def normal_t1_case(case: CaseSpec, keep_label: bool = True) -> CaseSpec | None:
    """The case reduced to one healthy T1: the `normal_t1` extra (unlabelled), else its T1 with
    its label when it has one and `keep_label` (the trainer then samples only the slices that
    hold no tumour: `PatchSampler(tumour_free=True)`); None when it has no T1."""
    if "normal_t1" in case.extras:
        return replace(case, images={"t1": ImageRef(case.extras["normal_t1"])}, label=None,
                       extras={}, missing={})
    if "t1" not in case.images:
        return None
    return replace(case, images={"t1": case.images["t1"]},
                   label=case.label if keep_label else None, extras={}, missing={})


def preprocess_settings(config: TrainConfig) -> PreprocessSettings:
    spacing = config.data.target_spacing
    return PreprocessSettings(orientation=config.data.orientation,
                              crop_to_brain=config.data.crop_to_brain,
                              target_spacing=tuple(spacing) if spacing else None)


def prepare_data(config: TrainConfig, data_dirs: list[Path], cache_dir: Path,
                 split: dict[str, list[str]] | None = None, console: Console | None = None,
                 *, kind: MethodKind = MethodKind.SEGMENTATION, fold: tuple[int, int] | None = None
                 ) -> TrainData:
    """Discover, split and preprocess (cached) every labelled case of every data folder; for a
    "generator" `kind`, every case's healthy T1 instead (`normal_t1_case`);
    for "pretraining", every case, labelled or not, all for training. `fold` (k, n):
    cross-validation fold k of n, whose cases are held out (split["test"]); `config.split`: a
    published split's parts, matched to the cases by case ID (its test part held out)."""
    specs = [discover(d, labels=config.data.labels) for d in data_dirs]
    if kind is MethodKind.PRETRAINING:
        convention = None
        modalities = order_modalities({m for s in specs for m in s.modalities})
        keyed = {f"{s.root.name}/{c.case_id}": (replace(c, label=None), s) for s in specs
                 for c in s.cases}
        if not keyed:
            raise InputError(data_dirs[0], "no case to pre-train on")
        split = split or {"train": sorted(keyed), "val": []}
    elif kind is MethodKind.GENERATOR:
        convention, modalities = None, GENERATOR_MODALITIES
        keyed = {f"{s.root.name}/{c.case_id}": (normal, s) for s in specs for c in s.cases
                 if (normal := normal_t1_case(c, s.convention is not None)) is not None}
        if not keyed:
            raise InputError(data_dirs[0], "no case with a T1 (or a phantom normal T1) to "
                                           "train the generator on")
    else:
        convention = common_convention(specs)
        if config.data.whole_tumour:
            convention = whole_tumour(convention)
        modalities = order_modalities({m for s in specs for m in s.modalities})
        keyed = {f"{s.root.name}/{c.case_id}": (c, s) for s in specs for c in s.cases
                 if c.label is not None}
        if not keyed:
            raise InputError(data_dirs[0], "no labelled case to train on")
    if split is None and config.split is not None:
        split = keyed_split(load_split(config.split), keyed, data_dirs[0])
    elif split is None and fold is not None:
        split = fold_split(sorted(keyed), *fold, config.data.val_fraction, config.seed)
    elif split is None:
        train_ids, val_ids = split_cases(sorted(keyed), config.data.val_fraction, config.seed)
        split = {"train": train_ids, "val": val_ids}
    settings = preprocess_settings(config)
    cache = CaseCache(cache_dir, image_dtype=config.data.cache_dtype)
    load = lambda key: to_train_case(*keyed[key], modalities, cache, settings,  # noqa: E731
                                     resample_to=config.data.resample_to, seed=config.seed,
                                     whole_tumour_only=config.data.whole_tumour)
    if console:
        console.print(f"preparing {len(keyed)} cases ({len(split['train'])} train, "
                      f"{len(split['val'])} validation) on modalities {', '.join(modalities)}")
    return TrainData(modalities, convention, settings, [load(k) for k in split["train"]],
                     [load(k) for k in split["val"]], split,
                     median_spacing([keyed[k][0] for k in split["train"]], settings))


def median_spacing(cases: list[CaseSpec], settings: PreprocessSettings
                   ) -> tuple[float, ...] | None:
    """The median voxel size of the cases' first images along the axes after reorientation
    (headers only); what a run that keeps the scans' own spacing expects at inference."""
    spacings = [reoriented_spacing(nib.load(next(iter(case.images.values())).path).affine,
                                   settings.orientation) for case in cases if case.images]
    return tuple(float(v) for v in np.median(spacings, axis=0)) if spacings else None


def add_case_inputs(method: Method, cases: list[Case], cache_dir: Path) -> None:
    """Compute each case's `case_inputs` once (on the method's device) and keep it with the
    case. Files in `cache_dir/case-inputs`, keyed by the method's fingerprint and the case's
    `content_key`, let a later run (another fold, another seed) read them back; for a case read
    from the case cache that key is its entry, so such a run reads none of the images."""
    fingerprint = method.case_inputs_fingerprint()
    if fingerprint is None:
        return
    folder = Path(cache_dir) / "case-inputs"
    folder.mkdir(parents=True, exist_ok=True)
    device = next(method.parameters()).device
    for case in cases:
        digest = hashlib.sha1(fingerprint.encode())
        digest.update(case.content_key().encode())
        path = folder / f"{digest.hexdigest()}.npy"
        if not path.is_file():
            image = torch.from_numpy(np.ascontiguousarray(case.image))[None].to(device)
            present = torch.from_numpy(case.present)[None].to(device)
            with torch.inference_mode():
                values = method.case_inputs(image, present)
            with atomic_path(path) as tmp:  # ranks may race: each writes its own, then renames
                np.save(tmp, values[0].float().cpu().numpy())
        case.attach_inputs(path)
