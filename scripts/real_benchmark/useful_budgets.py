"""Write the packaged minimum useful budgets (src/contraseg/configs/useful_budgets.json, shown
by `contraseg methods`) from an archived real-scan benchmark: each DEST/METHOD/curve.json
(scripts/real_benchmark/learning_curve.py) and the commit in DEST/METHOD/provenance.json.

Usage: python scripts/real_benchmark/useful_budgets.py DEST [--out FILE]
  e.g. python scripts/real_benchmark/useful_budgets.py results/real-brats2018
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGED = HERE.parent.parent / "src" / "contraseg" / "configs" / "useful_budgets.json"


def entry(method: Path) -> dict:
    curve = json.loads((method / "curve.json").read_text())
    useful, last = curve["useful"], curve["curve"][-1]
    provenance = method / "provenance.json"
    commit = json.loads(provenance.read_text()).get("commit") if provenance.is_file() else None
    return {"minutes": round(useful["minutes"], 1) if useful else None,
            "steps": useful["step"] if useful else None,
            "within_minutes": round(last["minutes"], 1), "score_at_end": round(last["score"], 4),
            "commit": commit}


def budgets(dest: Path) -> dict:
    curves = sorted(dest.glob("*/curve.json"))
    if not curves:
        raise SystemExit(f"{dest}: no METHOD/curve.json (run scripts/real_benchmark.sh and "
                         "archive.py first)")
    reference = json.loads(curves[0].read_text())["reference"]
    return {
        "about": "Training minutes (every stage) and segmenter steps of each method's cpu "
                 "preset, one thread, after which its mean Dice (WT, TC, ET; all four "
                 "modalities; the 5 test cases of the fixed BraTS 2018 split) reaches the plain "
                 "MONAI recipe's after 25 minutes on one thread; null: not within the run. "
                 "Written by scripts/real_benchmark/useful_budgets.py from "
                 f"{dest.name}; do not edit by hand.",
        "reference": {key: round(value, 4) for key, value in reference.items()},
        "methods": {curve.parent.name: entry(curve.parent) for curve in curves},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--out", type=Path, default=PACKAGED)
    args = parser.parse_args()
    args.out.write_text(json.dumps(budgets(args.dest), indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
