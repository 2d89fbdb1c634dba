"""Shared by the method tests: a registered method built from its `tiny` preset, random
images and targets, availability masks."""

from __future__ import annotations

import torch

from contraseg.engine.config import load_config
from contraseg.models.base import Method
from contraseg.models.registry import build_method

MODALITIES = ("t1", "t1c", "t2", "flair")
NUM_CLASSES = 4


def build_tiny(name: str, modalities: tuple[str, ...] = MODALITIES,
               weights: dict[str, float] | None = None, **model) -> tuple[Method, list[int]]:
    """Method `name` from its tiny preset (model settings and loss weights overridden), seeded,
    and the preset's patch size."""
    config = load_config(name, "tiny")
    torch.manual_seed(0)
    method = build_method(name, modalities, NUM_CLASSES, {**config.model, **model},
                          {**config.loss_weights, **(weights or {})})
    return method, config.data.patch_size


def random_inputs(shape: list[int], batch: int = 2, m: int = len(MODALITIES), seed: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (batch, m, *shape) and a target of NUM_CLASSES classes, from one seeded stream."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, m, *shape, generator=gen)
    return images, torch.randint(0, NUM_CLASSES, (batch, *shape), generator=gen)


def mask(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)
