"""Five-fold cross-validation on the 21 BraTS 2018 cases of ../shared/data/real/brats2018, every
case tested once per seed: the evidence of the recipe comparisons (the plain MONAI recipe against
a method's `cpu` preset with overrides).

Each seed trains its five folds one after another in its own process with one thread; the seeds
run side by side, so every configuration sees the same machine load (two seeds on two cores).
The folds are contraseg's (`fold_of`, seeded by the seed), for the plain recipe too, so the two
are paired fold by fold. Then every case is scored on the chosen modality subsets with the
fixed protocol (`contraseg evaluate --which last`; the plain recipe's predictions through
`--pred`, all four modalities only).

Resumable: a finished seed is skipped, a stopped one resumes (--resume); run it again with the
same arguments. The command is kept in OUT/NAME/command.json for the factor table
(scripts/real_cv_table.py).

An inference factor needs no training: --reuse ROW links ROW's trained folds into the new row
and --evaluate-option passes settings to `contraseg evaluate`
(e.g. --evaluate-option=--blend=constant).

A specialist trains on some modalities only: --modalities flair scores a FLAIR-only model on
the same folds (e.g. against the preset's FLAIR-alone row).

Usage: python scripts/real_cv.py OUT NAME [--method unet|plain] [--minutes 25] [--seeds 0 1]
           [--subsets all] [--set KEY=VALUE ...] [--reuse ROW --evaluate-option OPTION ...]
           [--modalities M ...]
  e.g. python scripts/real_cv.py runs/cv preset --minutes 10
       python scripts/real_cv.py runs/cv no-dropout --minutes 10 --set data.full_modality_prob=1
       python scripts/real_cv.py runs/cv plain --method plain --minutes 10
       python scripts/real_cv.py runs/cv no-et-rule --reuse preset --minutes 10 \
           --evaluate-option=--et-min-voxels=0
Result: OUT/NAME/seed-S/report/metrics.csv per seed (report-full with --subsets full: the
15-subset evaluation costs about 75 s a case on one thread, all four modalities 10).
Data: $CONTRASEG_SHARED_DATA, else ../shared/data beside the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
FOLDS = 5


def shared_data() -> Path:
    return Path(os.environ.get("CONTRASEG_SHARED_DATA", HERE.parent.parent / "shared" / "data"))


def commit() -> str:
    """The checkout's commit, marked "+changes" when its files differ from it."""
    def git(*words: str) -> str:
        return subprocess.run(["git", "-C", str(HERE), *words], capture_output=True,
                              text=True).stdout.strip()
    return git("rev-parse", "HEAD") + ("+changes" if git("status", "--porcelain") else "")


def run(command: list[str], log: Path) -> None:
    """Run one command with one thread, appending to `log`; a failure stops the seed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with log.open("a") as out:
        out.write(f"$ {' '.join(command)}\n")
        out.flush()
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    if code:
        raise RuntimeError(f"exit {code}: {' '.join(command)} (see {log})")


def finished(run_folder: Path) -> bool:
    info = run_folder / "run.json"
    return info.is_file() and json.loads(info.read_text()).get("status") == "finished"


def link_folds(args, folder: Path, seed: int) -> None:
    """The trained folds of row `args.reuse` in `folder` (symbolic links), all finished."""
    source = args.out / args.reuse / f"seed-{seed}"
    for k in range(FOLDS):
        if not finished(source / f"fold-{k}"):
            raise RuntimeError(f"{source / f'fold-{k}'}: not finished; run row {args.reuse} "
                               "first")
    for k in range(FOLDS):
        link = folder / f"fold-{k}"
        if not link.exists():
            link.symlink_to(Path("..", "..", args.reuse, f"seed-{seed}", f"fold-{k}"))


def data_folder(args) -> Path:
    """The 21 cases (OUT/data/all), or with --modalities the same cases with only those images
    (OUT/data/all-<modalities>: a specialist's data). The manifest keeps its root, so the cases
    keep their keys and the folds are the same."""
    everything = args.out / "data" / "all"
    if not args.modalities:
        return everything
    manifest = json.loads((everything / "contraseg.json").read_text())
    images = manifest["files"]["images"]
    if unknown := [m for m in args.modalities if m not in images]:
        sys.exit(f"--modalities: {', '.join(unknown)} not among {', '.join(images)}")
    manifest["modalities"] = list(args.modalities)
    manifest["files"]["images"] = {m: images[m] for m in args.modalities}
    folder = args.out / "data" / f"all-{'+'.join(args.modalities)}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "contraseg.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def contraseg_seed(args, folder: Path, seed: int, log: Path) -> None:
    data = data_folder(args)
    if args.reuse:
        link_folds(args, folder, seed)
    settings = [f"seed={seed}", f"budget_minutes={args.minutes:g}",
                f"data.cache_dir={args.out / 'cache'}", *args.set]
    resume = ["--resume"] if (folder / "fold-0" / "run.json").is_file() else []
    if not all(finished(folder / f"fold-{k}") for k in range(FOLDS)):
        run(["contraseg", "train", "--out", str(folder), "--method", args.method, "--preset",
             "cpu", "--data", str(data), "--folds", str(FOLDS), *resume,
             *[a for s in settings for a in ("--set", s)]], log)
    run(["contraseg", "evaluate", "--run", str(folder), "--data", str(data), "--out",
         str(report_folder(folder, args.subsets)), "--which", "last", "--overlays", "0",
         "--subsets", args.subsets, *args.evaluate_option], log)


def plain_seed(args, folder: Path, seed: int, log: Path) -> None:
    from contraseg.engine.folds import fold_of

    brats = shared_data() / "real" / "brats2018"
    cases = json.loads((args.out / "data" / "all" / "contraseg.json").read_text())["cases"]
    # contraseg keys cases by dataset folder name and case id; the folds depend on those keys
    keys = {f"{brats.name}/{c}": c for c in cases}
    assignment = fold_of(sorted(keys), FOLDS, seed)
    pred = folder / "pred"
    pred.mkdir(parents=True, exist_ok=True)
    for k in range(FOLDS):
        fold = folder / f"fold-{k}"
        fold.mkdir(parents=True, exist_ok=True)
        split = {"train": sorted(c for key, c in keys.items() if assignment[key] != k),
                 "test": sorted(c for key, c in keys.items() if assignment[key] == k)}
        (fold / "split.json").write_text(json.dumps(split, indent=2) + "\n")
        if all((fold / "pred" / f"{c}.nii.gz").is_file() for c in split["test"]):
            continue
        run([sys.executable, str(HERE / "plain_monai_unet.py"), "--data", str(brats), "--split",
             str(fold / "split.json"), "--out", str(fold), "--minutes", f"{args.minutes:g}",
             "--seed", str(seed), "--cache", str(args.out / "plain-cache"), "--resume"], log)
        for case in split["test"]:
            link = pred / f"{case}.nii.gz"
            link.unlink(missing_ok=True)
            link.symlink_to(Path("..") / f"fold-{k}" / "pred" / f"{case}.nii.gz")
    run(["contraseg", "evaluate", "--pred", str(pred), "--data", str(args.out / "data" / "all"),
         "--out", str(report_folder(folder, "full")), "--overlays", "0"], log)


def report_folder(folder: Path, subsets: str) -> Path:
    """SEED/report for every subset, SEED/report-full for all four modalities only, ..."""
    return folder / ("report" if subsets == "all" else f"report-{subsets.replace(',', '_')}")


def one_seed(args, seed: int) -> str:
    folder = args.out / args.name / f"seed-{seed}"
    report = report_folder(folder, "full" if args.method == "plain" else args.subsets)
    if (report / "metrics.csv").is_file():
        return f"seed {seed}: done ({report})"
    folder.mkdir(parents=True, exist_ok=True)
    (plain_seed if args.method == "plain" else contraseg_seed)(args, folder, seed,
                                                               folder / "log.txt")
    return f"seed {seed}: scored ({report})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("name")
    parser.add_argument("--method", default="unet", help="a contraseg method, or plain")
    parser.add_argument("--minutes", type=float, default=25.0, help="training budget per fold")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--subsets", default="all",
                        help="contraseg evaluate --subsets (all: SEED/report; full: all four "
                             "modalities only, SEED/report-full)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--modalities", nargs="+", metavar="MODALITY",
                        help="train and score on these modalities only (a specialist, e.g. "
                             "--modalities flair); the folds are the same")
    parser.add_argument("--reuse", metavar="ROW",
                        help="evaluate ROW's trained folds instead of training")
    parser.add_argument("--evaluate-option", action="append", default=[], metavar="OPTION",
                        help="passed to contraseg evaluate, e.g. "
                             "--evaluate-option=--blend=constant")
    args = parser.parse_args()
    if args.method == "plain" and (args.reuse or args.modalities):
        parser.error("--reuse and --modalities are for contraseg rows; the plain recipe's "
                     "inputs and inference are fixed")
    args.out = args.out.resolve()
    subprocess.check_call([sys.executable, str(HERE / "real_benchmark" / "make_manifests.py"),
                           str(shared_data()), str(args.out / "data")])
    record = args.out / args.name / "command.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    settings = {"method": args.method, "minutes": args.minutes, "set": args.set,
                "subsets": args.subsets, "reuse": args.reuse, "modalities": args.modalities,
                "evaluate_options": args.evaluate_option, "command": " ".join(sys.argv),
                "commit": commit()}
    if record.is_file():  # a resumed row keeps the record of its start (commit included)
        kept = json.loads(record.read_text())
        if (kept["set"], kept.get("reuse"), kept.get("evaluate_options", []),
                kept.get("modalities")) != (args.set, args.reuse, args.evaluate_option,
                                            args.modalities):
            sys.exit(f"{record}: {args.name} was started with other settings; choose another "
                     "NAME")
    else:
        record.write_text(json.dumps(settings, indent=2) + "\n")
    with ThreadPoolExecutor(len(args.seeds)) as pool:
        for line in pool.map(lambda s: one_seed(args, s), args.seeds):
            print(line)


if __name__ == "__main__":
    main()
