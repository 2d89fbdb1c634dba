"""Data files shipped inside the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def json_files(package: str, folder: str) -> dict[str, Path]:
    """The `*.json` files of `package`'s `folder`, by file stem."""
    root = resources.files(package).joinpath(folder)
    return {Path(str(f)).stem: Path(str(f)) for f in root.iterdir() if str(f).endswith(".json")}
