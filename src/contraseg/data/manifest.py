"""Datasets described by a contraseg.json manifest: the modalities, the label convention and each
case's files (listed, or by pattern)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from contraseg.data.cases import CaseSpec, DatasetSpec, ImageRef
from contraseg.data.labels import (
    LabelConvention,
    custom_convention,
    get_convention,
)
from contraseg.errors import ConfigError, InputError


def read_manifest(path: Path) -> DatasetSpec:
    """Read a `contraseg.json` manifest.

    ```json
    {"modalities": ["stir", "t1", "t2"],
     "labels": "brats2020"  or  {"classes": {"1": "tumour"}, "regions": {"TUMOUR": [1]}},
     "root": ".",
     "files": {"images": {"stir": "{case}/stir.nii.gz", ...}, "label": "{case}/seg.nii.gz"},
     "cases": ["p001", "p002"]  or  [{"id": "p001", "images": {...}, "label": "..."}]}
    ```
    Paths are relative to `root`, itself relative to the manifest's folder. `files` patterns apply
    to cases given by id; a case given as an object lists its own files. `brain_mask` and `extras`
    (name -> path) are optional in both forms.
    """
    data = read_json(path)
    base = (path.parent / data.get("root", ".")).resolve()
    modalities = tuple(str(m).lower() for m in data.get("modalities", ()))
    if not modalities:
        raise InputError(path, "manifest lists no 'modalities'")
    patterns = data.get("files", {})
    cases = []
    for entry in data.get("cases", []):
        if isinstance(entry, str):
            entry = _case_from_patterns(entry, patterns, path)
        cases.append(_manifest_case(entry, modalities, base, path))
    if not cases and patterns:
        raise InputError(path, "manifest has 'files' patterns but no 'cases' ids")
    return DatasetSpec(base, "manifest", modalities, _manifest_convention(data, path), cases,
                       [f"manifest {path}"])


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    return data


def _case_from_patterns(case_id: str, patterns: Mapping, path: Path) -> dict:
    if "images" not in patterns:
        raise InputError(path, f"case '{case_id}' is given by id but 'files' has no 'images'")
    fill = lambda p: p.replace("{case}", case_id)  # noqa: E731
    entry = {"id": case_id, "images": {m: fill(p) for m, p in patterns["images"].items()}}
    for key in ("label", "brain_mask"):
        if key in patterns:
            entry[key] = fill(patterns[key])
    entry["extras"] = {k: fill(p) for k, p in patterns.get("extras", {}).items()}
    return entry


def _manifest_case(entry: Mapping, modalities: tuple[str, ...], base: Path, path: Path) -> CaseSpec:
    if "id" not in entry or "images" not in entry:
        raise InputError(path, f"each case needs 'id' and 'images' (got {sorted(entry)})")
    files = {str(m).lower(): base / p for m, p in entry["images"].items()}
    unknown = sorted(set(files) - set(modalities))
    if unknown:
        raise InputError(path, f"case {entry['id']}: modalities {unknown} are not in 'modalities'")
    images = {m: ImageRef(files[m]) for m in modalities if m in files and files[m].is_file()}
    missing = {m: files.get(m, base / "?") for m in modalities if m not in images}
    optional = lambda key: base / entry[key] if entry.get(key) else None  # noqa: E731
    extras = {k: base / p for k, p in entry.get("extras", {}).items()}
    return CaseSpec(str(entry["id"]), images, optional("label"), optional("brain_mask"), extras,
                    missing)


def _manifest_convention(data: Mapping, path: Path) -> LabelConvention | None:
    spec = data.get("labels")
    if spec is None:
        return None
    try:
        if isinstance(spec, str):
            return get_convention(spec)
        classes = {int(k): v for k, v in spec["classes"].items()}
        return custom_convention(classes, spec.get("regions"), spec.get("name", "custom"))
    except (ConfigError, KeyError, ValueError, TypeError) as exc:
        raise InputError(path, f"bad 'labels' entry: {exc}") from None


# --- MSD and nnU-Net ---------------------------------------------------------------------------
