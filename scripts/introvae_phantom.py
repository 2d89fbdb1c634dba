"""IntroVAE on the phantom (CLFC's normal-appearance network): does it learn normal brains, and
does it remove the tumour?

Trains `introvae` (fast preset unless overridden) on the tumour-free T1 of 12 training phantoms,
then on 4 held-out phantoms reports
- PSNR / SSIM of the reconstruction of each held-out NORMAL T1 (whole volume, z-scored units);
- inside the tumour, the mean |intensity - true normal T1| of the tumour T1 (the input) and of
  its pseudo-normal (`contraseg normal`): lower for the pseudo-normal means the tumour was
  pulled towards normal appearance; the same outside the tumour (inside the brain) shows what
  the reconstruction costs there;
- whether the output depends on its input (issue 16, point 6): outside the tumour, the error of
  each pseudo-normal against its OWN case's true normal T1 and against each OTHER test case's
  normal T1, on the voxels both brains hold (`input_dependence`; the same for the
  reconstructions of the normal T1). A generic brain that ignores its input scores the same
  against every case (a ratio own / other near 1); a faithful one scores well below 1.
Every volume is compared in z-scored units (z-score inside the normal brain's mask).

Usage: python scripts/introvae_phantom.py OUT [--set key=value ...]
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from contraseg.data.phantom import write_phantom
from contraseg.data.preprocess import compute_brain_mask, zscore
from contraseg.engine.normal_run import pseudo_normal
from contraseg.engine.runs import start_training
from contraseg.engine.validate import reconstruction_scores


def z(volume: np.ndarray, brain: np.ndarray) -> np.ndarray:
    return zscore(volume[None], brain)[0]


def input_dependence(outputs: list[np.ndarray], normals: list[np.ndarray],
                     regions: list[np.ndarray]) -> dict[str, float]:
    """For every ordered pair of cases i != j, on the voxels both regions hold: |output_i -
    normal_i| ("own"), |output_i - normal_j| ("other") and |normal_i - normal_j| ("between",
    how far apart the cases' true brains are: the scale a difference must be read on).
    Each is the mean over those voxels, averaged over the pairs."""
    own, other, between = [], [], []
    for i, j in itertools.permutations(range(len(outputs)), 2):
        both = regions[i] & regions[j]
        own.append(np.abs(outputs[i] - normals[i])[both].mean())
        other.append(np.abs(outputs[i] - normals[j])[both].mean())
        between.append(np.abs(normals[i] - normals[j])[both].mean())
    own_mean, other_mean = float(np.mean(own)), float(np.mean(other))
    return {"own": own_mean, "other": other_mean, "own_over_other": own_mean / other_mean,
            "between": float(np.mean(between))}


def main(out: Path, overrides: list[str]) -> None:
    train_dir, test_dir = out / "phantom-train", out / "phantom-test"
    if not train_dir.exists():
        write_phantom(train_dir, cases=12, size=64, seed=0)
        write_phantom(test_dir, cases=4, size=64, seed=10_000)
    if not (out / "run" / "checkpoints" / "last.pt").exists():
        start_training(out / "run", method="introvae", data=[train_dir], preset="fast",
                       overrides=overrides, resume=False, max_steps=None, max_minutes=None,
                       console=None)
    rows, volumes = [], []
    for case in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        normal_path = next(case.glob("*-normal-t1n.nii.gz"))
        t1_path = next(p for p in case.glob("*-t1n.nii.gz") if "normal" not in p.name)
        normal = nib.load(normal_path).get_fdata().astype(np.float32)
        brain = compute_brain_mask(normal[None])
        tumour = (nib.load(next(case.glob("*-seg.nii.gz"))).get_fdata() > 0) & brain
        rest = brain & ~tumour
        normal_z, t1_z = z(normal, brain), z(nib.load(t1_path).get_fdata(), brain)
        rec = nib.load(pseudo_normal(out / "run", normal_path, out / f"{case.name}-rec.nii.gz",
                                     device="cpu")).get_fdata()
        pseudo = nib.load(pseudo_normal(out / "run", t1_path, out / f"{case.name}-pn.nii.gz",
                                        device="cpu")).get_fdata()
        rows.append({
            "case": case.name, **reconstruction_scores(normal_z * brain, rec * brain),
            "tumour_input": float(np.abs(t1_z - normal_z)[tumour].mean()),
            "tumour_pseudo_normal": float(np.abs(pseudo - normal_z)[tumour].mean()),
            "brain_input": float(np.abs(t1_z - normal_z)[rest].mean()),
            "brain_pseudo_normal": float(np.abs(pseudo - normal_z)[rest].mean()),
        })
        volumes.append((normal_z, rec, pseudo, brain, rest))
    means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "case"}
    normals, recs, pseudos, brains, rests = (list(v) for v in zip(*volumes, strict=True))
    dependence = {"reconstruction_in_brain": input_dependence(recs, normals, brains),
                  "pseudo_normal_outside_tumour": input_dependence(pseudos, normals, rests)}
    print(json.dumps({"cases": rows, "mean": means, "input_dependence": dependence}, indent=2))


if __name__ == "__main__":
    args = sys.argv[1:]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    main(Path(args[0]), sets)
