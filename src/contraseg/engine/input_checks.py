"""Warnings about inputs that do not look like what a run learnt from (voxel sizes far from the
training scans', a brain that is not skull-stripped): one line each, never an error."""

from __future__ import annotations

import warnings

from contraseg.data.io import LoadedCase
from contraseg.errors import ContrasegWarning

SPACING_RATIO_WARNING = 2.0
BACKGROUND_SHARE_STRIPPED = 0.25  # skull-stripped BraTS-like scans: ~80 % background voxels


def format_mm(spacing) -> str:
    return "x".join(f"{s:.3g}" for s in spacing) + " mm"


def warn_if_not_skull_stripped(loaded: LoadedCase) -> None:
    """Warn when the first image has almost no constant background: the methods learnt from
    skull-stripped scans, whose brain sits in a zero background."""
    image = loaded.image[0]
    background = max(float((image == 0).mean()), float((image == image.min()).mean()))
    if background < BACKGROUND_SHARE_STRIPPED:
        warnings.warn(f"{loaded.sources.get(loaded.modalities[0], loaded.case_id)}: does not "
                      f"look skull-stripped ({100 * background:.0f} % background voxels; "
                      "stripped scans have most): strip it first (HD-BET, SynthStrip)",
                      ContrasegWarning, stacklevel=2)
