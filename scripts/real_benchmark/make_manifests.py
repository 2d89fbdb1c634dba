"""Write the manifests of the real-scan benchmark (files are read in place, never copied):
OUT/train/contraseg.json and OUT/test/contraseg.json, the fixed split of the BraTS 2018 folder
(brats2018_split.json); OUT/fit and OUT/val, the training cases without and with only the
inner validation cases (try_setting.sh); OUT/all, all 21 cases (the cross-validation of
scripts/real_cv.py); and OUT/normal/contraseg.json, the healthy IXI
subject's T1 (with its brain mask) that CLFC's normal-appearance network trains on beside the
tumour-free slices of the training cases.

Usage: python scripts/real_benchmark/make_manifests.py SHARED_DATA OUT
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

SPLIT = Path(__file__).with_name("brats2018_split.json")
BRATS_FILES = {"images": {"flair": "{case}/{case}_flair.nii.gz", "t1": "{case}/{case}_t1.nii.gz",
                          "t1c": "{case}/{case}_t1ce.nii.gz", "t2": "{case}/{case}_t2.nii.gz"},
               "label": "{case}/{case}_seg.nii.gz"}
IXI_FILES = {"images": {"t1": "{case}/IXI002-Guys-0828-T1_brain.nii.gz"},
             "brain_mask": "{case}/IXI002-Guys-0828-T1_brainmask.nii.gz"}


def manifest(root: Path, cases: list[str], files: dict, labels: str | None = None) -> dict:
    """A `contraseg.json` listing `cases` of `root` through the `files` patterns."""
    data = {"root": str(root.resolve()), "modalities": list(files["images"]), "files": files,
            "cases": list(cases)}
    return {**data, "labels": labels} if labels else data


def brats_split() -> dict[str, list[str]]:
    return json.loads(SPLIT.read_text())


def write(folder: Path, data: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "contraseg.json"
    tmp = target.with_suffix(f".json.{os.getpid()}.tmp")  # two scripts may write at once
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(target)


def main(shared: Path, out: Path) -> None:
    brats, split = shared / "real" / "brats2018", brats_split()
    missing = [c for part in ("train", "test") for c in split[part]
               if not (brats / c / f"{c}_seg.nii.gz").is_file()]
    if missing:
        sys.exit(f"{brats}: missing case(s) {', '.join(missing)} of {SPLIT}")
    inner = split["inner_validation"]
    parts = {"train": split["train"], "test": split["test"], "val": inner,
             "fit": [c for c in split["train"] if c not in inner],
             "all": sorted(split["train"] + split["test"])}
    for part, cases in parts.items():
        write(out / part, manifest(brats, cases, BRATS_FILES, "brats2020"))
    ixi = shared / "normal"
    if not (ixi / IXI_FILES["images"]["t1"].format(case="ixi002")).is_file():
        sys.exit(f"{ixi}: missing the healthy subject ixi002")
    write(out / "normal", manifest(ixi, ["ixi002"], IXI_FILES))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
