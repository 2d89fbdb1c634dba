"""Fingerprints of short runs: has a change altered any number?

For every built-in method: a short run of its `tiny` preset on a brain phantom (seeded, one
thread), the SHA-256 of every weight tensor of its last checkpoint, and for the segmenters the
SHA-256 of the labels it predicts for two phantom cases from every modality subset. Two
checkouts that give the same JSON train to bit-identical weights and predict bit-identical
labels (a refactoring must; a change of recipe must not).

Usage: OMP_NUM_THREADS=1 python scripts/fingerprint_runs.py OUT.json [--methods unet,...]
       then: diff before.json after.json (or cmp)
Uses only the public API (contraseg.engine.runs.start_training, contraseg.Segmenter), so the
same script fingerprints older checkouts: PYTHONPATH=OLD/src python scripts/fingerprint_runs.py
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

SETTINGS = ["epochs=2", "iters_per_epoch=3", "val_every=0", "log.curves=false",
            "log.tensorboard=false", "data.workers=0"]
METHODS = ["unet", "rfnet", "dc-seg", "dcl-manet", "clfc", "swin-moco", "introvae",
           "swin-moco-pretrain"]


def digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def fingerprint(method: str, data: Path, work: Path) -> dict:
    import nibabel as nib

    from contraseg import Segmenter
    from contraseg.engine.runs import start_training

    run = work / method
    start_training(run, method=method, data=[data], preset="tiny", overrides=SETTINGS,
                   resume=False, max_steps=None, max_minutes=None, console=None)
    state = torch.load(run / "checkpoints" / "last.pt", map_location="cpu",
                       weights_only=False)["model"]
    out = {"weights": {key: digest(value.float().numpy()) for key, value in state.items()}}
    try:
        segmenter = Segmenter(run, which="last", device="cpu")
    except Exception:  # generators and pre-training stages do not segment
        return out
    labels = {}
    for case in sorted(data.iterdir())[:2]:
        files = {m: nib.load(case / f"{case.name}-{suffix}.nii.gz")
                 for m, suffix in (("t1", "t1n"), ("t1c", "t1c"), ("t2", "t2w"),
                                   ("flair", "t2f"))}
        images = {m: f.get_fdata(dtype=np.float32) for m, f in files.items()}
        affine = files["t1"].affine
        for size in range(1, 5):
            for subset in itertools.combinations(("t1", "t1c", "t2", "flair"), size):
                result = segmenter.predict({m: images[m] for m in subset}, affine)
                labels[f"{case.name}/{'+'.join(subset)}"] = digest(result.labels)
    out["labels"] = labels
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    from contraseg.data.phantom import write_phantom

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ph"
        write_phantom(data, cases=4, size=32, seed=3)
        prints = {m: fingerprint(m, data, Path(tmp) / "runs")
                  for m in args.methods.split(",")}
    args.out.write_text(json.dumps(prints, indent=1, sort_keys=True))
    print(f"wrote {args.out}: {len(prints)} methods")


if __name__ == "__main__":
    main()
