"""2D Swin building blocks: a Swin-T-style encoder and a Swin-Unet decoder (Cao et al., ECCV
Workshops 2022).

The encoder and the decoder's transformer stages are MONAI's (`PatchEmbed`, `BasicLayer` with
shifted-window attention, `PatchMergingV2`, whose 2D concatenation order is the Swin papers' and
timm's); MONAI has no patch expanding, so `PatchExpand` (x2) and `FinalPatchExpand` (x4) are
written here after Swin-Unet: a linear layer widens every token, the widened token is spread
over a p x p block, then LayerNorm.

Shapes are channel-first (N, C, H, W) between stages, as MONAI's `BasicLayer` takes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import PatchEmbed
from monai.networks.nets.swin_unetr import BasicLayer, PatchMergingV2
from torch import Tensor, nn


def drop_path_rates(depths: Sequence[int], rate: float) -> list[list[float]]:
    """Stochastic depth rising linearly over all blocks (Swin's rule), split per stage."""
    total = sum(depths)
    rates = [rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for depth in depths:
        out.append(rates[start:start + depth])
        start += depth
    return out


class SwinEncoder2d(nn.Module):
    """Patch embedding (patch p, LayerNorm), then one stage per depth; every stage but the
    last ends with patch merging (x1/2 side, x2 width), as Swin-T: widths embed x 1, 2, 4, 8.

    `forward` returns the input of every stage (the Swin-Unet skips) and the last stage's
    output (the bottleneck)."""

    def __init__(self, in_channels: int, embed_dim: int = 96, depths: Sequence[int] = (2, 2, 2, 2),
                 heads: Sequence[int] = (3, 6, 12, 24), window: int = 7, patch: int = 4,
                 drop_path: float = 0.1, mlp_ratio: float = 4.0):
        super().__init__()
        if len(depths) != len(heads):
            raise ValueError("one head count per stage")
        self.patch_embed = PatchEmbed(patch, in_channels, embed_dim, nn.LayerNorm, spatial_dims=2)
        rates = drop_path_rates(depths, drop_path)
        self.widths = [embed_dim * 2 ** i for i in range(len(depths))]
        self.layers = nn.ModuleList(
            BasicLayer(dim=self.widths[i], depth=depths[i], num_heads=heads[i],
                       window_size=(window, window), drop_path=rates[i], mlp_ratio=mlp_ratio,
                       qkv_bias=True,
                       downsample=PatchMergingV2 if i < len(depths) - 1 else None)
            for i in range(len(depths)))
        self.norm = nn.LayerNorm(self.widths[-1])

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        x = self.patch_embed(x)
        skips = []
        for layer in self.layers:
            skips.append(x)
            x = layer(x.contiguous())
        return skips, channel_norm(self.norm, x)

    def pooled(self, x: Tensor) -> Tensor:
        """(N, C) global average of the bottleneck (the MoCo encoder's output)."""
        return self(x)[1].mean(dim=(2, 3))


def channel_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
    """LayerNorm over the channels of a channel-first (N, C, H, W) tensor."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PatchExpand(nn.Module):
    """Swin-Unet's patch expanding: Linear(C -> factor^2 C / scale) per token, each token
    spread over a factor x factor block, LayerNorm. factor 2 halves the width (scale 2);
    the final x4 expansion keeps it (scale 1)."""

    def __init__(self, dim: int, factor: int = 2, scale: int = 2):
        super().__init__()
        self.factor, self.out_dim = factor, dim // scale
        self.expand = nn.Linear(dim, factor * factor * self.out_dim, bias=False)
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        f, c = self.factor, self.out_dim
        x = self.expand(x.permute(0, 2, 3, 1))  # (N, H, W, f f c)
        x = x.view(n, h, w, f, f, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h * f, w * f, c)
        return self.norm(x).permute(0, 3, 1, 2)


class SwinUnetDecoder(nn.Module):
    """Swin-Unet's decoder: expand the bottleneck, then per level concatenate the skip, a
    linear layer back to the width, a Swin stage (the encoder's depths and heads mirrored) and
    an expansion; LayerNorm, the final x4 expansion and a 1x1 conv to the classes. Each decoder
    stage's drop-path rates are its mirrored encoder stage's, in the same order (Swin-MoCo's
    downstream/model.py `BasicBlockUp`)."""

    def __init__(self, widths: Sequence[int], depths: Sequence[int], heads: Sequence[int],
                 window: int, num_classes: int, patch: int = 4, drop_path: float = 0.1,
                 mlp_ratio: float = 4.0):
        super().__init__()
        levels = len(widths)
        rates = drop_path_rates(depths, drop_path)
        self.first_expand = PatchExpand(widths[-1])
        self.concat = nn.ModuleList()
        self.layers = nn.ModuleList()
        self.expand = nn.ModuleList()
        for level in range(1, levels):  # mirrors encoder stage levels - 1 - level
            stage = levels - 1 - level
            width = widths[stage]
            self.concat.append(nn.Linear(2 * width, width))
            self.layers.append(BasicLayer(dim=width, depth=depths[stage],
                                          num_heads=heads[stage], window_size=(window, window),
                                          drop_path=rates[stage], mlp_ratio=mlp_ratio,
                                          qkv_bias=True))
            self.expand.append(PatchExpand(width) if stage > 0 else nn.Identity())
        self.norm = nn.LayerNorm(widths[0])
        self.final_expand = PatchExpand(widths[0], factor=patch, scale=1)
        self.head = nn.Conv2d(widths[0], num_classes, 1, bias=False)

    def mirrored_stage(self, decoder_layer: int) -> int:
        """The encoder stage whose width, depth and heads decoder layer i shares."""
        return len(self.layers) - 1 - decoder_layer

    def forward(self, skips: list[Tensor], bottleneck: Tensor) -> Tensor:
        x = self.first_expand(bottleneck)
        for i, (concat, layer, expand) in enumerate(zip(self.concat, self.layers, self.expand,
                                                        strict=True)):
            skip = skips[self.mirrored_stage(i)]
            x = torch.cat([x, skip], dim=1).permute(0, 2, 3, 1)
            x = layer(concat(x).permute(0, 3, 1, 2).contiguous())
            x = expand(x)
        x = self.final_expand(channel_norm(self.norm, x))
        return self.head(x)


def copy_encoder_to_decoder(encoder: SwinEncoder2d, decoder: SwinUnetDecoder) -> list[str]:
    """Initialise every decoder stage's Swin blocks with the mirrored encoder stage's (the
    journal version's way of letting pre-training reach the decoder); returns
    'decoder.layers.i.blocks.j <- encoder.layers.k.blocks.j' lines."""
    done = []
    for i, layer in enumerate(decoder.layers):
        stage = decoder.mirrored_stage(i)
        source = encoder.layers[stage]
        for j, block in enumerate(layer.blocks):
            block.load_state_dict(source.blocks[j].state_dict())
            done.append(f"decoder.layers.{i}.blocks.{j} <- encoder.layers.{stage}.blocks.{j}")
    return done
