"""Swin blocks: encoder/decoder shapes, patch expanding, and the decoder-from-encoder copy."""

from __future__ import annotations

import itertools

import pytest
import torch

from contraseg.models.swin import (
    PatchExpand,
    SwinEncoder2d,
    SwinUnetDecoder,
    copy_encoder_to_decoder,
    drop_path_rates,
)


def tiny(classes: int = 3) -> tuple[SwinEncoder2d, SwinUnetDecoder]:
    torch.manual_seed(0)
    encoder = SwinEncoder2d(4, 8, depths=(2, 2, 2), heads=(1, 2, 4), window=4, patch=4)
    decoder = SwinUnetDecoder(encoder.widths, (2, 2, 2), (1, 2, 4), 4, classes)
    return encoder, decoder


def test_shapes_through_encoder_and_decoder():
    encoder, decoder = tiny()
    skips, bottleneck = encoder(torch.randn(2, 4, 64, 64))
    assert [tuple(s.shape[1:]) for s in skips] == [(8, 16, 16), (16, 8, 8), (32, 4, 4)]
    assert tuple(bottleneck.shape) == (2, 32, 4, 4)
    assert tuple(decoder(skips, bottleneck).shape) == (2, 3, 64, 64)
    assert tuple(encoder.pooled(torch.randn(3, 4, 64, 64)).shape) == (3, 32)


def test_patch_expand_spreads_each_token_over_its_block():
    expand = PatchExpand(4, factor=2, scale=2)
    with torch.no_grad():
        expand.expand.weight.copy_(torch.eye(8, 4))
    x = torch.arange(2 * 4 * 1 * 1, dtype=torch.float32).view(2, 4, 1, 1)
    out = expand(x)
    assert tuple(out.shape) == (2, 2, 2, 2)
    # token (4 values) -> linear (8 values: the 4, then zeros) -> 2x2 positions of 2 channels,
    # row-major: position (0, 0) gets values 0-1, (0, 1) 2-3, (1, 0) and (1, 1) zeros; then LN
    raw = expand.expand(x.permute(0, 2, 3, 1)).view(2, 2, 2, 2)
    expected = expand.norm(raw).permute(0, 3, 1, 2)
    assert torch.allclose(out, expected)


@pytest.mark.parametrize("factor, scale", [(2, 2), (4, 1)])
def test_patch_expand_places_every_block_of_a_larger_map(factor, scale):
    """On a 3x2 map, token (i, j)'s linear output, read as (p1, p2, c) with p1 outermost
    (Swin-Unet's rearrange 'b h w (p1 p2 c) -> b (h p1) (w p2) c'), lands at row i f + p1 and
    column j f + p2: an explicit loop, independent of the view/permute under test."""
    torch.manual_seed(0)
    dim = 8
    expand = PatchExpand(dim, factor=factor, scale=scale)
    x = torch.randn(2, dim, 3, 2)
    out = expand(x)
    c = dim // scale
    assert tuple(out.shape) == (2, c, 3 * factor, 2 * factor)
    with torch.no_grad():
        tokens = x.permute(0, 2, 3, 1) @ expand.expand.weight.T  # (N, H, W, f f c)
        for i, j, p1, p2 in itertools.product(range(3), range(2), range(factor), range(factor)):
            start = (p1 * factor + p2) * c
            want = expand.norm(tokens[:, i, j, start:start + c])
            torch.testing.assert_close(out[:, :, i * factor + p1, j * factor + p2], want)


def test_decoder_blocks_copy_the_mirrored_encoder_stage():
    encoder, decoder = tiny()
    lines = copy_encoder_to_decoder(encoder, decoder)
    assert lines == ["decoder.layers.0.blocks.0 <- encoder.layers.1.blocks.0",
                     "decoder.layers.0.blocks.1 <- encoder.layers.1.blocks.1",
                     "decoder.layers.1.blocks.0 <- encoder.layers.0.blocks.0",
                     "decoder.layers.1.blocks.1 <- encoder.layers.0.blocks.1"]
    for i, layer in enumerate(decoder.layers):
        source = encoder.layers[decoder.mirrored_stage(i)]
        for mine, theirs in zip(layer.blocks, source.blocks, strict=True):
            for (name, a), (_, b) in zip(mine.state_dict().items(),
                                         theirs.state_dict().items(), strict=True):
                assert torch.equal(a, b), name
    # the copy is a copy: training the decoder leaves the encoder alone
    with torch.no_grad():
        decoder.layers[0].blocks[0].norm1.weight.add_(1)
    assert not torch.equal(decoder.layers[0].blocks[0].norm1.weight,
                           encoder.layers[1].blocks[0].norm1.weight)


def test_decoder_stages_keep_the_mirrored_encoder_stages_drop_path_order():
    """As the authors' BasicBlockUp: stage s of the decoder drops paths at the rates of encoder
    stage s, block by block in the same order."""
    encoder = SwinEncoder2d(4, 8, (2, 2, 2), (1, 2, 4), window=4, drop_path=0.3)
    decoder = SwinUnetDecoder(encoder.widths, (2, 2, 2), (1, 2, 4), window=4, num_classes=3,
                              drop_path=0.3)
    def rates(layer):
        return [float(getattr(b.drop_path, "drop_prob", 0.0) or 0.0) for b in layer.blocks]
    for i, layer in enumerate(decoder.layers):
        assert rates(layer) == rates(encoder.layers[decoder.mirrored_stage(i)])
    assert rates(decoder.layers[0]) == pytest.approx([0.12, 0.18])  # stage 1 of linspace(0, .3, 6)


def test_drop_path_rises_linearly_over_all_blocks():
    rates = drop_path_rates((2, 2, 2, 2), 0.1)
    flat = [r for stage in rates for r in stage]
    assert flat[0] == 0 and flat[-1] == pytest.approx(0.1) and len(flat) == 8
    assert all(b > a for a, b in zip(flat, flat[1:], strict=False))
