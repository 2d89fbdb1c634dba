"""Writing matplotlib figures (object API, Agg canvas: no pyplot, no display)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from contraseg.utils.fs import atomic_path


def save_png(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write `fig` as a PNG atomically (no half-written picture if drawing fails)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return path
