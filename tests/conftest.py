"""Shared fixtures. Real scans live in ../shared/data beside the checkout (never in the repo).

Session fixtures build what many tests read and none changes: phantom datasets
(`make_phantom`), tiny trained runs (`tiny_run`), and one cache of preprocessed real scans
(`real_cache`). A test that changes files makes its own copy.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# for runs whose progress.png and tensorboard/ no test looks at: nothing drawn or written
QUIET = ["log.curves=false", "log.tensorboard=false"]
# tests that start processes (loader workers, torchrun ranks, scripts) run one at a time, in
# one pytest-xdist worker (`--dist loadgroup`), so two of them never share the cores
STARTS_PROCESSES = pytest.mark.xdist_group("processes")


def pytest_configure(config):
    """Under pytest-xdist each worker gets one core: torch's threads, and those of the
    processes a test starts, are set to one so the workers do not fight over the cores. The
    per-machine cache (`amp: auto`'s probe) goes to a temporary folder, never the user's."""
    import tempfile

    os.environ.setdefault("CONTRASEG_CACHE_DIR", tempfile.mkdtemp(prefix="contraseg-cache-"))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """A test kept out of the quick suite says why: `@pytest.mark.slow(reason=...)`."""
    unexplained = [item.nodeid for item in items
                   if (mark := item.get_closest_marker("slow")) and not mark.kwargs.get("reason")]
    if unexplained:
        raise pytest.UsageError("slow tests without a reason: " + ", ".join(unexplained))


def shared_data_dir() -> Path:
    """../shared/data beside the checkout, or $CONTRASEG_SHARED_DATA."""
    return Path(os.environ.get("CONTRASEG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder; tests that need it skip with a reason when it is absent."""
    root = shared_data_dir()
    if not (root / "README.md").is_file():
        pytest.skip(f"real data not found at {root} (set CONTRASEG_SHARED_DATA to its location)")
    return root


def load_script(path: Path):
    """A script of the repository (not a package module) imported by its path."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def make_phantom(tmp_path_factory):
    """`make_phantom(cases, size, seed)`: the brain phantom dataset `.../ph`, written once per
    session for each (cases, size, seed). Read-only: case ids are `ph/Phantom-0000k`."""
    from contraseg.data.phantom import write_phantom

    made: dict[tuple[int, int, int], Path] = {}

    def make(cases: int = 4, size: int = 32, seed: int = 3) -> Path:
        key = (cases, size, seed)
        if key not in made:
            out = tmp_path_factory.mktemp(f"phantom-{cases}x{size}-seed{seed}") / "ph"
            write_phantom(out, cases=cases, size=size, seed=seed)
            made[key] = out
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """`tiny_run(method, data, *overrides)`: a run of `method`'s tiny preset
    trained once per session for each set of arguments (by default one epoch, no validation,
    no curves or TensorBoard). Read-only: a test that changes a run's files copies it first."""
    from contraseg.engine.runs import start_training

    made: dict[tuple, Path] = {}

    def train(method: str, data: Path, *overrides: str) -> Path:
        overrides = overrides or ("epochs=1", "val_every=0", *QUIET)
        key = (method, str(data), overrides)
        if key not in made:
            out = tmp_path_factory.mktemp(f"run-{method}") / method
            start_training(out, method=method, data=[data], preset="tiny",
                           overrides=list(overrides), resume=False, max_steps=None,
                           max_minutes=None, console=None)
            made[key] = out
        return made[key]

    return train


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> str:
    """One `data.cache_dir` for the session's real-scan runs: each real case is preprocessed
    once per session (entries are keyed by the input files and settings)."""
    return str(tmp_path_factory.mktemp("real-cache"))
