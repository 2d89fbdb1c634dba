"""`amp: auto`: the precision and memory layout a run trains in, chosen by timing the method's
own training step in each, not by the CPU's flags.

A CPU's flags say whether bfloat16 runs in hardware, not whether it is fast for this network in
this layout: on one CPU a MONAI U-Net step under bf16 autocast took 16.5 s in the contiguous
layout against 0.74 s in float32. So the probe times the trainer's step (`optimiser_step`, on a
random batch of the run's patch and batch size, on a copy of the method: the run's weights and
optimiser are untouched) for every candidate: float32 and bf16 autocast (fp16 on a CUDA device
without bf16), each in the contiguous and the channels-last-3d layout (3D methods; others have
one layout). The fastest wins; within `TIE` of it, the earlier candidate (float32 first, the
configured layout first), so a choice is never made on noise. The random batch carries no
per-case inputs, so a method that takes them (CLFC's pseudo-normal, precomputed in training)
computes them inside the timed step: its probe times more than its training step does, in
every candidate alike.

A candidate whose first (warm-up) step alone takes `GIVE_UP` times the best median so far is
not timed further (an emulated bf16 step can cost 20x). Results are cached per machine, torch
version, thread count and method configuration (`cache_path`): a second run on the same machine
reads them. The choice and the figures go in run.json (`amp_probe`); a resumed run keeps its
first choice.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from contraseg.engine import distributed
from contraseg.utils.fs import atomic_path

REPEATS = 3  # timed steps per candidate (after one warm-up step)
GIVE_UP = 3.0  # a warm-up step this many times the best median so far ends a candidate
TIE = 1.05  # candidates within 5 % of the fastest count as equal: the earlier one is taken


@dataclass(frozen=True)
class Candidate:
    amp: str  # none, bf16 or fp16
    channels_last: bool

    @property
    def key(self) -> str:
        return f"{self.amp}/{'channels_last' if self.channels_last else 'contiguous'}"


def candidates(device: torch.device, spatial: str, channels_last: bool) -> list[Candidate]:
    """Float32 first, then the reduced precision the device has; the configured layout first."""
    low = "bf16" if device.type != "cuda" or torch.cuda.is_bf16_supported() else "fp16"
    layouts = [channels_last, not channels_last] if spatial == "3d" else [False]
    return [Candidate(amp, layout) for amp in ("none", low) for layout in layouts]


def time_candidates(step_for: Callable[[Candidate], Callable[[], None]],
                    options: Iterable[Candidate], repeats: int = REPEATS,
                    clock: Callable[[], float] = time.perf_counter) -> dict[str, dict]:
    """{key: {"warmup_s", "median_s" (None: given up)}} for each candidate, in order."""
    seconds: dict[str, dict] = {}
    best = float("inf")
    for option in options:
        step = step_for(option)
        start = clock()
        step()
        warmup = clock() - start
        if warmup > GIVE_UP * best:
            seconds[option.key] = {"warmup_s": warmup, "median_s": None}
            continue
        runs = []
        for _ in range(repeats):
            start = clock()
            step()
            runs.append(clock() - start)
        median = statistics.median(runs)
        best = min(best, median)
        seconds[option.key] = {"warmup_s": warmup, "median_s": median}
    return seconds


def choose(seconds: Mapping[str, Mapping[str, float | None]]) -> Candidate:
    """The first candidate (in probing order) within `TIE` of the fastest median."""
    timed = {key: value["median_s"] for key, value in seconds.items()
             if value["median_s"] is not None}
    fastest = min(timed.values())
    key = next(key for key, median in timed.items() if median <= fastest * TIE)
    amp, layout = key.split("/")
    return Candidate(amp, layout == "channels_last")


def machine_key(device: torch.device) -> str:
    """What the timings depend on besides the method: the processor, threads and torch."""
    if device.type == "cuda":
        processor = torch.cuda.get_device_name(device)
    else:
        processor = _cpu_model() or platform.processor() or platform.machine()
        processor += f", {torch.get_num_threads()} threads"
    return f"{processor}; torch {torch.__version__}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cache_path() -> Path:
    """$CONTRASEG_CACHE_DIR, else $XDG_CACHE_HOME/contraseg, else ~/.cache/contraseg."""
    root = os.environ.get("CONTRASEG_CACHE_DIR")
    if not root:
        root = str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "contraseg")
    return Path(root) / "amp_probe.json"


def method_key(method_name: str, config) -> str:
    """The method configuration a step's cost depends on, as a short hash."""
    facts = {"method": method_name, "model": config.model, "weights": config.loss_weights,
             "patch": list(config.data.patch_size), "batch": config.data.batch_size,
             "configured_channels_last": config.channels_last}
    text = json.dumps(facts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, entry: dict) -> None:
    """Add one entry; a cache that cannot be written only costs the next run a probe."""
    try:
        data = _read_cache(path) | {key: entry}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    except OSError:
        pass


def probe_steps(method, config, num_classes: int, device: torch.device,
                options: Iterable[Candidate]) -> dict[str, dict]:
    """Time the trainer's step of a copy of `method` for each candidate."""
    from contraseg.engine.optim import example_batch, make_optimizer, optimiser_step
    from contraseg.models.base import LossModule

    twin = copy.deepcopy(method).train()
    optimizer = make_optimizer(twin.param_groups(config.optim.lr), config.optim)
    loss = LossModule(twin)
    batch = example_batch(twin, config, num_classes, device)

    def step_for(option: Candidate) -> Callable[[], None]:
        layout = torch.channels_last_3d if option.channels_last else torch.contiguous_format
        twin.to(memory_format=layout)
        batch.images = batch.images.contiguous(memory_format=layout)

        def step() -> None:
            optimiser_step(loss, twin, batch, optimizer, None, amp=option.amp, device=device,
                           grad_clip=config.optim.grad_clip)
            twin.after_step(0.5)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        return step

    state = torch.get_rng_state()
    try:
        return time_candidates(step_for, options)
    finally:
        torch.set_rng_state(state)  # dropout and sampling in the steps drew from it


def probe(method, config, num_classes: int, device: torch.device, *,
          use_cache: bool = True) -> dict[str, Any]:
    """The precision and layout for `amp: auto` and how they were found: {"amp",
    "channels_last", "seconds" (per candidate), "machine", "cached", "probe_s"}."""
    options = candidates(device, method.spatial, bool(config.channels_last))
    machine = machine_key(device)
    key = f"{machine} | {method_key(method.name, config)}"
    path = cache_path()
    cached = _read_cache(path).get(key) if use_cache else None
    start = time.perf_counter()
    if cached and set(cached.get("seconds", {})) == {o.key for o in options}:
        seconds, from_cache = cached["seconds"], True
    else:
        seconds, from_cache = probe_steps(method, config, num_classes, device, options), False
        if use_cache:
            _write_cache(path, key, {"seconds": seconds})
    choice = choose(seconds)
    return {"amp": choice.amp, "channels_last": choice.channels_last, "seconds": seconds,
            "machine": machine, "native_bf16": distributed.native_bf16(device),
            "cached": from_cache, "probe_s": round(time.perf_counter() - start, 3)}


def describe(found: Mapping[str, Any]) -> str:
    """One line for the console: the choice and every candidate's step time."""
    names = {"none": "float32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}
    parts = []
    for key, value in found["seconds"].items():
        median = value["median_s"]
        parts.append(f"{key} {median:.3f} s" if median is not None
                     else f"{key} stopped after its first step ({value['warmup_s']:.2f} s)")
    layout = "channels-last" if found["channels_last"] else "contiguous"
    source = "cached probe" if found.get("cached") else "probe"
    return (f"amp auto: {names[found['amp']]}, {layout} layout ({source} of this method's step: "
            f"{'; '.join(parts)})")


def precision_and_layout(method, config, num_classes: int, ctx, earlier: dict | None,
                         console) -> tuple[str, bool, dict | None]:
    """A training run's autocast, layout (channels-last or not) and probe record. `amp: auto`
    takes the probe's choice (`earlier`, from run.json, on resume: the first choice is kept;
    under DDP every rank probes and all take rank 0's); the run trains in the layout chosen,
    while its config keeps the one asked for (prediction uses it). Otherwise the config's."""
    if config.amp != "auto":
        return distributed.resolve_amp(config.amp, ctx.device), bool(config.channels_last), None
    found = earlier or probe(method, config, num_classes, ctx.device)
    options = candidates(ctx.device, method.spatial, bool(config.channels_last))
    mine = next(i for i, o in enumerate(options)
                if (o.amp, o.channels_last) == (found["amp"], found["channels_last"]))
    chosen = options[int(distributed.gather_floats(ctx, float(mine))[0])]
    found = {**found, "amp": chosen.amp, "channels_last": chosen.channels_last}
    if ctx.is_main and earlier is None and console is not None:
        console.print(describe(found), highlight=False)
    return chosen.amp, chosen.channels_last, found
