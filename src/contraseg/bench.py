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
import torch
from scipy import ndimage

from contraseg._version import __version__
from contraseg.bench_loader import bench_loader
from contraseg.data.labels import get_convention
from contraseg.data.layouts import discover
from contraseg.data.phantom import write_phantom
from contraseg.errors import ConfigError
from contraseg.evaluation.metrics import binary_metrics, confusion_counts, overlap_metrics
from contraseg.utils.memory import peak_rss_mb

TARGETS = ("metrics", "phantom", "preprocess", "loader")
DEFAULT_TARGETS = ("metrics", "phantom", "preprocess")  # `loader` writes and caches a dataset


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_method(name: str, *, device: str = "cpu", patch: int | None = None,
                 batch: int | None = None, amp: str = "none", preset: str = "fast",
                 steps: int = 5, case_shape: tuple[int, int, int] = (240, 240, 155),
                 subsets: bool = True, infer: bool = True, utilisation: bool = True,
                 overrides: list[str] | None = None) -> dict:
    """Training step time and voxels/s, inference time for one BraTS-sized case (all
    modalities, and all 15 subsets in one pass, also as a multiple of its FLOP floor), peak
    memory (after the training steps, and at the end), parameter count and, with
    `utilisation`, achieved FLOP/s against the machine's peak measured in this run
    (bench_utilisation)."""
    from contraseg.engine.config import load_config
    from contraseg.engine.distributed import resolve_device
    from contraseg.engine.optim import (
        example_batch,
        make_optimizer,
        make_scheduler,
        optimiser_step,
    )
    from contraseg.engine.sliding_window import sliding_window_outputs
    from contraseg.evaluation.protocol import all_subsets, availability
    from contraseg.models.base import LossModule, memory_format
    from contraseg.models.registry import build_method

    user_overrides = list(overrides or [])
    overrides = [f"amp={amp}", *user_overrides]
    if patch:
        overrides.append(f"data.patch_size=[{patch},{patch},{patch}]")
    if batch:
        overrides.append(f"data.batch_size={batch}")
    config = load_config(name, preset, overrides)
    generator = _timing_generator(name, config, preset)
    dev = resolve_device(device)
    modalities = ("t1", "t1c", "t2", "flair")
    torch.manual_seed(0)
    method = build_method(name, modalities, 4, config.model, config.loss_weights).to(dev)
    probed = None
    if amp == "auto":  # as a training run decides it (engine.amp_probe)
        from contraseg.engine.amp_probe import probe

        probed = probe(method, config, 4, dev)
        amp = probed["amp"]
    channels_last = probed["channels_last"] if probed else config.channels_last
    layout = memory_format(method, channels_last)  # as the engine trains
    method.to(memory_format=layout)
    optimizer = make_optimizer(method.param_groups(config.optim.lr), config.optim)
    shape, size = config.data.patch_size, config.data.batch_size
    example = example_batch(method, config, 4, dev)
    example.images = example.images.contiguous(memory_format=layout)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    scheduler = make_scheduler(optimizer, config.optim, config.total_steps)
    loss = LossModule(method)

    def step() -> None:  # the trainer's step, on one fixed batch
        optimiser_step(loss, method, example, optimizer, scheduler, amp=amp, device=dev,
                       grad_clip=config.optim.grad_clip)
        method.after_step(0.5)
        _sync(dev)

    step()  # warm-up (allocations, kernels)
    train = _timed(step, steps)
    train_memory = {"train_peak_rss_mb": peak_rss_mb()}  # model, optimiser, one step
    if dev.type == "cuda":
        train_memory["train_cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    image = torch.randn(1, 4, *case_shape, generator=torch.Generator().manual_seed(1))
    rows = torch.ones(1, 4, dtype=torch.bool)

    def run_inference(rows: torch.Tensor, on: torch.Tensor = image) -> Callable[[], None]:
        return lambda: (sliding_window_outputs(method, on, rows, config.infer, shape,
                                              bf16=amp == "bf16"), _sync(dev))

    if infer:  # warm-up on one window's worth of image (oneDNN primitives, allocations)
        run_inference(rows, image[..., :shape[0], :shape[1], :shape[2]])()

    result = {
        "method": name, "preset": preset, "device": str(dev), "amp": amp,
        **({"amp_probe": probed} if probed else {}),
        "memory_format": str(layout).replace("torch.", ""),
        "patch_size": list(shape), "batch_size": size, "overrides": user_overrides,
        "parameters": sum(p.numel() for p in method.parameters()),
        **({"generator": generator} if generator else {}),
        "train_step": train,
        "train_voxels_per_s": size * int(np.prod(shape)) / train["median_s"],
        **train_memory,
    }
    if infer:
        result |= {"infer_case_shape": list(case_shape), "infer_overlap": config.infer.overlap,
                   "infer_case_all_modalities": _timed(run_inference(rows), 1)}
    if subsets:  # counting a window's FLOPs is one forward pass: also without --infer
        every = torch.tensor([availability(s, modalities) for s in all_subsets(modalities)])
        if infer:
            result["infer_case_15_subsets"] = _timed(run_inference(every), 1)
        result["window_flops"] = _window_flops(method, example.images[:1], len(every))
        if infer:
            windows = example.images[:1].repeat(
                int(config.infer.sw_batch_size), *[1] * (example.images.ndim - 1)
            ).contiguous(memory_format=layout)
            result["window_seconds"] = _window_seconds(method, windows, amp, dev, steps)
            result["infer_15_subsets_vs_floor"] = _against_floor(result)
    if utilisation:
        result["utilisation"] = _utilisation(result, dev, amp, step, run_inference, rows,
                                             every if subsets and infer else None)
    result["peak_rss_mb"] = peak_rss_mb()
    if dev.type == "cuda":
        result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        result["cuda_device"] = torch.cuda.get_device_name(dev)
    return result


def _against_floor(result: dict) -> dict:
    """The 15-subset pass's time as a multiple of one subset's, and of the least multiple its
    FLOPs allow (`window_flops`; `of_floor` 1.0 is that floor) and its network's timed parts
    allow (`window_seconds`; `of_time_floor` 1.0: the sliding window, stitching and activation
    of 15 subsets cost nothing beyond 15 decodes)."""
    one = result["infer_case_all_modalities"]["median_s"]
    every = result["infer_case_15_subsets"]["median_s"]
    floor = result["window_flops"]["least_ratio_to_one_subset"]
    parts, subsets = result["window_seconds"], result["window_flops"]["subsets"]
    timed_floor = ((parts["encode_s"] + subsets * parts["decode_per_subset_s"])
                   / (parts["encode_s"] + parts["decode_per_subset_s"]))
    return {"time_ratio": every / one, "flop_floor_ratio": floor,
            "of_floor": every / one / floor, "time_floor_ratio": timed_floor,
            "of_time_floor": every / one / timed_floor}


def _window_seconds(method, windows: torch.Tensor, amp: str, dev: torch.device,
                    repeats: int) -> dict:
    """Median seconds of `encode` on a batch of windows and of one subset's `decode` of it,
    in the inference's precision: the network's own cost of a window, element-wise work
    included (what FLOP counts leave out)."""
    from contraseg.engine.distributed import autocast

    every_modality = torch.ones(windows.shape[:2], dtype=torch.bool, device=windows.device)
    method.eval()
    with torch.inference_mode(), autocast(amp if amp == "bf16" else "none", dev):
        encoded = method.encode(windows)
        method.decode(encoded, every_modality)  # warm-up
        encode = _timed(lambda: (method.encode(windows), _sync(dev)), repeats)
        decode = _timed(lambda: (method.decode(encoded, every_modality), _sync(dev)), repeats)
    method.train()
    return {"windows": int(windows.shape[0]), "encode_s": encode["median_s"],
            "decode_per_subset_s": decode["median_s"]}


def _utilisation(result: dict, dev: torch.device, amp: str, step, run_inference, rows,
                 every) -> dict:
    """FLOP/s of the training step and of inference against the peaks of this run."""
    from contraseg.bench_utilisation import counted_flops, machine_peak, utilisation

    peak = machine_peak(dev, amp)
    out = {"peak": peak, "train_step": utilisation(counted_flops(step),
                                                   result["train_step"]["median_s"], peak)}
    passes = {"infer_case_all_modalities": rows, "infer_case_15_subsets": every}
    for key, availability_rows in passes.items():
        if key in result and availability_rows is not None:
            flops = counted_flops(run_inference(availability_rows))
            out[key] = utilisation(flops, result[key]["median_s"], peak)
    return out


def _window_flops(method, window: torch.Tensor, subsets: int) -> dict:
    """FLOPs of one window's `encode` (run once for every subset) and of one subset's `decode`,
    counted by PyTorch's FlopCounterMode (convolutions and matrix products; element-wise work
    uncounted), and the ratio (encode + K decode) / (encode + decode): the least the K-subset
    pass can cost relative to one subset while the network stays as it is."""
    from torch.utils.flop_counter import FlopCounterMode

    every_modality = torch.ones(1, window.shape[1], dtype=torch.bool, device=window.device)
    method.eval()
    with torch.no_grad():
        with FlopCounterMode(display=False) as encoding:
            encoded = method.encode(window)
        with FlopCounterMode(display=False) as decoding:
            method.decode(encoded, every_modality)
    method.train()
    encode, decode = encoding.get_total_flops(), decoding.get_total_flops()
    return {"window": list(window.shape[2:]), "encode": encode, "decode_per_subset": decode,
            "subsets": subsets,
            "least_ratio_to_one_subset": (encode + subsets * decode) / (encode + decode)}


def _timing_generator(name: str, config, preset: str) -> str | None:
    """A method that needs a trained generator (CLFC) is timed with a random one of the
    introvae preset's architecture (weights do not change the timing); says so, else None."""

    from contraseg.engine.config import load_config, preset_names
    from contraseg.models.registry import get_entry

    if (not get_entry(name).cls.takes_normal_run or config.model.get("generator")
            or config.model.get("normal_network") is False):
        return None
    vae_preset = preset if preset in preset_names("introvae") else "fast"
    config.model["generator"] = {"method": "introvae",
                                 "model": load_config("introvae", vae_preset).model}
    return f"random introvae ({vae_preset} preset architecture), for timing only"


def machine() -> dict:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "numpy": np.__version__,
            "torch": str(torch.__version__), "torch_threads": torch.get_num_threads(),
            "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}


def run_method_bench(name: str, **kwargs) -> dict:
    return {"contraseg": __version__, "machine": machine(), "results": bench_method(name, **kwargs)}


def run_bench(targets: list[str], repeats: int, *, method: str = "unet", preset: str = "fast",
              overrides: list[str] | None = None, model_step_ms: float | None = None) -> dict:
    """Run the named targets (`loader`: for `method`'s `preset` with `overrides`); the result
    states the machine it ran on."""
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        raise ConfigError(f"unknown bench target(s) {unknown} (known: {', '.join(TARGETS)})")
    if repeats < 1:
        raise ConfigError("--repeats must be at least 1")
    runners = {"metrics": bench_metrics, "phantom": bench_phantom, "preprocess": bench_preprocess,
               "loader": lambda repeats: bench_loader(method, preset=preset, repeats=repeats,
                                                      overrides=overrides,
                                                      model_step_ms=model_step_ms)}
    return {
        "contraseg": __version__,
        "machine": machine(),
        "repeats": repeats,
        "results": {t: runners[t](repeats=repeats) for t in targets},
    }
