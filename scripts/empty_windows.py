"""How many sliding windows of real cases hold no brain, per method and preset: the work a
skip of brain-free windows could save.

For each case and each (method, preset), the case is preprocessed as that preset predicts it
(its grid, with and without `crop_to_brain`), the windows MONAI's sliding window would run are
laid out (the preset's patch rounded to the method's size divisor, its overlap), and a window
counts as empty when every modality is zero in it (z-scored: zero is outside the brain).

Usage: python scripts/empty_windows.py DATA [--methods unet rfnet ...] [--presets cpu paper]
           [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

METHODS = ("unet", "rfnet", "dc-seg", "dcl-manet", "clfc", "swin-moco")


def window_slices(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> list:
    """The windows (tuples of slices) MONAI lays over an image of `shape` (padded to the
    window where smaller; a -1 in `roi` spans the whole axis)."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    roi = tuple(s if r == -1 else r for s, r in zip(shape, roi, strict=True))
    padded = tuple(max(s, r) for s, r in zip(shape, roi, strict=True))
    interval = _get_scan_interval(padded, roi, len(roi), (overlap,) * len(roi))
    return dense_patch_slices(padded, roi, interval)


def geometry(method: str, preset: str):
    """(preprocess settings, window, overlap) of a method's preset, as `predict` uses them."""
    from contraseg.engine.config import load_config
    from contraseg.engine.prepare import preprocess_settings
    from contraseg.engine.sliding_window import window_size
    from contraseg.models.registry import build_method

    # the window depends on the network's shape only: CLFC is built without its generator
    config = load_config(method, preset,
                         ["model.normal_network=false"] if method == "clfc" else [])
    built = build_method(method, ("t1", "t1c", "t2", "flair"), 4, config.model,
                         config.loss_weights)
    return (preprocess_settings(config), window_size(built, config.data.patch_size),
            float(config.infer.overlap))


def count(brain: np.ndarray, roi, overlap) -> dict:
    slices = window_slices(brain.shape, roi, overlap)
    empty = sum(not brain[tuple(s)].any() for s in slices)
    return {"grid": list(brain.shape), "windows": len(slices), "empty": int(empty)}


def main() -> None:
    from dataclasses import replace

    from contraseg.data.io import load_case
    from contraseg.data.layouts import discover
    from contraseg.data.preprocess import preprocess

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--presets", nargs="+", default=["cpu", "paper"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    setups = {(m, p): geometry(m, p) for m in args.methods for p in args.presets}
    rows = []
    for case in discover(args.data).cases:
        loaded, brains = load_case(case), {}
        for (method, preset), (settings, roi, overlap) in setups.items():
            for crop in (True, False):
                grid = replace(settings, crop_to_brain=crop)
                if repr(grid) not in brains:  # presets on the same grid share it
                    image = preprocess(loaded, grid).image
                    brains[repr(grid)] = np.any(image != 0, axis=0)  # what a skip would test
                found = count(brains[repr(grid)], roi, overlap)
                rows.append({"case": case.case_id, "method": method, "preset": preset,
                             "crop_to_brain": crop, "window": list(roi), "overlap": overlap,
                             **found})
        print(f"{case.case_id}: done", file=sys.stderr, flush=True)
    print("| method | preset | window | crop to brain | windows a case | empty (all cases) |")
    print("|---|---|---|---|---|---|")
    for (method, preset), (_, roi, _) in setups.items():
        for crop in (True, False):
            mine = [r for r in rows if (r["method"], r["preset"], r["crop_to_brain"]) == (
                method, preset, crop)]
            windows = [r["windows"] for r in mine]
            empty, total = sum(r["empty"] for r in mine), sum(windows)
            print(f"| {method} | {preset} | {'x'.join(map(str, roi))} | {crop} | "
                  f"{min(windows)}-{max(windows)} | {empty} of {total} "
                  f"({100 * empty / total:.0f} %) |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
