"""Build src/contraseg/data/split_lists/*.json: the published patient lists, from their sources.

Each list is read at a fixed commit of the repository that publishes it (fetched as a local git
mirror: MIRRORS/OWNER+NAME/repo), cleaned (line endings; RFNet's BraTS 2020 lists prefix every
ID with its grade, HG_ or LG_, which is stripped to the official case name) and written with its
source. Where a paper published no list, its file says so and holds no cases (nothing is
invented). BraTS 2023's five patient-wise folds are dealt here with a stated seed.

Usage: python scripts/published_splits.py MIRRORS [--out src/contraseg/data/split_lists]
  MIRRORS: a folder of mirrors as the project's `fetch` writes them (/work/.mirror), holding
  Jun-Jie-Shi+M2FTrans, kk42yy+DeMoSeg, AImageLab-zip+IM-Fuse.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

M2FTRANS = ("Jun-Jie-Shi/M2FTrans", "03a0b28ae03ad1a7dea5fb874c7b47c1439caa34")
DEMOSEG = ("kk42yy/DeMoSeg", "73cd4bbdcb3ec0c6fd352eb3c1811d5d2277503f")
IMFUSE = ("AImageLab-zip/IM-Fuse", "fbbd48eed03eb2aea3decb475d8918419d7d4c47")
RFNET = ("dyh127/RFNet", "1e475fa5de4ac3f41f8de3d3102bb8b28383c2c4")
FOLDS_SEED = 2023  # BraTS 2023's five folds: engine.folds.fold_of over patients, this seed


def read_list(mirrors: Path, repo: tuple[str, str], path: str) -> list[str]:
    """The non-empty lines of `path` at the commit, CR removed."""
    folder = mirrors / repo[0].replace("/", "+") / "repo"
    text = subprocess.run(["git", "-C", str(folder), "show", f"{repo[1]}:{path}"],
                          capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in text.replace("\r", "").splitlines() if line.strip()]


def source(repo: tuple[str, str], paths: list[str], note: str = "") -> dict:
    return {"repository": f"https://github.com/{repo[0]}", "commit": repo[1],
            "files": [f"https://github.com/{repo[0]}/blob/{repo[1]}/{p}" for p in paths],
            **({"note": note} if note else {})}


def rfnet_brats2018(mirrors: Path) -> dict:
    base = "BraTS/BRATS2018_Training_none_npy"
    folds, paths = [], []
    for k in (1, 2, 3):
        names = {part: f"{base}/{part}{k}.txt" for part in ("train", "val", "test")}
        paths += names.values()
        folds.append({"name": str(k), **{part: read_list(mirrors, M2FTRANS, path)
                                          for part, path in names.items()}})
    return {
        "name": "rfnet-brats2018",
        "title": "RFNet's three BraTS 2018 splits: 199 training, 29 validation, 57 test cases",
        "dataset": "BraTS 2018 training data: 285 cases (210 HGG, 75 LGG)",
        "id_pattern": r"^Brats18_(2013|CBICA|TCIA\d\d)_[A-Za-z0-9]+_1$",
        "counts": [199, 29, 57],
        "used_by": ["RFNet (Ding, Yu, Yang, ICCV 2021): the mean over the three splits",
                    "M2FTrans, DeMoSeg and later missing-modality papers (split 3 in RFNet's "
                    "train.py)"],
        "source": source(M2FTRANS, paths, (
            "RFNet's authors ship the lists only inside their preprocessed-data archives "
            f"(https://github.com/{RFNET[0]}/issues/4); M2FTrans redistributes them, and "
            f"{DEMOSEG[0]} at {DEMOSEG[1][:8]} holds byte-identical copies. The three splits "
            "are independent random draws, not folds: their test sets overlap.")),
        "folds": folds,
    }


def rfnet_brats2020(mirrors: Path) -> dict:
    base = "BraTS/BRATS2020_Training_none_npy"
    paths = {part: f"{base}/{part}.txt" for part in ("train", "val", "test")}
    grade = re.compile(r"^(HG|LG)_")
    fold = {part: [grade.sub("", case) for case in read_list(mirrors, M2FTRANS, path)]
            for part, path in paths.items()}
    return {
        "name": "rfnet-brats2020",
        "title": "RFNet's BraTS 2020 split: 219 training, 50 validation, 100 test cases",
        "dataset": "BraTS 2020 training data: 369 cases",
        "id_pattern": r"^BraTS20_Training_\d{3}$",
        "counts": [219, 50, 100],
        "used_by": ["RFNet (Ding, Yu, Yang, ICCV 2021)",
                    "DC-Seg (Li et al. 2025): 'the same data split as [5]' (RFNet)"],
        "source": source(M2FTRANS, list(paths.values()), (
            "RFNet's preprocessing prefixes each case with its grade (HG_ or LG_); the prefix "
            "is removed here, leaving the official case names. DeMoSeg holds the same sets.")),
        "folds": [{"name": "1", **fold}],
    }


def imfuse_brats2023(mirrors: Path) -> dict:
    train = read_list(mirrors, IMFUSE, "IMFuse/datalist/train.txt")
    val = [row.split(",")[0] for row in read_list(mirrors, IMFUSE,
                                                   "IMFuse/datalist/val15splits.csv")[1:]]
    test = [row.split(",")[0] for row in read_list(mirrors, IMFUSE,
                                                    "IMFuse/datalist/test15splits.csv")[1:]]
    return {
        "name": "imfuse-brats2023",
        "title": "IM-Fuse's BraTS 2023 split: 875 training, 125 validation, 251 test scans",
        "dataset": "BraTS 2023 adult glioma (GLI) training data: 1,251 scans of 1,133 patients",
        "id_pattern": r"^BraTS-GLI-\d{5}-\d{3}$",
        "counts": [875, 125, 251],
        "used_by": ["IM-Fuse (MICCAI 2025) and the methods it benchmarks"],
        "source": source(IMFUSE, ["IMFuse/datalist/train.txt", "IMFuse/datalist/val15splits.csv",
                                  "IMFuse/datalist/test15splits.csv"], (
            "Patient-wise: every follow-up scan (-001) is in the training part with its "
            "patient's first scan. IM-Fuse also gives each validation and test scan one fixed "
            "missing-modality pattern; contraseg evaluates every subset instead.")),
        "folds": [{"name": "1", "train": train, "val": val, "test": test}],
    }


def brats2023_five_folds(all_scans: list[str]) -> dict:
    from contraseg.engine.folds import fold_of

    patient = {scan: scan.rsplit("-", 1)[0] for scan in all_scans}
    assignment = fold_of(sorted(set(patient.values())), 5, FOLDS_SEED)
    folds = []
    for k in range(5):
        test = sorted(s for s in all_scans if assignment[patient[s]] == k)
        train = sorted(s for s in all_scans if assignment[patient[s]] != k)
        folds.append({"name": str(k + 1), "train": train, "val": [], "test": test})
    return {
        "name": "brats2023-5fold",
        "title": "Five patient-wise folds of BraTS 2023 (GLI), dealt by contraseg",
        "dataset": "BraTS 2023 adult glioma (GLI) training data: 1,251 scans of 1,133 patients",
        "id_pattern": r"^BraTS-GLI-\d{5}-\d{3}$",
        "counts": None,
        "used_by": ["contraseg: cross-validation on BraTS 2023 (no paper published folds)"],
        "source": {"note": (
            "The scans are those of IM-Fuse's lists (all 1,251). Patients (BraTS-GLI-NNNNN, "
            "every time point together) are dealt into five folds by "
            f"contraseg.engine.folds.fold_of with seed {FOLDS_SEED}: a seeded permutation of "
            "the sorted patient IDs, round robin. Fold k tests its patients' scans and trains "
            "on the rest; no validation part.")},
        "folds": folds,
    }


NOT_PUBLISHED = [
    {"name": "brats2021-5fold", "title": "BraTS 2021: five patient-wise folds",
     "dataset": "BraTS 2021 training data: 1,251 scans",
     "source": {"note": (
         "BraTS 2021 names do not say which scans are follow-ups of one patient (BraTS 2023 "
         "renamed the same 1,251 scans as BraTS-GLI-NNNNN-TTT, patient and time point), so "
         "patient-wise folds cannot be dealt from the 2021 names: use brats2023-5fold on the "
         "2023 release. M2FTrans publishes a 2021 split (876 / 125 / 250) at "
         f"https://github.com/{M2FTRANS[0]}/tree/{M2FTRANS[1]}/BraTS/BRATS2021_Training_none_npy,"
         " not checked to be patient-wise.")}},
    {"name": "clfc-brats2019", "title": "CLFC: five-fold patient-wise cross-validation",
     "dataset": "BraTS 2019 training data: 335 patients",
     "source": {"note": (
         "The paper (Liu et al., MICCAI 2022) uses five-fold patient-wise cross-validation and "
         "publishes no list; its code (hbliu98/CLFC-Brain-Tumor-Segmentation at cdd9e9cb) reads "
         "an nnU-Net splits.pkl that is not in the repository. Use --folds 5.")}},
    {"name": "dclmanet", "title": "DCL-MANet's split",
     "dataset": "BraTS (the paper's text available here is the abstract)",
     "source": {"note": "No list and no code repository were found."}},
    {"name": "mmformer-brats2018", "title": "mmFormer's BraTS 2018 split (190 train / 95 test)",
     "dataset": "BraTS 2018 training data: 285 cases",
     "source": {"note": (
         "mmFormer (YaoZhang93/mmFormer at b18663ad) ships no list: its loader shuffles the "
         "sorted file names of its own preprocessing with numpy seed 0 and keeps a third for "
         "testing, so the split depends on that folder's contents. Later papers evaluate "
         "mmFormer on rfnet-brats2018.")}},
    {"name": "swin-moco-parotid", "title": "Swin-MoCo's parotid split",
     "dataset": "Private multicentre parotid MRI (STIR, T1, T2)",
     "source": {"note": "The data and their split are private; the public code (Zian-Xu/"
                        "Swin-MoCo at bb7c7a0f) covers only the Synapse CT experiment."}},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mirrors", type=Path)
    here = Path(__file__).resolve().parents[1]
    parser.add_argument("--out", type=Path, default=here / "src/contraseg/data/split_lists")
    args = parser.parse_args()
    imfuse = imfuse_brats2023(args.mirrors)
    every_2023 = [s for part in ("train", "val", "test") for s in imfuse["folds"][0][part]]
    splits = [rfnet_brats2018(args.mirrors), rfnet_brats2020(args.mirrors), imfuse,
              brats2023_five_folds(every_2023),
              *({**entry, "published": False, "folds": []} for entry in NOT_PUBLISHED)]
    args.out.mkdir(parents=True, exist_ok=True)
    for split in splits:
        split.setdefault("published", True)
        path = args.out / f"{split['name']}.json"
        path.write_text(json.dumps(split, indent=1) + "\n")
        sizes = [" / ".join(str(len(f[p])) for p in ("train", "val", "test"))
                 for f in split["folds"]]
        print(f"{path}: {', '.join(sizes) or 'no list'}")


if __name__ == "__main__":
    main()
