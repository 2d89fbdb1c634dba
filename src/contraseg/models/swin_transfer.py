"""Transferred weights for the Swin encoder (Swin-MoCo's start): a contraseg run or checkpoint, or
a timm / torchvision Swin state dict, mapped by name onto contraseg's encoder; what does not fit
is reported, not silently dropped."""

from __future__ import annotations

import re

from torch import Tensor, nn


def swin_encoder_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A Swin state dict renamed to `SwinEncoder2d`'s keys: a contraseg swin-moco run's
    `encoder.*`, torchvision's `features.*` (Swin-T/S/B), or timm's `layers.*` (patch merging at
    the end of a stage before timm 0.9, at the start of the next one since). Keys without a
    counterpart keep a name that says where they came from (they are reported, not loaded)."""
    if any(k.startswith("encoder.") for k in state):
        return {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    if any(k.startswith("features.") for k in state):
        return {_torchvision_key(k): v for k, v in state.items()}
    merge_at_start = (not any(k.startswith("layers.0.downsample.") for k in state)
                      and any(".downsample." in k for k in state))
    return {_timm_key(k, merge_at_start): v for k, v in state.items()}


def _mlp_names(key: str) -> str:
    return (key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")
            .replace(".mlp.0.", ".mlp.linear1.").replace(".mlp.3.", ".mlp.linear2."))


def _timm_key(key: str, merge_at_start: bool) -> str:
    match = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", key)
    if match and merge_at_start:
        return f"layers.{int(match[1]) - 1}.downsample.{match[2]}"
    return _mlp_names(key)


def _torchvision_key(key: str) -> str:
    parts = key.split(".")
    if parts[0] != "features":
        return key
    index = int(parts[1])
    rest = ".".join(parts[2:])
    if index == 0:  # Sequential(conv, permute, LayerNorm)
        return {"0": "patch_embed.proj", "2": "patch_embed.norm"}.get(parts[2], key) + \
            "." + ".".join(parts[3:])
    if index % 2:  # stage (index - 1) / 2, its blocks
        return _mlp_names(f"layers.{(index - 1) // 2}.blocks.{rest}")
    return f"layers.{index // 2 - 1}.downsample.{rest}"


def transferred_encoder_state(state: dict[str, Tensor], in_channels: int
                              ) -> tuple[dict[str, Tensor], list[str]]:
    """`swin_encoder_state` and, for an ImageNet checkpoint (timm / torchvision layout, 3 input
    channels), its first layer inflated to the modalities: the RGB kernels averaged and repeated
    over the M channels, times 3 / M, so M identical channels give what the RGB layer gives
    for a grey slice repeated to RGB (the authors' input). Returns the state and a note per
    change. A contraseg run's own encoder is taken as it is."""
    mapped = swin_encoder_state(state)
    if any(k.startswith("encoder.") for k in state):
        return mapped, []
    weight = mapped.get("patch_embed.proj.weight")
    if weight is None or weight.ndim != 4 or weight.shape[1] != 3:
        return mapped, []
    mapped["patch_embed.proj.weight"] = (weight.mean(1, keepdim=True)
                                         .repeat(1, in_channels, 1, 1) * (3 / in_channels))
    return mapped, [f"patch_embed.proj.weight: RGB kernels averaged over the colours, repeated "
                    f"for {in_channels} modalities, x 3/{in_channels}"]


def load_matching(module: nn.Module, state: dict[str, Tensor]) -> tuple[list[str], list[str]]:
    """Copy every tensor of `state` whose name and shape match `module`'s; returns the loaded
    names and 'name: reason' for the others."""
    own = module.state_dict()
    loaded, skipped, update = [], [], {}
    for key, value in state.items():
        if key not in own:
            skipped.append(f"{key}: not in the model")
        elif tuple(own[key].shape) != tuple(value.shape):
            skipped.append(f"{key}: shape {tuple(value.shape)}, the model's "
                           f"{tuple(own[key].shape)}")
        else:
            update[key] = value.to(own[key].dtype)
            loaded.append(key)
    module.load_state_dict(update, strict=False)
    return loaded, skipped
