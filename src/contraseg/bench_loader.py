"""`contraseg bench --target loader`: patches per second of the training data pipeline alone (cache
reads, augmentation) with 0, 1 and 2 workers, beside as many plain processes making the same
batches (the machine's ceiling), and peak memory."""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from contraseg.data.layouts import discover
from contraseg.data.phantom import write_phantom
from contraseg.errors import ConfigError
from contraseg.models.base import MethodKind
from contraseg.utils.memory import TreePeak, peak_rss_mb


def _side_by_side_share(sampler, seed: int, batch_size: int, share: int, processes: int,
                        batches: int, barrier, results) -> None:
    """One of `_side_by_side`'s processes: every `processes`-th step from `share`."""
    from contraseg.engine.loader import step_batch

    torch.set_num_threads(1)  # as in a DataLoader worker
    for step in range(batches + share, batches + 2 * processes, processes):  # warm-up
        step_batch(sampler, seed, step, 0, batch_size)
    barrier.wait()
    tick = time.perf_counter()
    for step in range(share, batches, processes):
        step_batch(sampler, seed, step, 0, batch_size)
    results.put(time.perf_counter() - tick)


def _side_by_side(sampler, seed: int, batch_size: int, processes: int, batches: int) -> float:
    """Seconds for `processes` plain processes, started together, to make `batches` batches
    between them, handing nothing over: the most `processes` loader workers could do on this
    machine (side by side, processes share caches and memory bandwidth, so each runs slower
    than one alone)."""
    context = multiprocessing.get_context()
    barrier, results = context.Barrier(processes), context.SimpleQueue()
    shares = [context.Process(target=_side_by_side_share,
                              args=(sampler, seed, batch_size, share, processes, batches,
                                    barrier, results)) for share in range(processes)]
    for process in shares:
        process.start()
    for process in shares:
        process.join()
        if process.exitcode:
            raise RuntimeError(f"bench --target loader: a side-by-side process exited with "
                               f"code {process.exitcode}")
    return max(results.get() for _ in shares)


def _waits(stream, skip: int, steps: int, model_step_s: float) -> dict:
    """Milliseconds each of `steps` steps waited for its batch from `stream` when the model
    takes `model_step_s` per step (after `skip` steps of start-up); closes the stream."""
    waits = []
    for index in range(skip + steps):
        tick = time.perf_counter()
        next(stream)
        if index >= skip:
            waits.append(1000 * (time.perf_counter() - tick))
        time.sleep(model_step_s)
    stream.close()
    return {"mean": statistics.mean(waits), "median": statistics.median(waits),
            "max": max(waits)}


def bench_loader(method: str = "unet", *, preset: str = "fast", cases: int = 8,
                 size: int = 128, workers: tuple[int, ...] = (0, 1, 2), batches: int = 120,
                 repeats: int = 3, overrides: list[str] | None = None,
                 model_step_ms: float | None = None) -> dict:
    """The training data pipeline alone (`engine.loader`): batches of `method`'s preset (patch
    sampling from the on-disk cache, augmentation, subsets) from `cases` phantoms of `size`^3,
    with each number of `workers`. Per count: patches per second over `batches` batches after
    the first 2 x workers + 1 (start-up), median of `repeats` fresh loaders (the counts
    interleaved, after one untimed warm-up pass); the first batch's wait; and, in one more
    untimed loader per count, the peak memory of the process with its workers
    (`utils.memory.tree_memory_mb`: RSS summed, and PSS, which splits the pages forked workers
    share). For each count of 1 or more, `side_by_side`: as many plain processes making the
    same batches with nothing handed over (`_side_by_side`, timed in the same rounds), the
    ceiling of that many workers here; `vs_side_by_side` is the loader's share of it. With
    `model_step_ms`, `wait_per_step_ms`: how long a step waited for its batch when the model
    takes that long per step without using the CPU (a sleep: a model on a GPU), over `batches`
    steps after the workers' first. A method's per-case inputs (CLFC's pseudo-normals) are left
    out: they need a trained generator, and are read like the image."""
    from contraseg.data.patches import PatchSampler, build_augmentation
    from contraseg.engine.config import load_config
    from contraseg.engine.loader import batches_from
    from contraseg.engine.prepare import prepare_data
    from contraseg.models.registry import get_entry

    config = load_config(method, preset, list(overrides or []))
    entry = get_entry(method)
    if entry.cls.kind is MethodKind.GENERATOR:
        raise ConfigError(f"bench --target loader: {method} trains on healthy slices; "
                          "time a segmentation method")
    with tempfile.TemporaryDirectory() as tmp:
        write_phantom(Path(tmp) / "ph", cases=cases, size=size, seed=0)
        data = prepare_data(config, [Path(tmp) / "ph"], Path(tmp) / "cache",
                            split={"train": sorted(_case_keys(Path(tmp) / "ph")), "val": []},
                            kind=entry.cls.kind)
        sampler = PatchSampler(data.train, config.data.patch_size,
                               config.data.foreground_fraction, config.data.modality_dropout,
                               build_augmentation(config.augment, entry.cls.spatial),
                               full_modality_prob=config.data.full_modality_prob)
        size_of_batch = config.data.batch_size
        result: dict = {"method": method, "preset": preset, "cases": cases,
                        "case_shape": list(data.train[0].shape), "overrides": overrides or [],
                        "patch_size": list(config.data.patch_size), "batch_size": size_of_batch,
                        "batches": batches, "workers": {}}

        def measure(count: int, seed: int, after_batch=lambda: None) -> tuple[float, float]:
            tick = time.perf_counter()
            stream = batches_from(sampler, seed=seed, rank=0, batch_size=size_of_batch,
                                  first_step=0, workers=count)
            next(stream)
            first = time.perf_counter() - tick
            for _ in range(2 * count):  # the workers' first batches: start-up
                next(stream)
            tick = time.perf_counter()
            for _ in range(batches):
                next(stream)
                after_batch()
            elapsed = time.perf_counter() - tick
            stream.close()
            return first, elapsed

        if hasattr(os, "sync"):
            os.sync()  # the cache just written: its write-back must not compete with timings
        measure(0, seed=repeats)  # warm-up (page cache, allocator, lazy imports): untimed
        timings: dict[int, list[tuple[float, float]]] = {count: [] for count in workers}
        ceilings: dict[int, list[float]] = {count: [] for count in workers if count}
        for repeat in range(repeats):  # interleaved, so slow spells of the machine hit all
            for count in workers:
                timings[count].append(measure(count, seed=repeat))
                if count:
                    ceilings[count].append(_side_by_side(sampler, repeat, size_of_batch,
                                                         count, batches))
        peaks: dict[int, dict[str, float]] = {}
        for count in workers:  # apart: reading /proc/PID/smaps_rollup slows what it measures
            with TreePeak() as peak:  # sampled after every batch too: workers are alive then
                measure(count, seed=repeats + 1, after_batch=peak.sample)
            peaks[count] = peak.peak or {}
        for count in workers:
            runs = [elapsed for _, elapsed in timings[count]]
            median = statistics.median(runs)
            result["workers"][str(count)] = {
                "patches_per_s": batches * size_of_batch / median,
                "batches": {"median_s": median, "runs_s": runs},
                "first_batch_s": statistics.median(first for first, _ in timings[count]),
                **{f"peak_tree_{k}_mb": v for k, v in peaks[count].items()}}
            if count:
                ceiling = statistics.median(ceilings[count])
                result["workers"][str(count)]["side_by_side"] = {
                    "patches_per_s": batches * size_of_batch / ceiling,
                    "batches": {"median_s": ceiling, "runs_s": ceilings[count]}}
                result["workers"][str(count)]["vs_side_by_side"] = ceiling / median
        if model_step_ms is not None:
            result["model_step_ms"] = model_step_ms
            for count in workers:
                result["workers"][str(count)]["wait_per_step_ms"] = _waits(
                    batches_from(sampler, seed=repeats + 2, rank=0, batch_size=size_of_batch,
                                 first_step=0, workers=count), 2 * count + 1, batches,
                    model_step_ms / 1000)
        result["main_peak_rss_mb"] = peak_rss_mb()
        base = result["workers"].get("0")
        if base:
            for figures in result["workers"].values():
                figures["speedup_vs_0"] = figures["patches_per_s"] / base["patches_per_s"]
    return result


def _case_keys(root: Path) -> list[str]:
    """The training keys (`<folder>/<case id>`) of every labelled case under `root`."""
    return [f"{root.name}/{case.case_id}" for case in discover(root).cases
            if case.label is not None]
