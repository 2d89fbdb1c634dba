"""`contraseg bench`: timings of the foundation pieces, as JSON (medians of several runs).

Speed targets are checked here, never in unit tests: the machines are shared and noisy, so each
figure is the median of `repeats` runs, and the raw runs are kept beside it.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from contraseg import __version__
from contraseg.data.labels import get_convention
from contraseg.data.layouts import discover
from contraseg.data.phantom import write_phantom
from contraseg.errors import ConfigError
from contraseg.evaluation.metrics import binary_metrics, confusion_counts, overlap_metrics

TARGETS = ("metrics", "phantom", "preprocess")


def _timed(func: Callable[[], object], repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        runs.append(time.perf_counter() - start)
    return {"median_s": statistics.median(runs), "runs_s": runs}


def _blob_pair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping tumour-sized blobs (about 1% of the volume), reproducible."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    centre = np.array(shape, dtype=np.float32)[:, None, None, None] / 2
    radius = np.sqrt(((grid - centre) ** 2).sum(0))
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 4) * 40
    size = 0.18 * min(shape)
    return radius + noise < size, radius - noise < size * 1.05


def bench_metrics(shape: tuple[int, int, int] = (240, 240, 155), repeats: int = 5) -> dict:
    """Dice alone and all metrics (with distances) of one region of a BraTS-sized pair."""
    pred, ref = _blob_pair(shape)
    spacing = (1.0, 1.0, 1.0)
    return {
        "shape": list(shape),
        "foreground_voxels": int(ref.sum()),
        "dice_one_region": _timed(lambda: overlap_metrics(confusion_counts(pred, ref)), repeats),
        "all_metrics_one_region": _timed(lambda: binary_metrics(pred, ref, spacing), repeats),
    }


def bench_phantom(cases: int = 8, size: int = 96, repeats: int = 3) -> dict:
    """Writing `cases` phantom subjects of `size`^3 (the `data phantom` default)."""
    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            write_phantom(Path(tmp) / "ph", cases=cases, size=size, seed=0)

    return {"cases": cases, "size": size, "write": _timed(run, repeats)}


def bench_preprocess(size: int = 96, repeats: int = 3) -> dict:
    """Reading, preprocessing and inverting one phantom case (no cache)."""
    from contraseg.data.io import load_case
    from contraseg.data.preprocess import PreprocessSettings, invert_labels, preprocess

    with tempfile.TemporaryDirectory() as tmp:
        write_phantom(Path(tmp) / "ph", cases=1, size=size, seed=0)
        case = discover(Path(tmp) / "ph").cases[0]
        loaded = load_case(case)
        prep = preprocess(loaded, PreprocessSettings())
        canonical = get_convention("brats2023").to_canonical(prep.label)
        return {
            "size": size,
            "load_case": _timed(lambda: load_case(case), repeats),
            "preprocess": _timed(lambda: preprocess(loaded, PreprocessSettings()), repeats),
            "invert_labels": _timed(lambda: invert_labels(canonical, prep.record), repeats),
        }


def run_bench(targets: list[str], repeats: int) -> dict:
    """Run the named targets; the result states the machine it ran on."""
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise ConfigError(f"unknown bench target(s) {unknown} (known: {', '.join(TARGETS)})")
    if repeats < 1:
        raise ConfigError("--repeats must be at least 1")
    runners = {"metrics": bench_metrics, "phantom": bench_phantom, "preprocess": bench_preprocess}
    return {
        "contraseg": __version__,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "numpy": np.__version__},
        "repeats": repeats,
        "results": {t: runners[t](repeats=repeats) for t in targets},
    }
