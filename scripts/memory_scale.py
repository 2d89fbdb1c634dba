"""Peak memory of `contraseg train` as the dataset grows: the same training, N cases each.

Usage:
    python scripts/memory_scale.py --out OUT --cache CACHE [--steps 50] [--workers 0]
        [--method unet] [--preset fast] [--src SRC] DATA [DATA ...]

Each DATA folder is trained on for `--steps` steps (validation off), all runs sharing one cache
folder, so the first run preprocesses and the others read it. While a run lasts its process
tree (the trainer and its loader workers) is sampled every 0.1 s; the JSON printed and written
to OUT/memory.json gives, per folder: cases, wall seconds, the tree's peak RSS (summed) and PSS
(shared pages split), and the trainer's own peak (run.json). `--src` runs another checkout's
package (its `src` folder), to measure the code before a change the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from contraseg.utils.memory import TreePeak


def measure(data: Path, run: Path, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve())
    command = [sys.executable, "-m", "contraseg", "train", "--method", args.method,
               "--preset", args.preset, "--data", str(data), "--out", str(run),
               "--max-steps", str(args.steps), "--set", "val_every=0",
               "--set", f"data.cache_dir={Path(args.cache).resolve()}"]
    if args.workers:
        command += ["--set", f"data.workers={args.workers}"]
    tick = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    with TreePeak(process.pid) as peak:
        _, stderr = process.communicate()
    if process.returncode:
        raise SystemExit(f"{data}: training failed:\n{stderr[-2000:]}")
    info = json.loads((run / "run.json").read_text())
    return {"data": str(data), "cases": sum(len(v) for v in info["split"].values()),
            "steps": info["step"], "workers": args.workers, "seconds": time.monotonic() - tick,
            "peak_tree_rss_mb": peak.peak and peak.peak["rss"],
            "peak_tree_pss_mb": peak.peak and peak.peak["pss"],
            "trainer_peak_rss_mb": (info.get("memory") or {}).get("peak_rss_mb")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--method", default="unet")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--src", help="a checkout's src folder to run instead")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for data in args.data:
        rows.append(measure(data, args.out / f"run-{data.name}-w{args.workers}", args))
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "memory.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
