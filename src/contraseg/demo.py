"""`contraseg demo`: the whole loop on the synthetic phantom, end to end.

Generate -> check -> preprocess (cached) -> segment -> write back on the input grid -> score.
Until the training engine exists, the segmenter is `threshold_segmentation`, an intensity rule
that exercises every other step; it is a placeholder, not one of the methods.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from contraseg.data.cache import CaseCache
from contraseg.data.check import check_dataset
from contraseg.data.io import save_nifti
from contraseg.data.layouts import discover
from contraseg.data.phantom import write_phantom
from contraseg.data.preprocess import PreprocessSettings, invert_labels
from contraseg.errors import ContrasegError
from contraseg.evaluation.score import score_files
from contraseg.utils.fs import atomic_path
from contraseg.utils.jsonio import dumps
from contraseg.utils.progress import progress_bar


def threshold_segmentation(image: np.ndarray, modalities: tuple[str, ...]) -> np.ndarray:
    """Canonical classes from z-scored T1, T1c and FLAIR by fixed thresholds.

    Whole tumour = FLAIR more than 1.5 SD above the brain mean; inside it, enhancing where T1c
    exceeds T1 by more than 1.5 SD, necrosis where T1c is more than 1 SD below the mean, edema
    elsewhere. Only meant to show the pipeline working on the phantom.
    """
    z = {m: image[modalities.index(m)] for m in ("t1", "t1c", "flair")}
    tumour = z["flair"] > 1.5
    labels = np.where(tumour, 2, 0).astype(np.uint8)
    labels[tumour & (z["t1c"] < -1.0)] = 1
    labels[tumour & (z["t1c"] - z["t1"] > 1.5)] = 3
    return labels


def run_demo(out: Path, *, cases: int, size: int, seed: int, console: Console) -> dict:
    """Run every step into `out`; returns (and writes to out/scores.json) the scores."""
    data_dir = out / "phantom"
    with progress_bar(console=console) as bar:
        task = bar.add_task("1/3 phantom", total=cases)
        write_phantom(data_dir, cases=cases, size=size, seed=seed, overwrite=True,
                      progress=lambda _: bar.advance(task))
    spec = discover(data_dir)
    report = check_dataset(spec)
    if report.problems:
        raise ContrasegError(f"the generated phantom failed its check: {report.problems[0]}")
    console.print(f"checked {len(report.cases)} cases: {spec.layout} layout, modalities "
                  f"{', '.join(spec.modalities)}, labels {spec.convention.name}")

    cache, settings = CaseCache(out / "cache"), PreprocessSettings()
    per_case = {}
    with progress_bar(console=console) as bar:
        task = bar.add_task("2/3 segment", total=len(spec.cases))
        for case in spec.cases:
            prep = cache.load_or_compute(case, settings)
            canonical = invert_labels(threshold_segmentation(prep.image, prep.modalities),
                                      prep.record)
            pred_path = out / "predictions" / f"{case.case_id}.nii.gz"
            save_nifti(spec.convention.to_raw(canonical), prep.record.original_affine, pred_path,
                       dtype=np.uint8)
            per_case[case.case_id] = str(pred_path)
            bar.advance(task)
    with progress_bar(console=console) as bar:
        task = bar.add_task("3/3 score", total=len(spec.cases))
        scores = {}
        for case in spec.cases:
            scores[case.case_id] = score_files(per_case[case.case_id], case.label,
                                               labels=spec.convention.name)["regions"]
            bar.advance(task)
    summary = _summarise(scores)
    _print_summary(summary, console)
    result = {"method": "threshold (placeholder)", "cases": scores, "mean": summary}
    with atomic_path(out / "scores.json") as tmp:
        tmp.write_text(dumps(result))
    console.print(f"predictions in {out / 'predictions'}, scores in {out / 'scores.json'}")
    return result


def _summarise(scores: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    regions = next(iter(scores.values()))
    return {
        region: {metric: float(np.mean([s[region][metric] for s in scores.values()]))
                 for metric in ("dice", "hd95", "sensitivity", "precision")}
        for region in regions
    }


def _print_summary(summary: dict[str, dict[str, float]], console: Console) -> None:
    table = Table(title="threshold placeholder on the phantom (mean over cases)")
    table.add_column("region")
    for metric in ("dice", "hd95 (vox)", "sensitivity", "precision"):
        table.add_column(metric, justify="right")
    for region, m in summary.items():
        table.add_row(region, *(f"{m[k]:.3f}" for k in ("dice", "hd95", "sensitivity",
                                                         "precision")))
    console.print(table)

