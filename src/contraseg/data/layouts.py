"""Discover the cases of a dataset folder, whatever its layout.

Recognised, in this order:
- a manifest `contraseg.json` (any dataset: parotid, WMH, ...; see `read_manifest`),
- MSD Task01 (`dataset.json` + 4D `imagesTr/*.nii.gz` + `labelsTr`),
- nnU-Net raw, v1 or v2 (`dataset.json` + `imagesTr/<case>_0000.nii.gz` ... + `labelsTr`),
- BraTS 2023+ (`<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`, labels 1/2/3),
- BraTS 2018-2021 (`<case>/<case>_{flair,t1,t1ce,t2,seg}.nii[.gz]`, labels 1/2/4),
- any other folder of case folders (or a single case folder) whose file names say which modality
  they hold (`Flair_subtrMeanDivStd`, `<case>_fla_bet`, `t1c.nii.gz`, ...): the `folders` layout.

Nothing is read but file names and dataset.json, except in the `folders` layout without a given
convention, where a few label files are read to infer it (BraTS 2015 vs 2020 vs 2023 values).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from contraseg.data.cases import CaseSpec, DatasetSpec, ImageRef
from contraseg.data.labels import (
    LabelConvention,
    convention_from_names,
    convention_from_nested_regions,
    get_convention,
    infer_convention,
    label_values,
)
from contraseg.data.manifest import read_json, read_manifest
from contraseg.errors import ConfigError, InputError

MANIFEST_NAME = "contraseg.json"
CANONICAL_ORDER = ("t1", "t1c", "t2", "flair")
NIFTI_SUFFIXES = (".nii.gz", ".nii")

# file-name tokens -> canonical modality (BraTS 2015-2023, TCGA/BrainLesion, MSD, nnU-Net names)
MODALITY_SYNONYMS: dict[str, str] = {
    **dict.fromkeys(("t1", "t1n", "t1w", "t1native", "native"), "t1"),
    **dict.fromkeys(("t1c", "t1ce", "t1gd", "t1post", "t1contrast", "t1wce", "gd", "t1km"), "t1c"),
    **dict.fromkeys(("t2", "t2w"), "t2"),
    **dict.fromkeys(("flair", "fla", "t2f", "t2flair"), "flair"),
}
# other MRI contrasts recognised in file names; they keep their own names (parotid: stir, t1, t2;
# CLFC's in-house data: b0, md, fa)
OTHER_MODALITIES = ("stir", "pd", "dwi", "adc", "swi", "b0", "md", "fa")
MODALITY_SYNONYMS.update({name: name for name in OTHER_MODALITIES})
LABEL_TOKENS = frozenset(
    {"seg", "segmentation", "label", "labels", "gt", "truth", "groundtruth", "otmulticlass",
     "fusion", "annotation", "annot"}
)
BRAIN_MASK_TOKENS = frozenset({"brainmask", "mask"})
BRATS2023_SUFFIXES = {"t1n": "t1", "t1c": "t1c", "t2w": "t2", "t2f": "flair"}
BRATS2020_SUFFIXES = {"t1": "t1", "t1ce": "t1c", "t2": "t2", "flair": "flair"}


def discover(
    root: str | Path, *, labels: str | None = None, manifest: str | Path | None = None
) -> DatasetSpec:
    """Find the cases under `root` (or those listed in `manifest`).

    `labels` overrides the label convention the layout implies (a name from
    `contraseg.data.labels.CONVENTIONS`).
    """
    root = Path(root)
    if manifest is not None:
        spec = read_manifest(Path(manifest))
    elif not root.exists():
        raise InputError(root, "no such folder")
    elif not root.is_dir():
        raise InputError(root, "is a file; give the dataset folder")
    elif (root / MANIFEST_NAME).is_file():
        spec = read_manifest(root / MANIFEST_NAME)
    elif (root / "dataset.json").is_file() and (root / "imagesTr").is_dir():
        spec = _discover_decathlon(root)
    else:
        spec = _discover_case_folders(root)
    if not spec.cases:
        raise InputError(root, "no cases found (expected BraTS, MSD, nnU-Net, a contraseg.json "
                               "manifest, or case folders of NIfTI files named by modality)")
    if labels is not None:
        spec.convention = get_convention(labels)
        spec.notes.append(f"label convention {labels} given by the user")
    elif spec.convention is None:
        spec.convention = _infer_from_label_files(spec)
    return spec


def canonical_modality(name: str) -> str:
    """`T1ce` -> `t1c`, `FLAIR` -> `flair`; other names (`STIR`) stay, lower-cased."""
    key = re.sub(r"[\s_\-+.]", "", name.lower())
    return MODALITY_SYNONYMS.get(key, name.lower())


def order_modalities(names: Iterable[str]) -> tuple[str, ...]:
    """Canonical brain modalities first in t1, t1c, t2, flair order; other names after, sorted."""
    names = set(names)
    known = [m for m in CANONICAL_ORDER if m in names]
    return (*known, *sorted(names - set(known)))


def is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.endswith(NIFTI_SUFFIXES) and not path.name.startswith(".")


def strip_nifti_suffix(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


# --- manifest ----------------------------------------------------------------------------------

def _discover_decathlon(root: Path) -> DatasetSpec:
    meta = read_json(root / "dataset.json")
    channels = meta.get("channel_names") or meta.get("modality") or {}
    if not channels:
        raise InputError(root / "dataset.json", "has neither 'channel_names' nor 'modality'")
    modalities = tuple(canonical_modality(channels[k]) for k in sorted(channels, key=int))
    convention = _decathlon_convention(meta.get("labels", {}), root / "dataset.json")
    split_files = [p for p in sorted((root / "imagesTr").iterdir()) if is_nifti(p)]
    split = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")
    if "channel_names" in meta or any(split.match(strip_nifti_suffix(p.name)) for p in split_files):
        cases = _nnunet_cases(root, modalities, meta, split)
        layout = "nnunet"
    else:
        cases = _msd_cases(root, modalities, split_files)
        layout = "msd"
    order = ", ".join(f"{i}={m}" for i, m in enumerate(modalities))
    return DatasetSpec(root, layout, modalities, convention, cases,
                       [f"{layout} layout; channel order from dataset.json: {order}"])


def _decathlon_convention(labels: Mapping, path: Path) -> LabelConvention | None:
    if not labels:
        return None
    try:
        if all(str(k).lstrip("-").isdigit() for k in labels):  # MSD / nnU-Net v1: {"1": "edema"}
            return convention_from_names({int(k): v for k, v in labels.items()})
        if any(isinstance(v, list) for v in labels.values()):  # nnU-Net v2 region-based
            return convention_from_nested_regions(labels)
        return convention_from_names({int(v): k for k, v in labels.items()})  # {"edema": 1}
    except (ValueError, TypeError, ConfigError) as exc:
        raise InputError(path, f"cannot read 'labels' ({exc})") from None


def _msd_cases(root: Path, modalities: tuple[str, ...], files: list[Path]) -> list[CaseSpec]:
    cases = []
    for image in files:
        case_id = strip_nifti_suffix(image.name)
        label = root / "labelsTr" / image.name
        refs = {m: ImageRef(image, channel=i) for i, m in enumerate(modalities)}
        cases.append(CaseSpec(case_id, refs, label if label.is_file() else None))
    return cases


def _nnunet_cases(root: Path, modalities: tuple[str, ...], meta: Mapping, split: re.Pattern
                  ) -> list[CaseSpec]:
    ending = meta.get("file_ending", ".nii.gz")
    ids = sorted({m["case"] for p in (root / "imagesTr").iterdir()
                  if (m := split.match(strip_nifti_suffix(p.name))) and not p.name.startswith(".")})
    cases = []
    for case_id in ids:
        expected = {m: root / "imagesTr" / f"{case_id}_{i:04d}{ending}"
                    for i, m in enumerate(modalities)}
        images = {m: ImageRef(p) for m, p in expected.items() if p.is_file()}
        missing = {m: p for m, p in expected.items() if not p.is_file()}
        label = root / "labelsTr" / f"{case_id}{ending}"
        cases.append(CaseSpec(case_id, images, label if label.is_file() else None,
                              missing=missing))
    return cases


# --- folders of cases: BraTS 2023, BraTS 2018-2021 and anything named by modality ----------------

def _discover_case_folders(root: Path) -> DatasetSpec:
    folders = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    folders = [p for p in folders if any(is_nifti(f) for f in p.iterdir())]
    if not folders and any(is_nifti(f) for f in root.iterdir()):
        if (flat := _flat_one_modality(root)) is not None:
            return flat
        folders = [root]  # the folder is itself one case
    for layout, suffixes, sep, convention in (
        ("brats2023", BRATS2023_SUFFIXES, "-", "brats2023"),
        ("brats2020", BRATS2020_SUFFIXES, "_", "brats2020"),
    ):
        if folders and all(_has_brats_files(f, suffixes, sep) for f in folders):
            cases = [_brats_case(f, suffixes, sep) for f in folders]
            return DatasetSpec(root, layout, order_modalities(suffixes.values()),
                               get_convention(convention), cases, [f"{layout} file naming"])
    return _folders_by_name(root, folders)


def _flat_one_modality(root: Path) -> DatasetSpec | None:
    """A flat folder of files that all hold one modality (IXI's `IXI002-Guys-0828-T1.nii.gz`
    ...): one unlabelled case per file, named without its modality token; None otherwise."""
    files = [p for p in sorted(root.iterdir()) if is_nifti(p)]
    roles = {classify_file(p.name) for p in files}
    if len(files) < 2 or len(roles) != 1 or roles & {None, "label", "brain_mask"}:
        return None
    modality = roles.pop()
    cases = [CaseSpec(without_modality_token(strip_nifti_suffix(p.name)),
                      {modality: ImageRef(p)}) for p in files]
    if len({c.case_id for c in cases}) != len(cases):
        return None
    return DatasetSpec(root, "flat", (modality,), None, cases,
                       [f"flat folder: one {modality} file per case (IXI's layout)"])


def without_modality_token(stem: str) -> str:
    """A file stem without its trailing modality token: `IXI002-Guys-0828-T1` ->
    `IXI002-Guys-0828`, `case_flair` -> `case`; other stems (and a bare `t1`) as they are."""
    last = re.split(r"[-_.]", stem)[-1]
    head = stem[: -len(last)].rstrip("-_.")
    return head if head and last.lower() in MODALITY_SYNONYMS else stem


def _has_brats_files(folder: Path, suffixes: Mapping[str, str], sep: str) -> bool:
    """At least two modality files named `<folder><sep><suffix>` (one missing file is allowed)."""
    names = {strip_nifti_suffix(p.name) for p in folder.iterdir() if is_nifti(p)}
    return sum(f"{folder.name}{sep}{s}" in names for s in suffixes) >= 2


def _brats_case(folder: Path, suffixes: Mapping[str, str], sep: str) -> CaseSpec:
    def find(stem: str) -> Path | None:
        for suffix in NIFTI_SUFFIXES:
            if (p := folder / f"{folder.name}{sep}{stem}{suffix}").is_file():
                return p
        return None

    images, missing = {}, {}
    for raw, modality in sorted(suffixes.items(), key=lambda kv: CANONICAL_ORDER.index(kv[1])):
        path = find(raw)
        if path is None:
            missing[modality] = folder / f"{folder.name}{sep}{raw}.nii.gz"
        else:
            images[modality] = ImageRef(path)
    extras = {"normal_t1": p} if (p := find("normal-t1n")) else {}
    return CaseSpec(folder.name, images, find("seg"), None, extras, missing)


def _tokens(file_name: str, case_id: str) -> list[str]:
    stem = strip_nifti_suffix(file_name)
    if stem.lower().startswith(case_id.lower()) and stem.lower() != case_id.lower():
        stem = stem[len(case_id):]
    return [t for t in re.split(r"[\s_\-.]+", stem.lower()) if t]


def classify_file(file_name: str, case_id: str = "") -> str | None:
    """What a file holds from its name: 'label', 'brain_mask', a canonical modality, or None."""
    tokens = _tokens(file_name, case_id)
    joined = "".join(tokens)
    if LABEL_TOKENS & set(tokens):
        return "label"
    if BRAIN_MASK_TOKENS & set(tokens) or "brainmask" in joined:
        return "brain_mask"
    found = {MODALITY_SYNONYMS[t] for t in tokens if t in MODALITY_SYNONYMS}
    if len(found) == 1:
        return found.pop()
    return None


def _modality_rank(path: Path, case_id: str) -> int:
    """Position in t1, t1c, t2, flair order of the modality a file names (others last)."""
    found = [MODALITY_SYNONYMS[t] for t in _tokens(path.name, case_id) if t in MODALITY_SYNONYMS]
    known = [CANONICAL_ORDER.index(m) for m in found if m in CANONICAL_ORDER]
    return known[0] if known else len(CANONICAL_ORDER)


def _folders_by_name(root: Path, folders: list[Path]) -> DatasetSpec:
    notes, found = ["folders layout: modalities recognised from file names"], []
    for folder in folders:
        roles: dict[str, list[Path]] = {}
        for path in sorted(p for p in folder.iterdir() if is_nifti(p)):
            role = classify_file(path.name, folder.name)
            if role is None:
                notes.append(f"{path}: ignored (no modality, label or mask in its name)")
                continue
            roles.setdefault(role, []).append(path)
        if len(masks := roles.get("brain_mask", [])) > 1:  # per-modality masks (IXI): keep one
            roles["brain_mask"] = [min(masks, key=lambda p: _modality_rank(p, folder.name))]
            notes.append(f"{folder}: several brain masks, using {roles['brain_mask'][0].name}")
        for role, paths in roles.items():
            if len(paths) > 1:
                raise InputError(folder, f"several files look like {role}: "
                                         f"{', '.join(p.name for p in paths)}; use a manifest")
        found.append((folder, {r: p[0] for r, p in roles.items()}))
    modalities = order_modalities(
        {r for _, roles in found for r in roles} - {"label", "brain_mask"}
    )
    cases = []
    for folder, roles in found:
        images = {m: ImageRef(roles[m]) for m in modalities if m in roles}
        missing = {m: folder / f"<{m}>.nii.gz" for m in modalities if m not in roles}
        cases.append(CaseSpec(folder.name, images, roles.get("label"), roles.get("brain_mask"),
                              missing=missing))
    return DatasetSpec(root, "folders", modalities, None, [c for c in cases if c.images], notes)


def _infer_from_label_files(spec: DatasetSpec, max_files: int = 3) -> LabelConvention | None:
    """Read up to `max_files` label files and guess the BraTS convention from their values."""
    labelled = [c.label for c in spec.cases if c.label is not None][:max_files]
    if not labelled:
        return None
    values: set[int] = set()
    for path in labelled:
        try:
            values |= {int(v) for v in label_values(np.asanyarray(nib.load(path).dataobj))}
        except Exception as exc:  # noqa: BLE001 - unreadable files are reported by `data check`
            spec.notes.append(f"{path}: could not be read to infer the label convention ({exc})")
    name = infer_convention(values)
    if name is None:
        spec.notes.append(f"label values {sorted(values)} match no known convention; "
                          "pass --labels or use a manifest")
        return None
    spec.notes.append(f"label convention {name} inferred from values {sorted(values)} "
                      f"of {len(labelled)} label file(s)")
    return get_convention(name)
