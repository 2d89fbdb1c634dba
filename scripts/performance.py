"""The performance table of the docs for this machine: `contraseg bench` of every method's
`cpu` preset, kept as evidence in results/performance/<machine>-<date>.json (the machine's
processor, cores, torch, the date, and each method's bench JSON).

Each method is timed in its own process, one after another (nothing else should run on the
machine meanwhile): a training step (median of --repeats) in the precision and layout `amp:
auto` picks, as the `cpu` preset trains; one 240 x 240 x 155 case with all four modalities and
with all 15 subsets in one pass (against its FLOP floor); achieved FLOP/s against the peak of a
matrix product and a 3D convolution timed in the same bench. `python scripts/results_tables.py`
then writes one table per file into docs/performance.md.

Usage: python scripts/performance.py [--out results/performance] [--repeats 3]
           [--methods unet rfnet ...] [--device auto]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METHODS = ("unet", "rfnet", "dc-seg", "dcl-manet", "clfc", "swin-moco")


def processor() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        if match:
            return match.group(1).strip()
    return platform.processor() or platform.machine()


def machine() -> dict:
    import torch

    return {"processor": processor(), "cores": len(os.sched_getaffinity(0)),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(),
            "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def bench(method: str, repeats: int, device: str) -> dict:
    command = [sys.executable, "-m", "contraseg", "bench", "--method", method, "--preset", "cpu",
               "--device", device, "--amp", "auto", "--repeats", str(repeats), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "performance")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    facts = machine()
    today = datetime.date.today().isoformat()
    results = {}
    for method in args.methods:
        print(f"bench {method} ...", file=sys.stderr, flush=True)
        results[method] = bench(method, args.repeats, args.device)
    record = {"date": today, "machine": facts, "command": "contraseg bench --method M "
              f"--preset cpu --device {args.device} --amp auto --repeats {args.repeats} --json",
              "methods": results}
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{slug(facts['cuda_device'] or facts['processor'])}-{facts['cores']}-cores-{today}"
    path = args.out / f"{name}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(path)


if __name__ == "__main__":
    main()
