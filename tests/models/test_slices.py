"""2D / 2.5D methods in the 3D engine: slice stacks, neighbours, windows over the whole depth."""

from __future__ import annotations

import pytest
import torch

from contraseg.engine.sliding_window import window_size
from contraseg.models.slices import (
    batch_as_slices,
    centre_slices,
    neighbour_stack,
    per_slice,
    slices_as_batch,
)


def test_slices_round_trip():
    volume = torch.randn(2, 3, 4, 5, 6)
    items = slices_as_batch(volume)
    assert items.shape == (12, 3, 4, 5)
    assert torch.equal(items[1 * 6 + 4], volume[1, :, :, :, 4])  # sample 1, slice 4
    assert torch.equal(batch_as_slices(items, 2), volume)


def test_neighbour_stack_order_and_replicated_ends():
    b, m, z, k = 2, 2, 5, 2
    volume = torch.arange(b * m * z, dtype=torch.float32).view(b, m, 1, 1, z).expand(
        b, m, 3, 4, z).contiguous()
    stack = neighbour_stack(volume, k)
    assert stack.shape == (b * z, m * (2 * k + 1), 3, 4)
    for sample in range(b):
        for s in range(z):
            for mod in range(m):
                for offset in range(-k, k + 1):
                    source = min(max(s + offset, 0), z - 1)  # ends repeated
                    got = stack[sample * z + s, mod * (2 * k + 1) + offset + k]
                    assert torch.equal(got, volume[sample, mod, :, :, source]), (sample, s, mod)
    assert torch.equal(neighbour_stack(volume, 0), slices_as_batch(volume))


def test_per_slice_equals_a_loop_and_chunks_change_nothing():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(2 * 3, 4, 3, padding=1)
    volume = torch.randn(2, 2, 8, 8, 7)
    out = per_slice(net, volume, k=1)
    assert out.shape == (2, 4, 8, 8, 7)
    padded = torch.cat((volume[..., :1], volume, volume[..., -1:]), dim=-1)
    for s in range(7):
        x = padded[..., s:s + 3].permute(0, 1, 4, 2, 3).flatten(1, 2)  # modality-major
        assert torch.allclose(out[..., s], net(x), atol=1e-6)
    assert torch.allclose(per_slice(net, volume, k=1, chunk=3), out, atol=1e-6)


def test_centre_slices():
    assert centre_slices(5, 2) == slice(2, 3)
    assert centre_slices(8, 1) == slice(1, 7)
    with pytest.raises(ValueError):
        centre_slices(3, 2)


class _Stub:
    size_divisor = 16

    def __init__(self, spatial):
        self.spatial = spatial


def test_window_sizes_by_spatial_kind():
    assert window_size(_Stub("3d"), (40, 40, 40)) == (48, 48, 48)
    assert window_size(_Stub("2d"), (40, 40, 1)) == (48, 48, 1)
    assert window_size(_Stub("2.5d"), (40, 40, 5)) == (48, 48, -1)
