"""Sliding-window inference over many modality subsets at once, with flip test-time
augmentation.

Windows and subsets: `sliding_window_outputs` runs MONAI's `sliding_window_inference` once; for
each window the method's `encode` runs once and its `decode` once per availability pattern
(batched `InferConfig.subset_chunk` patterns at a time), so K subsets cost one encoder pass per
window. Windows are the training patch size (rounded up to the method's `size_divisor`); MONAI
pads an image smaller than a window with zeros (the z-scored background value) and crops the
result back, so any image size works.

Flip TTA (nnU-Net's mirroring): softmax probabilities averaged over the 8 combinations of flips
of the three spatial axes, each output flipped back before averaging.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import Tensor

from contraseg.engine.config import InferConfig
from contraseg.engine.distributed import autocast
from contraseg.models.base import Method


def method_device(method: torch.nn.Module) -> torch.device:
    """The device of the method's parameters (the CPU for a method without any)."""
    first = next(method.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def window_size(method: Method, roi_size: Sequence[int]) -> tuple[int, ...]:
    """The ROI rounded up to a multiple of the method's `size_divisor` (1 when it has none).

    2D and 2.5D methods (`models.slices`) divide only the in-plane sizes; a 2.5D window spans
    the whole depth (-1: MONAI takes the image's size), so every slice sees its true neighbours
    and the result equals slice-by-slice inference.
    """
    divisor = int(method.size_divisor)
    rounded = [-(-int(n) // divisor) * divisor for n in roi_size]
    if method.spatial == "2d":
        rounded[-1] = int(roi_size[-1])
    elif method.spatial == "2.5d":
        rounded[-1] = -1
    return tuple(rounded)


def _tile(encoded: object, times: int) -> object:
    """Repeat every tensor in `encoded` (nested tuples/lists/dicts) `times` along dim 0."""
    if times == 1:
        return encoded
    if isinstance(encoded, Tensor):
        return encoded.repeat(times, *([1] * (encoded.ndim - 1)))
    if isinstance(encoded, Mapping):
        return {key: _tile(value, times) for key, value in encoded.items()}
    if isinstance(encoded, list | tuple):
        return type(encoded)(_tile(value, times) for value in encoded)
    return encoded


def _decode_chunk(method: Method, encoded: object, rows: Tensor, batch: int) -> Tensor:
    """Decode n patterns for a batch of B windows in one call: (B, n * C, *roi) logits."""
    n = rows.shape[0]
    available = rows.repeat_interleave(batch, dim=0)  # pattern-major, like `_tile`
    logits = method.decode(_tile(encoded, n), available)  # (n * B, C, *roi)
    return logits.unflatten(0, (n, batch)).transpose(0, 1).flatten(1, 2)


def _subset_predictor(method: Method, availability: Tensor, chunk: int, bf16: bool,
                      probabilities: bool = False) -> Callable[[Tensor], Tensor]:
    """The window predictor: one `encode`, then `decode` for every pattern, by chunks; with
    `probabilities`, each pattern's probabilities (`Method.activate`) instead of its logits."""
    device = method_device(method)

    def predict(window: Tensor) -> Tensor:
        with autocast("bf16" if bf16 else "none", device):
            encoded = method.encode(window)
            parts = [_decode_chunk(method, encoded, availability[i:i + chunk], window.shape[0])
                     for i in range(0, availability.shape[0], chunk)]
        out = torch.cat(parts, dim=1).float()
        if probabilities:
            out = method.activate(out.unflatten(1, (availability.shape[0], -1)), dim=2)
            out = out.flatten(1, 2)
        return out

    return predict


def _check_shapes(method: Method, image: Tensor, availability: Tensor, roi: Sequence[int]) -> None:
    if image.ndim != 2 + len(roi) or image.shape[0] != 1:
        raise ValueError(f"image must be (1, M, *S) with {len(roi)} spatial dims, "
                         f"not {tuple(image.shape)}")
    if availability.ndim != 2 or availability.shape[1] != image.shape[1]:
        raise ValueError(f"availability must be (K, {image.shape[1]}), "
                         f"not {tuple(availability.shape)}")
    if image.shape[1] != method.num_modalities:
        raise ValueError(f"image has {image.shape[1]} channels; the method takes "
                         f"{method.num_modalities} ({', '.join(method.modalities)})")


def sliding_window_outputs(
    method: Method,
    image: Tensor,
    availability: Tensor,
    cfg: InferConfig,
    roi_size: Sequence[int],
    *,
    bf16: bool = False,
    out_device: str | torch.device | None = None,
) -> Tensor:
    """Logits (K, C, *S) of one image (1, M, *S) for each availability row (K, M) bool (with
    `cfg.blend_space` "probabilities": blended softmax probabilities instead).

    Windows of `roi_size` (rounded up to `size_divisor`) overlap by `cfg.overlap`, blended with
    `cfg.blend` weights (gaussian: sigma = roi / 8), `cfg.sw_batch_size` windows per call.
    Channels of unavailable modalities are masked by the method itself, so the image may hold
    all of them (evaluation over the 15 subsets of 4 modalities: one call, 15 logit maps).
    Runs under `torch.inference_mode` in eval mode (the method's mode is restored after), on the
    device of the method's parameters; the stitched result stays there unless `out_device` says
    otherwise. `bf16` runs the method under bfloat16 autocast; stitching is float32.
    """
    roi = window_size(method, roi_size)
    _check_shapes(method, image, availability, roi)
    device = method_device(method)
    rows = availability.to(device=device, dtype=torch.bool)
    predictor = _subset_predictor(method, rows, max(1, int(cfg.subset_chunk)), bf16,
                                  probabilities=cfg.blend_space == "probabilities")
    was_training = method.training
    method.eval()
    try:
        with torch.inference_mode():
            image = with_case_inputs(method, image.to(device=device, dtype=torch.float32),
                                     rows.any(0, keepdim=True))
            out = sliding_window_inference(
                image, roi, int(cfg.sw_batch_size),
                predictor, overlap=float(cfg.overlap), mode=cfg.blend, device=out_device,
            )
    finally:
        method.train(was_training)
    return torch.as_tensor(out)[0].unflatten(0, (rows.shape[0], -1))


def with_case_inputs(method: Method, image: Tensor, present: Tensor) -> Tensor:
    """The image (1, M, *S) with the method's per-case inputs appended as channels (computed
    from the modalities of `present` (1, M), which every pattern of the call may use)."""
    extra = method.case_inputs(image, present)
    return image if extra is None else torch.cat([image, extra.to(image)], dim=1)


def flip_combinations(spatial_dims: int = 3) -> list[tuple[int, ...]]:
    """The 2^d subsets of spatial axes of a (N, C, *S) tensor: (), (2,), (3,), ..., (2, 3, 4)."""
    axes = range(2, 2 + spatial_dims)
    return [dims for r in range(spatial_dims + 1) for dims in itertools.combinations(axes, r)]


def sliding_window_probabilities(
    method: Method,
    image: Tensor,
    availability: Tensor,
    cfg: InferConfig,
    roi_size: Sequence[int],
    *,
    bf16: bool = False,
    out_device: str | torch.device | None = None,
) -> Tensor:
    """Class probabilities (K, C, *S); with `cfg.tta_flips`, the mean over all flips.

    Each flipped pass flips the image, runs `sliding_window_outputs`, takes the softmax (unless
    the windows already blended probabilities) and flips it back (nnU-Net's mirroring; 8
    passes in 3D). A region-based method averages its region sigmoids instead and returns the
    class scores of models/regions.py (argmax: nnU-Net's region rule).
    """
    flips = flip_combinations(image.ndim - 2) if cfg.tta_flips else [()]
    total: Tensor | None = None
    for dims in flips:
        flipped = image.flip(dims) if dims else image
        out = sliding_window_outputs(method, flipped, availability, cfg, roi_size, bf16=bf16,
                                    out_device=out_device)
        prob = out if cfg.blend_space == "probabilities" else method.activate(out, dim=1)
        prob = prob.flip(dims) if dims else prob
        total = prob if total is None else total + prob
    return method.class_scores(total / len(flips), dim=1)
