"""Build src/contraseg/evaluation/paper_tables/*.json: the papers' reported tables, as data.

Read from the papers' texts (the folder ../shared/papers beside the checkout: DC-Seg's Table 1,
BraTS 2020 over the 15 modality subsets, and Table 3, WMH; CLFC's Table 1), with the table,
the protocol the paper states, and every figure as printed (percent for Dice). Tables the text
garbles (DC-Seg's Table 2 loses which component each ablation row removes) are left out and
named in the file's notes. DCL-MANet's and Swin-MoCo's texts here are abstracts: no table.

RFNet's averages come from its authors' README (dyh127/RFNet at a fixed commit, a fetched
mirror: MIRRORS/dyh127+RFNet/repo): the paper itself was not available here, and the README
gives the 15-subset averages only.

Usage: python scripts/paper_tables.py PAPERS MIRRORS [--out src/contraseg/evaluation/paper_tables]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

DCSEG_TEXT = "002_e2a1c6fef9f31f80.txt"
CLFC_TEXT = "003_f53233e155c27487.txt"
COLUMNS = ("flair", "t1", "t1c", "t2")  # DC-Seg's Table 1 column order: F, T1, T1c, T2
CANONICAL = ("t1", "t1c", "t2", "flair")
REGIONS = ("WT", "TC", "ET")  # the paper's Complete, Core, Enhancing


def subset_name(marks: list[str]) -> str:
    present = {m for m, mark in zip(COLUMNS, marks, strict=True) if mark == "bullet"}
    return "+".join(m for m in CANONICAL if m in present)


def dcseg_brats2020(text: str) -> dict:
    start = text.index("Table 1: Results of the proposed method")
    lines = text[start:].splitlines()[3:]
    methods = ("RobustSeg", "RFNet", "mmFormer", "M3AE", "DC-Seg")
    cells: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
    for line in lines:
        if line.startswith("Average"):
            break
        marks = re.findall(r"\\(bullet|circ)", line)
        values = [float(v) for v in re.findall(r"\d+\.\d+", line)]
        if len(marks) != 4 or len(values) != 15:
            raise SystemExit(f"DC-Seg Table 1: cannot read the row {line[:60]!r}")
        subset = subset_name(marks)
        for r, region in enumerate(REGIONS):
            for m, method in enumerate(methods):
                cells[method].setdefault(subset, {})[region] = values[5 * r + m]
    average = [float(v) for v in re.findall(r"\d+\.\d+", line)]
    return {
        "name": "dc-seg-brats2020",
        "paper": "DC-Seg (Li, Li, Mao, Ding, Huang, 2025)",
        "table": "Table 1",
        "dataset": "BraTS 2020",
        "split": "rfnet-brats2020",
        "metric": "dice",
        "unit": "percent",
        "protocol": ("Dice of each of the 15 modality subsets on the test part of RFNet's "
                     "BraTS 2020 split (219 / 50 / 100), regions Complete (WT), Core (TC), "
                     "Enhancing (ET); the other methods' figures are taken from their papers "
                     "('directly reference the results'); post-processing not stated"),
        "kind": "subsets",
        "own_method": "DC-Seg",
        "methods": cells,
        "average": {method: dict(zip(REGIONS, average[m::5], strict=True))
                    for m, method in enumerate(methods)},
        "notes": ["Table 2 (ablation) is not kept: the text available here loses which "
                  "component each row removes."],
    }


def dcseg_wmh(text: str) -> dict:
    start = text.index("Table 3: Results of WMH Segmentation")
    rows = text[start:].splitlines()[3:6]
    methods = ("RobustSeg", "RFNet", "mmFormer", "DC-Seg")
    cells: dict[str, dict[str, dict[str, float]]] = {m: {} for m in methods}
    for row in rows:
        marks = re.findall(r"\\(bullet|circ)", row)
        values = [float(v) for v in re.findall(r"\d+\.\d+", row)]
        present = {m for m, mark in zip(("flair", "t1"), marks, strict=True) if mark == "bullet"}
        subset = "+".join(m for m in ("t1", "flair") if m in present)
        for m, method in enumerate(methods):
            cells[method][subset] = {"WMH": values[m]}
    return {"name": "dc-seg-wmh", "paper": "DC-Seg (Li, Li, Mao, Ding, Huang, 2025)",
            "table": "Table 3", "dataset": "SAHZU-WMH (private: 60 training, 20 test scans)",
            "split": None, "metric": "dice", "unit": "percent",
            "protocol": "Dice of white-matter hyperintensities from FLAIR and T1 subsets",
            "kind": "subsets", "own_method": "DC-Seg", "methods": cells, "notes": []}


def clfc_table1(text: str) -> dict:
    start = text.index("Table 1. Evaluation results of tumor segmentation.")
    rows = text[start:].splitlines()[4:8]
    cells = {}
    for row in rows:
        name, *fields = row.split("\t")
        pairs = [tuple(float(x) for x in f.split("±")) for f in fields]
        keys = ("dice", "sensitivity", "hd95")
        cells[name.strip()] = {"in-house": {k: {"mean": m, "sd": s}
                                            for k, (m, s) in zip(keys, pairs[:3], strict=True)},
                               "brats2019": {k: {"mean": m, "sd": s}
                                             for k, (m, s) in zip(keys, pairs[3:], strict=True)}}
    return {"name": "clfc", "paper": "CLFC (Liu et al., MICCAI 2022)", "table": "Table 1",
            "dataset": "BraTS 2019 (335 patients) and an in-house set (104 GBM patients)",
            "split": "clfc-brats2019", "metric": "dice, sensitivity, hd95",
            "unit": "percent (Dice, sensitivity), mm (HD95)",
            "protocol": ("five-fold patient-wise cross-validation, the tumour as one region "
                         "(mean ± SD over patients); every modality"),
            "kind": "overall", "own_method": "Ours", "methods": cells,
            "notes": ["Baseline-1: no normal appearance network; Baseline-2: no contrastive "
                      "learning"]}


RFNET = ("dyh127/RFNet", "1e475fa5de4ac3f41f8de3d3102bb8b28383c2c4")


def rfnet_brats2018(mirrors: Path) -> dict:
    """The BraTS 2018 averages of RFNet's README (the mean over its three splits)."""
    readme = subprocess.run(["git", "-C", str(mirrors / "dyh127+RFNet" / "repo"), "show",
                             f"{RFNET[1]}:README.md"], capture_output=True, text=True,
                            check=True).stdout
    section = readme[readme.index("### Brats2018"):readme.index("### Brats2015")]
    averages = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"\d+\.\d+", cells[1]):
            name = cells[0].replace(" (Ours)", "")
            averages[name] = dict(zip(REGIONS, (float(c) for c in cells[1:]), strict=True))
    return {"name": "rfnet-brats2018", "paper": "RFNet (Ding, Yu, Yang, ICCV 2021)",
            "table": "the authors' README (averages; the paper's tables give every subset)",
            "source": f"https://github.com/{RFNET[0]}/blob/{RFNET[1]}/README.md",
            "dataset": "BraTS 2018", "split": "rfnet-brats2018", "metric": "dice",
            "unit": "percent",
            "protocol": ("the mean over the 15 modality subsets, averaged over RFNet's three "
                         "splits (199 / 29 / 57 each); Complete (WT), Core (TC), Enhancing (ET)"),
            "kind": "average", "own_method": "RFNet", "methods": averages,
            "notes": ["The per-subset figures of the paper could not be read here."]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("papers", type=Path)
    parser.add_argument("mirrors", type=Path)
    here = Path(__file__).resolve().parents[1]
    parser.add_argument("--out", type=Path,
                        default=here / "src/contraseg/evaluation/paper_tables")
    args = parser.parse_args()
    dcseg = (args.papers / DCSEG_TEXT).read_text()
    clfc = (args.papers / CLFC_TEXT).read_text()
    args.out.mkdir(parents=True, exist_ok=True)
    for table in (dcseg_brats2020(dcseg), dcseg_wmh(dcseg), clfc_table1(clfc),
                  rfnet_brats2018(args.mirrors)):
        path = args.out / f"{table['name']}.json"
        path.write_text(json.dumps(table, indent=1) + "\n")
        print(f"{path}: {', '.join(table['methods'])}")


if __name__ == "__main__":
    main()
