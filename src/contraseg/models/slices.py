"""2D and 2.5D methods inside the 3D engine: slice stacks in, volumes out.

The engine hands every method volumes (B, M, X, Y, Z) and expects logits (B, C, X, Y, Z). A 2D
or 2.5D method treats the last axis (axial slices after RAS orientation) as a stack: each slice z
is segmented from itself (2D) or from itself and its K neighbours on each side (2.5D, 2K + 1
slices per modality stacked as channels). So patches, augmentation, sliding windows, modality
subsets and evaluation stay the engine's, and a 2.5D prediction equals slice-by-slice
inference as long as each window spans the whole depth (`engine.sliding_window.window_size`
does that for `spatial == "2.5d"`). Neighbours beyond the stack repeat its first / last slice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def slices_as_batch(volume: Tensor) -> Tensor:
    """(B, C, X, Y, Z) -> (B Z, C, X, Y): every slice an item, sample-major."""
    return volume.permute(0, 4, 1, 2, 3).flatten(0, 1)


def batch_as_slices(items: Tensor, batch: int) -> Tensor:
    """(B Z, C, X, Y) -> (B, C, X, Y, Z), the inverse of `slices_as_batch`."""
    return items.unflatten(0, (batch, -1)).permute(0, 2, 3, 4, 1)


def neighbour_stack(volume: Tensor, k: int) -> Tensor:
    """(B, M, X, Y, Z) -> (B Z, M (2k + 1), X, Y): for slice z the slices z-k..z+k of every
    modality, modality-major (m0: z-k..z+k, m1: ...); the stack's ends are repeated."""
    if k == 0:
        return slices_as_batch(volume)
    b, m, x, y, z = volume.shape
    first, last = volume[..., :1], volume[..., -1:]
    padded = torch.cat((first.expand(b, m, x, y, k), volume, last.expand(b, m, x, y, k)), dim=4)
    windows = padded.unfold(4, 2 * k + 1, 1)  # (B, M, X, Y, Z, 2k+1)
    return windows.permute(0, 4, 1, 5, 2, 3).reshape(b * z, m * (2 * k + 1), x, y)


def per_slice(network: Callable[[Tensor], Tensor], volume: Tensor, k: int = 0,
              chunk: int | None = None) -> Tensor:
    """Run a 2D `network` on every slice (with k neighbours) of (B, M, X, Y, Z) and stack the
    outputs back to (B, C, X, Y, Z); `chunk` slices per call bound the memory."""
    items = neighbour_stack(volume, k)
    if chunk is None or chunk >= len(items):
        out = network(items)
    else:
        out = torch.cat([network(part) for part in items.split(chunk)])
    return batch_as_slices(out, volume.shape[0])


def centre_slices(depth: int, k: int) -> slice:
    """The slices of a stack of `depth` that have all their 2k neighbours inside it."""
    if depth < 2 * k + 1:
        raise ValueError(f"a stack of {depth} slices has no slice with {k} neighbours per side")
    return slice(k, depth - k)


def whole_slices(network: Callable[[Tensor], Tensor], volume: Tensor, divisor: int = 1,
                 chunk: int | None = 32, size: Sequence[int] | None = None) -> Tensor:
    """`per_slice` on whole axial slices, padded in-plane and cropped back.

    With `size` (the in-plane training patch), each slice is centred with zeros in a canvas of
    at least that size (and a multiple of `divisor`), as the training sampler centres a slice
    smaller than its patch (`data.patches.crop_patch`): the network sees the context and the
    instance-norm statistics it was trained on. Without it (runs that did not record their
    patch), the sizes are padded with edge values at the end up to a multiple of `divisor`."""
    x, y = volume.shape[2:4]
    if size is None:
        before, pad = (0, 0), (-x % divisor, -y % divisor)
        mode = "replicate"
    else:
        target = [max(n + -n % divisor, int(s) + -int(s) % divisor)
                  for n, s in zip((x, y), size, strict=True)]
        before = ((target[0] - x) // 2, (target[1] - y) // 2)
        pad = (target[0] - x - before[0], target[1] - y - before[1])
        mode = "constant"
    if any(before) or any(pad):
        flat = F.pad(slices_as_batch(volume), (before[1], pad[1], before[0], pad[0]), mode=mode)
        volume = batch_as_slices(flat, volume.shape[0])
    out = per_slice(network, volume, 0, chunk)
    return out[:, :, before[0]:before[0] + x, before[1]:before[1] + y]
