"""Shared fixtures. Real scans live in ../shared/data beside the checkout (never in the repo)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
