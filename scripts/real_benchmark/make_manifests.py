"""Write the two manifests of the real-scan benchmark's fixed split: OUT/train/contraseg.json
and OUT/test/contraseg.json, each listing its cases of the BraTS 2018 folder (read in place,
never copied).

Usage: python scripts/real_benchmark/make_manifests.py BRATS2018_DIR OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SPLIT = Path(__file__).with_name("brats2018_split.json")
FILES = {"flair": "{case}/{case}_flair.nii.gz", "t1": "{case}/{case}_t1.nii.gz",
         "t1c": "{case}/{case}_t1ce.nii.gz", "t2": "{case}/{case}_t2.nii.gz"}


def main(brats: Path, out: Path) -> None:
    split = json.loads(SPLIT.read_text())
    missing = [c for part in ("train", "test") for c in split[part]
               if not (brats / c / f"{c}_seg.nii.gz").is_file()]
    if missing:
        sys.exit(f"{brats}: missing case(s) {', '.join(missing)} of {SPLIT}")
    for part in ("train", "test"):
        manifest = {"root": str(brats.resolve()), "modalities": list(FILES),
                    "labels": "brats2020",
                    "files": {"images": FILES, "label": "{case}/{case}_seg.nii.gz"},
                    "cases": split[part]}
        folder = out / part
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "contraseg.json"
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        tmp.replace(target)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
