"""A disk cache of preprocessed cases, as .npy files keyed by their inputs and settings.

An entry is `<cache_dir>/<case_id>-<key16>/` holding image.npy, mask.npy, label.npy (when the
case has a label) and record.json. Entries are written atomically, so a folder that exists is
complete. The key covers each input file's absolute path, size and modification time (and, on
request, a hash of its content), the preprocessing settings, `resample_to`, the image's
storage type and the package version: touching or rewriting an input, or changing a setting,
gives a new entry.

Training never loads an entry whole: `ensure` returns its folder and the training case
(`data.train_case.DiskCase`) maps the files a patch at a time. `image_dtype="float16"` stores the
image at half the bytes (z-scored values keep about three significant digits); readers
compute in float32.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from contraseg._version import __version__
from contraseg.data.cases import CaseSpec
from contraseg.data.io import load_case
from contraseg.data.preprocess import GridRecord, Preprocessed, PreprocessSettings, preprocess
from contraseg.utils.fs import atomic_dir

CACHE_FORMAT = 1
_ARRAYS = ("image", "mask", "label")
IMAGE_DTYPES = ("float32", "float16")


def _fingerprint(role: str, path: Path, channel: int | None, content_hash: bool) -> dict:
    path = Path(path).resolve()
    entry: dict = {"role": role, "path": str(path), "channel": channel}
    try:
        stat = path.stat()
    except OSError:
        return {**entry, "missing": True}  # load_case reports it when the entry is computed
    entry.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    if content_hash:
        with path.open("rb") as handle:
            entry["sha256"] = hashlib.file_digest(handle, "sha256").hexdigest()
    return entry


def _inputs(case: CaseSpec, content_hash: bool) -> list[dict]:
    inputs = [
        _fingerprint(modality, ref.path, ref.channel, content_hash)
        for modality, ref in case.images.items()
    ]
    for role, path in (("label", case.label), ("brain_mask", case.brain_mask)):
        if path is not None:
            inputs.append(_fingerprint(role, path, None, content_hash))
    inputs += [{"role": f"missing:{m}", "path": str(p)} for m, p in case.missing.items()]
    return inputs


def key_for(
    case: CaseSpec,
    settings: PreprocessSettings,
    *,
    resample_to: str | None = None,
    content_hash: bool = False,
    image_dtype: str = "float32",
) -> str:
    """The sha256 (hex) identifying a preprocessed case: inputs, settings, storage, version."""
    payload = {
        "format": CACHE_FORMAT,
        "version": __version__,
        "case_id": case.case_id,
        "inputs": _inputs(case, content_hash),
        "settings": settings.to_dict(),
        "resample_to": resample_to,
    }
    if image_dtype != "float32":  # only then, so that float32 entries keep their earlier keys
        payload["image_dtype"] = image_dtype
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _safe_name(case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", case_id).strip(".") or "case"


class CaseCache:
    """Preprocessed cases on disk: `load_or_compute` returns a hit or computes and stores it."""

    def __init__(
        self,
        cache_dir: str | Path,
        *,
        mmap_mode: str | None = None,
        content_hash: bool = False,
        image_dtype: str = "float32",
    ):
        if image_dtype not in IMAGE_DTYPES:
            raise ValueError(f"image_dtype {image_dtype!r}: expected one of {IMAGE_DTYPES}")
        self.cache_dir = Path(cache_dir)
        self.mmap_mode = mmap_mode  # e.g. "r": arrays stay on disk until used
        self.content_hash = content_hash
        self.image_dtype = image_dtype

    def key_for(
        self, case: CaseSpec, settings: PreprocessSettings, *, resample_to: str | None = None
    ) -> str:
        """The full key of a case (see the module function `key_for`)."""
        return key_for(case, settings, resample_to=resample_to, content_hash=self.content_hash,
                       image_dtype=self.image_dtype)

    def entry_dir(
        self, case: CaseSpec, settings: PreprocessSettings, *, resample_to: str | None = None
    ) -> Path:
        """Where the case's entry is (or would be) stored."""
        key = self.key_for(case, settings, resample_to=resample_to)
        return self.cache_dir / f"{_safe_name(case.case_id)}-{key[:16]}"

    def load_or_compute(
        self, case: CaseSpec, settings: PreprocessSettings, *, resample_to: str | None = None
    ) -> Preprocessed:
        """The cached preprocessed case, computed (load_case + preprocess) and stored on a miss;
        its image in the stored type either way."""
        entry = self.entry_dir(case, settings, resample_to=resample_to)
        hit = self._hit(entry, self.mmap_mode)
        if hit is not None:
            return hit
        result = self._compute(entry, case, settings, resample_to)
        return replace(result, image=result.image.astype(self.image_dtype, copy=False))

    def ensure(
        self, case: CaseSpec, settings: PreprocessSettings, *, resample_to: str | None = None
    ) -> Path:
        """The folder of the case's entry, computed and stored on a miss; a hit reads only the
        arrays' headers (memory-mapped, nothing loaded)."""
        entry = self.entry_dir(case, settings, resample_to=resample_to)
        if self._hit(entry, "r") is None:
            self._compute(entry, case, settings, resample_to)
        return entry

    def _hit(self, entry: Path, mmap_mode: str | None) -> Preprocessed | None:
        if not (entry / "record.json").is_file():
            return None
        try:
            return self._load(entry, mmap_mode)
        except (OSError, ValueError, KeyError):
            return None  # damaged by hand: the caller recomputes and replaces it

    def _compute(self, entry: Path, case: CaseSpec, settings: PreprocessSettings,
                 resample_to: str | None) -> Preprocessed:
        result = preprocess(load_case(case, resample_to=resample_to), settings)
        self._store(entry, result, settings, resample_to)
        return result

    def _load(self, entry: Path, mmap_mode: str | None) -> Preprocessed:
        meta = json.loads((entry / "record.json").read_text())
        arrays = {
            name: np.load(entry / f"{name}.npy", mmap_mode=mmap_mode, allow_pickle=False)
            for name in _ARRAYS
            if name != "label" or meta["has_label"]
        }
        return Preprocessed(
            case_id=meta["case_id"],
            modalities=tuple(meta["modalities"]),
            image=arrays["image"],
            label=arrays.get("label"),
            brain_mask=arrays["mask"],
            record=GridRecord.from_dict(meta["grid"]),
        )

    def _store(
        self,
        entry: Path,
        result: Preprocessed,
        settings: PreprocessSettings,
        resample_to: str | None,
    ) -> None:
        meta = {
            "format": CACHE_FORMAT,
            "case_id": result.case_id,
            "modalities": list(result.modalities),
            "has_label": result.label is not None,
            "settings": settings.to_dict(),
            "resample_to": resample_to,
            "grid": result.record.to_dict(),
            "image_dtype": self.image_dtype,
        }
        arrays = {"image": result.image.astype(self.image_dtype, copy=False),
                  "mask": result.brain_mask, "label": result.label}
        if self._hit(entry, "r") is not None:
            return  # another process (a DDP rank) stored it meanwhile: keep theirs, in use
        damaged = entry.exists()  # only a damaged entry is replaced
        try:
            with atomic_dir(entry, overwrite=damaged) as tmp:
                for name, array in arrays.items():
                    if array is not None:
                        np.save(tmp / f"{name}.npy", array, allow_pickle=False)
                (tmp / "record.json").write_text(json.dumps(meta, indent=1))
        except OSError:
            # another process stored the same entry first: theirs is as good as ours
            if not (entry / "record.json").is_file():
                raise
