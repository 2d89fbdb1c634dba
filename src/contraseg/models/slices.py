"""2D and 2.5D methods inside the 3D engine: slice stacks in, volumes out.

The engine hands every method volumes (B, M, X, Y, Z) and expects logits (B, C, X, Y, Z). A 2D
or 2.5D method treats the last axis (axial slices after RAS orientation) as a stack: each slice z
is segmented from itself (2D) or from itself and its K neighbours on each side (2.5D, 2K + 1
slices per modality stacked as channels). So patches, augmentation, sliding windows, modality
subsets and evaluation stay the engine's, and a 2.5D prediction equals slice-by-slice
inference as long as each window spans the whole depth (`engine.infer.window_size` does that
for `spatial == "2.5d"`). Neighbours beyond the stack repeat its first / last slice.
"""

from __future__ import annotations

from collections.abc import Callable

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
                 chunk: int | None = 32) -> Tensor:
    """`per_slice` on whole axial slices whose in-plane sizes are padded (edge values) up to a
    multiple of `divisor` and cropped back: the same result for a case whatever its size."""
    x, y = volume.shape[2:4]
    pad_x, pad_y = -x % divisor, -y % divisor
    if pad_x or pad_y:
        flat = F.pad(slices_as_batch(volume), (0, pad_y, 0, pad_x), mode="replicate")
        volume = batch_as_slices(flat, volume.shape[0])
    return per_slice(network, volume, 0, chunk)[:, :, :x, :y]
