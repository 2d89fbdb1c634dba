"""Where segmenting a real case spends its time, stage by stage, and which labels it makes.

Stages: reading the files, the run's preprocessing, the network's sliding-window pass (its
flips included), the way back to the input grid and the ET rule; with --subsets all, one pass
over the 15 modality subsets and their 15 label maps, as `contraseg evaluate` makes them. Also
`contraseg predict`'s own path for one case end to end (reading to the written file), and the
time to import the package in a fresh interpreter. Medians of --repeats passes per case after
one warm-up pass. Every label map is hashed (SHA-1 of the array; the written file's too), so
the JSON files of two commits show whether a speed-up changed a single voxel: --against
OTHER.json prints the ratio of each stage's median (OTHER / this) and whether every hash is
equal.

With --no-crop the cases are not cropped to the brain first: what cropping saves (the windows
of air it leaves out; the labels differ, since the grid does).

Usage: python scripts/profile_predict.py RUN DATA [--cases 3] [--repeats 3] [--subsets one|all]
           [--threads N] [--no-crop] [--json FILE] [--against FILE]
  e.g. python scripts/profile_predict.py bench/unet/run shared/data/real/brats2018 --json a.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

IMPORT = "import contraseg.engine.predictor, contraseg.engine.evaluate"


def digest(labels: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(labels).tobytes()).hexdigest()[:16]


def to_labels():
    """The function that puts probabilities back as labels (an older commit named it
    differently: this script times both sides of a change)."""
    from contraseg.data import preprocess
    from contraseg.engine import predictor

    found = getattr(preprocess, "labels_from_probabilities", None)
    return found or predictor.labels_on_input_grid


def staged(predictor, case, subsets) -> tuple[dict[str, float], list[str]]:
    """One pass, stage by stage: seconds per stage and the label maps' hashes."""
    from contraseg.data.io import load_case
    from contraseg.data.preprocess import preprocess
    from contraseg.engine.et_rule import et_rule_threshold, postprocess_et
    from contraseg.engine.sliding_window import sliding_window_probabilities
    from contraseg.evaluation.protocol import availability

    seconds, start = {}, time.perf_counter()

    def mark(stage: str) -> None:
        nonlocal start
        now = time.perf_counter()
        seconds[stage], start = now - start, now

    loaded = load_case(case, with_label=False)
    mark("read")
    pre = preprocess(loaded, predictor.settings_for(loaded))
    image, _ = predictor.channels(pre.image, pre.modalities)
    mark("preprocess")
    rows = torch.tensor([availability(s, predictor.modalities) for s in subsets])
    prob = sliding_window_probabilities(predictor.method, image, rows, predictor.infer,
                                        predictor.roi_size, bf16=predictor.bf16).cpu().numpy()
    mark("network")
    labels = [to_labels()(p, pre.record) for p in prob]
    mark("to_input_grid")
    threshold = et_rule_threshold(predictor.infer.et_min_voxels, loaded.shape, loaded.spacing,
                                  predictor.convention)
    labels = [postprocess_et(one, threshold) for one in labels]
    mark("et_rule")
    seconds["total"] = sum(seconds.values())
    return seconds, [digest(one) for one in labels]


def end_to_end(predictor, case, folder: Path) -> tuple[float, str]:
    """`contraseg predict`'s path for one case: seconds and the written labels' hash."""
    import nibabel as nib

    start = time.perf_counter()
    path = predictor.predict_case(case, folder / f"{case.case_id}.nii.gz")
    seconds = time.perf_counter() - start
    return seconds, digest(np.asarray(nib.load(path).dataobj))


def import_seconds(repeats: int) -> float:
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); "
                              f"{IMPORT}; print(time.perf_counter() - t)"],
                             capture_output=True, text=True, check=True)
        times.append(float(out.stdout))
    return statistics.median(times)


def profile(args) -> dict:
    from contraseg.data.layouts import discover
    from contraseg.engine.predictor import Predictor
    from contraseg.evaluation.protocol import all_subsets

    predictor = Predictor.from_run(args.run, "last", "cpu")
    if args.no_crop:  # the whole input grid, air included: what cropping to the brain saves
        predictor.preprocess = replace(predictor.preprocess, crop_to_brain=False)
    full = tuple(predictor.modalities)
    subsets = all_subsets(full) if args.subsets == "all" else [full]
    cases = discover(args.data).cases[:args.cases]
    result = {"run": str(args.run), "subsets": len(subsets), "threads": torch.get_num_threads(),
              "repeats": args.repeats, "import_seconds": import_seconds(args.repeats), "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            case = case.present_only()
            runs = [staged(predictor, case, subsets) for _ in range(args.repeats + 1)][1:]
            seconds = {stage: statistics.median(r[0][stage] for r in runs) for stage in runs[0][0]}
            entry = {"seconds": seconds, "labels": runs[0][1]}
            if args.subsets == "one":
                ends = [end_to_end(predictor, case, Path(tmp)) for _ in range(args.repeats + 1)]
                seconds["predict"] = statistics.median(e[0] for e in ends[1:])
                entry["labels"] = [*entry["labels"], ends[0][1]]
            result["cases"][case.case_id] = entry
            print(case.case_id, ", ".join(f"{k} {v:.2f} s" for k, v in seconds.items()),
                  flush=True)
    return result


def against(this: dict, other: dict) -> None:
    """Ratios OTHER / THIS per stage (medians over the shared cases) and the label check."""
    shared = [c for c in this["cases"] if c in other["cases"]]
    print(f"\n{len(shared)} cases; OTHER / THIS (above 1: this is faster)")
    for key in this["cases"][shared[0]]["seconds"]:
        pairs = [(other["cases"][c]["seconds"][key], this["cases"][c]["seconds"][key])
                 for c in shared if key in other["cases"][c]["seconds"]]
        if pairs:
            print(f"  {key}: {statistics.median(a / b for a, b in pairs):.2f}x "
                  f"({statistics.median(a for a, _ in pairs):.2f} s -> "
                  f"{statistics.median(b for _, b in pairs):.2f} s)")
    same = all(this["cases"][c]["labels"] == other["cases"][c]["labels"] for c in shared)
    print(f"  labels identical in every case and subset: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--subsets", choices=["one", "all"], default="one")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--no-crop", action="store_true",
                        help="do not crop to the brain (its labels differ: a timing only)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--against", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = profile(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.against:
        against(result, json.loads(args.against.read_text()))


if __name__ == "__main__":
    main()
