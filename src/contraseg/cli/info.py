"""Verbs about the toolkit itself: `methods`, `demo`, `bench`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from contraseg.cli.app import app, console, user_errors
from contraseg.cli.options import Amp
from contraseg.utils.jsonio import dumps


@app.command("methods")
def methods() -> None:
    """List the registered methods (built in and from plugins), their presets, where they
    come from and their measured minimum useful budget.

    The budget: after how many minutes and steps of its `cpu` preset on a CPU a method
    reaches the plain MONAI recipe's 25-minute Dice on real scans (the README's "Results on
    real scans"); "-" where it was not measured. Plugins are packages with an entry point in
    the group `contraseg.methods` (docs/extending.md).

    Example: `contraseg methods`
    """
    from rich.table import Table

    from contraseg.engine.config import preset_names
    from contraseg.errors import ContrasegError
    from contraseg.models.budgets import load_budgets
    from contraseg.models.registry import get_entry, list_methods

    budgets = load_budgets()
    table = Table(box=None, pad_edge=False)
    for header in ("method", "kind", "presets", "useful after"):
        table.add_column(header, no_wrap=True)
    described = []
    for name in list_methods():
        entry = get_entry(name)
        try:
            presets = ", ".join(preset_names(name)) or "-"
        except ContrasegError as exc:  # a plugin's broken preset file: said, not fatal
            presets = f"unreadable ({exc})"
        budget = budgets.get(name)
        table.add_row(name, str(entry.cls.kind), presets, budget.describe() if budget else "-")
        doc = (entry.cls.__doc__ or "").strip().splitlines()
        origin = "" if entry.source.builtin else f" [{entry.source.describe()}]"
        described.append(f"{name}{origin}: {doc[0] if doc else ''}")
    console.print(table, highlight=False)
    console.print("useful after: the minutes and steps of its cpu preset after which a method "
                  "reaches the plain MONAI recipe's 25-minute Dice on real scans; -: not "
                  "measured", highlight=False, style="dim")
    for line in described:
        console.print(line, highlight=False, markup=False, no_wrap=True, overflow="ellipsis")


@app.command("splits")
def splits() -> None:
    """List the published patient-wise splits shipped with contraseg: each one's folds and
    part sizes (train / val / test), and its source; papers that published no list are named
    with what they say instead.

    Example: `contraseg splits`; then `contraseg train --split rfnet-brats2018:3 ...`
    """
    from rich.table import Table

    from contraseg.data.splits import read_split_file, split_files

    table = Table(box=None, pad_edge=False)
    for header in ("split", "folds", "train / val / test"):
        table.add_column(header, no_wrap=True)
    described = []
    for name, path in sorted(split_files().items()):
        data = read_split_file(path)
        folds = data["folds"]
        sizes = [tuple(len(f.get(p, [])) for p in ("train", "val", "test")) for f in folds]
        shown = (" / ".join(map(str, sizes[0])) + (" (fold 1; the folds differ)"
                                                    if len(set(sizes)) > 1 else "")
                 if folds else "no list published")
        table.add_row(name, str(len(folds)) if folds else "-", shown)
        where = data.get("source", {})
        origin = " ".join(x for x in (where.get("repository", ""),
                                      where.get("commit", "")[:8]) if x)
        described.append(f"{name}: {data.get('dataset', '')}"
                         + (f"; {origin}" if origin else "") + f"; {where.get('note', '')}")
    console.print(table, highlight=False)
    for line in described:
        console.print(line, highlight=False, markup=False, no_wrap=True, overflow="ellipsis")


@app.command("demo")
@user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for everything the demo writes.")] = (
        Path("demo-out")
    ),
    cases: Annotated[int, typer.Option(min=2, help="Training phantoms.")] = 12,
    test_cases: Annotated[int, typer.Option(min=1, help="Held-out test phantoms.")] = 4,
    size: Annotated[int, typer.Option(min=32, help="Phantom volume edge, voxels.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    method: Annotated[
        str | None, typer.Option(help="Method to train (default: the best available).")
    ] = None,
    max_minutes: Annotated[
        float | None, typer.Option(min=0, help="Cap the training time.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: key=value (repeat).")
    ] = None,
) -> None:
    """The whole loop on the synthetic phantom: generate, check, train the fast preset of the
    best method that fits the CPU budget (unet), evaluate all 15 modality subsets on held-out
    phantoms, write an HTML report. About 4.5 minutes on 2 CPU cores.

    Example: `contraseg demo --out demo-out`
    """
    from contraseg.demo import run_demo

    run_demo(out, cases=cases, test_cases=test_cases, size=size, seed=seed, method=method,
             max_minutes=max_minutes, overrides=set_ or [], console=console)


@app.command("bench")
@user_errors
def bench(
    method: Annotated[
        str | None, typer.Option(help="Time this method: training step and inference.")
    ] = None,
    device: Annotated[str, typer.Option(
        help="cpu, cuda, cuda:N or auto (a GPU where there is one; with --method).")] = "auto",
    patch: Annotated[int | None, typer.Option(help="Cubic patch edge (default: preset).")] = None,
    batch: Annotated[int | None, typer.Option(help="Batch size (default: preset).")] = None,
    amp: Annotated[Amp, typer.Option(
        help="none, bf16 (fp16 on CUDA), or auto: the faster precision and layout for this "
             "method's step, as `amp: auto` in training.")] = Amp.none,
    preset: Annotated[str, typer.Option(help="Preset the method is built from.")] = "fast",
    subsets: Annotated[
        bool, typer.Option(help="Also time all 15 subsets in one pass (slow on a CPU).")
    ] = True,
    infer: Annotated[
        bool, typer.Option(help="Time inference on one case (--no-infer: training only).")
    ] = True,
    utilisation: Annotated[bool, typer.Option(
        help="Also count FLOPs: achieved FLOP/s of the step and of inference against the peak "
             "of a large matrix product and 3D convolution timed in the same run.")] = True,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", help="metrics, phantom, preprocess or loader (repeat; "
                     "default: the first three). loader: the data pipeline of --method's "
                     "--preset (default unet) with 0, 1, 2 workers."),
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Runs per timing; the median is kept.")] = 3,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a setting of the preset: key=value (repeat)."),
    ] = None,
    model_step_ms: Annotated[
        float | None,
        typer.Option(min=0, help="loader: also how long a step waits for its batch when the "
                     "model takes this many ms per step off the CPU (as on a GPU)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Timings as JSON. With `--method`: training step time and voxels/s, inference on one
    240x240x155 case (all modalities, and all 15 subsets in one pass), peak memory, parameter
    count, and how much of the machine they use (achieved FLOP/s against a large matrix product
    and 3D convolution timed in the same run). Without: the foundation pieces (metrics,
    phantom, preprocessing). `--target loader`: patches per second of the training data
    pipeline alone (cache reads, augmentation) for --method's --preset with 0, 1 and 2 workers,
    beside as many plain processes making the same batches (the machine's ceiling), and peak
    memory.

    Example: `contraseg bench --method rfnet --device cpu --patch 64 --batch 2 --json`;
    `contraseg bench --method dc-seg --preset paper --set model.checkpointing=true --no-infer`;
    `contraseg bench --target loader --method unet --preset fast --json`
    """
    from contraseg.bench import DEFAULT_TARGETS, run_bench, run_method_bench

    if method is not None and not target:
        result = run_method_bench(method, device=device, patch=patch, batch=batch, amp=amp,
                                  preset=preset, steps=repeats, subsets=subsets,
                                  infer=infer, utilisation=utilisation,
                                  overrides=list(overrides or []))
    else:
        result = run_bench(list(target or DEFAULT_TARGETS), repeats, method=method or "unet",
                           preset=preset, overrides=list(overrides or []),
                           model_step_ms=model_step_ms)
    if as_json:
        print(dumps(result))
    else:
        _print_bench(result["results"] if not (method and not target)
                     else {method: result["results"]})


def _print_bench(results: dict) -> None:
    """One line per timing (its median) and per loader worker count."""
    for name, figures in results.items():
        for key, value in figures.items():
            if isinstance(value, dict) and "median_s" in value:
                console.print(f"{name:<11} {key:<26} median {value['median_s']:.4f} s "
                              f"({len(value['runs_s'])} runs)")
        for key, value in figures.get("utilisation", {}).items():
            if key != "peak":
                console.print(f"{name:<11} {key:<26} {value['flops_per_s'] / 1e9:8.1f} GFLOP/s, "
                              f"{value['of_conv3d_peak']:.2f} of the 3D convolution's and "
                              f"{value['of_matmul_peak']:.2f} of the matrix product's peak")
        if floor := figures.get("infer_15_subsets_vs_floor"):
            console.print(f"{name:<11} {'15 subsets / one subset':<26} x{floor['time_ratio']:.2f} "
                          f"(FLOP floor x{floor['flop_floor_ratio']:.2f}: "
                          f"{floor['of_floor']:.2f} of it)")
        for count, loader in figures.get("workers", {}).items():
            pss = loader.get("peak_tree_pss_mb")
            ceiling = loader.get("side_by_side")
            console.print(f"{name:<11} {count} workers {loader['patches_per_s']:>8.1f} patches/s "
                          f"(x{loader['speedup_vs_0']:.2f})"
                          + (f", {ceiling['patches_per_s']:.1f} side by side"
                             if ceiling else "")
                          + (f", a step waits {loader['wait_per_step_ms']['mean']:.1f} ms"
                             if "wait_per_step_ms" in loader else "")
                          + (f", peak {pss:.0f} MiB (PSS)" if pss is not None else ""))
