"""`introvae`: the normal-appearance generator of CLFC (an IntroVAE trained on healthy T1).

Huang et al., "IntroVAE: Introspective Variational Autoencoders for Photographic Image
Synthesis" (NeurIPS 2018), with the settings of CLFC's authors (Liu et al., MICCAI 2022, their
released `Synthesis` code): 2D slices, a residual encoder with a SPATIAL latent (512 channels at
1/16 of the image side) and its mirror decoder, alpha = 0.5, beta = 0.04, margin m = 120, KL
summed over every element (and the batch), MSE averaged. A tumour T1 encoded and decoded from its
mean latent is the pseudo-normal brain (`pseudo_normal`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from contraseg.errors import ConfigError
from contraseg.models.base import Batch, Method, MethodKind
from contraseg.models.registry import register
from contraseg.models.slices import batch_as_slices, slices_as_batch, whole_slices


@dataclass
class IntroVAEConfig:
    """channels: widths of the encoder stages (authors: 64, 128, 256, 512 for 256^2 slices;
    the first stage halves the image, each later one halves again: side / 2^len(channels) must
    be the latent side, 16 for the authors). latent_channels: 512 (authors). margin: m = 120.
    encoder_lr / decoder_lr: the two learning rates (authors: 1e-4 and 5e-3); None = optim.lr.
    reconstruction_reduction: with reduction "released", "mean" (CLFC's authors, the default:
    the MSE averaged over pixels and batch) or "sum" (1/2 the squared error summed over pixels
    and batch, the same reduction as the KL terms). With reduction "original" the error is
    always the paper's 1/2 sum over each slice's pixels, averaged over slices: "sum" (or unset)
    says so, "mean" is refused rather than silently ignored.
    reduction: "released" (CLFC's authors: every KL summed over the batch and the latent,
    compared with m as it is; the reconstruction as `reconstruction_reduction` says) or
    "original" (the IntroVAE paper's per-image losses: each KL summed over one slice's latent,
    1/2 its squared error summed over its pixels, the hinge per slice, all averaged over the
    slices of the batch; m is the paper's margin per 512 latent dimensions, so it is scaled
    by latent_elements / 512 for a spatial latent).
    """

    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    latent_channels: int = 512
    margin: float = 120.0
    encoder_lr: float | None = 1e-4
    decoder_lr: float | None = 5e-3
    reconstruction_reduction: str | None = None
    reduction: str = "released"

    def __post_init__(self) -> None:
        if not self.channels or min(self.channels) < 1 or self.latent_channels < 1:
            raise ConfigError("introvae needs model.channels (>= 1 each) and latent_channels")
        if self.reconstruction_reduction not in (None, "mean", "sum"):
            raise ConfigError("model.reconstruction_reduction must be 'mean' (CLFC's authors) "
                              f"or 'sum' (IntroVAE), not {self.reconstruction_reduction!r}")
        if self.reduction not in ("released", "original"):
            raise ConfigError("model.reduction must be 'released' (CLFC's authors) or "
                              f"'original' (the IntroVAE paper), not {self.reduction!r}")
        if self.reduction == "original" and self.reconstruction_reduction == "mean":
            raise ConfigError("model.reconstruction_reduction=mean does not apply with "
                              "model.reduction=original (the paper's per-slice sum of squared "
                              "errors); leave it unset or set it to 'sum'")


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over EVERY element, the batch included (the
    authors' `kl`): -1/2 sum(1 + logvar - mu^2 - exp(logvar))."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def kl_per_sample(mu: Tensor, logvar: Tensor) -> Tensor:
    """(N,) the KL of each sample, summed over its latent elements (the IntroVAE paper)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).flatten(1).sum(1)


class ResidualBlock2d(nn.Module):
    """x -> LeakyReLU(IN(conv3(LeakyReLU(IN(conv3 x)))) + shortcut(x)), the shortcut a 1x1
    conv when the width changes (IntroVAE's block, InstanceNorm as CLFC's authors)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, bias=False)
                         if in_channels != out_channels else nn.Identity())
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(out_channels), nn.LeakyReLU(0.2),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(self.body(x) + self.shortcut(x), 0.2)


class VAEEncoder2d(nn.Module):
    """conv5 + IN + LeakyReLU + pool, then [residual block + pool] per further stage, a last
    residual block, and a conv3 to (mu, logvar) of the spatial latent."""

    def __init__(self, channels: list[int], latent_channels: int, in_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 5, padding=2, bias=False),
                                   nn.InstanceNorm2d(channels[0]), nn.LeakyReLU(0.2),
                                   nn.AvgPool2d(2)]
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [ResidualBlock2d(c_in, c_out), nn.AvgPool2d(2)]
        layers.append(ResidualBlock2d(channels[-1], channels[-1]))
        self.main = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels[-1], 2 * latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.main(x)).chunk(2, dim=1)
        return mu, logvar


class VAEDecoder2d(nn.Module):
    """The mirror: conv3 + ReLU from the latent, [residual block + nearest x2] per stage, a
    last residual block and a conv5 to the image."""

    def __init__(self, channels: list[int], latent_channels: int, out_channels: int = 1):
        super().__init__()
        widths = channels[::-1]
        self.head = nn.Sequential(nn.Conv2d(latent_channels, widths[0], 3, padding=1), nn.ReLU())
        layers: list[nn.Module] = []
        for c_in, c_out in zip([widths[0], *widths[:-1]], widths, strict=True):
            layers += [ResidualBlock2d(c_in, c_out), nn.Upsample(scale_factor=2, mode="nearest")]
        layers += [ResidualBlock2d(widths[-1], widths[-1]),
                   nn.Conv2d(widths[-1], out_channels, 5, padding=2)]
        self.main = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.main(self.head(z))


@register("introvae", IntroVAEConfig)
class IntroVAE(Method):
    """IntroVAE (Huang et al. 2018, Eq. 11-12 of the paper; CLFC's authors' settings).

    Encoder loss  L_E = KL(z) + alpha sum_{s=r,p} [m - KL(E(ng(x_s)))]^+ + beta MSE(x_r, x)
    Decoder loss  L_G = alpha sum_{s=r,p} KL(E(x_s)) + beta MSE(x_r, x)
    with x_r = D(z), z ~ q(z|x) (reparameterised), x_p = D(z_p), z_p ~ N(0, I), ng = no
    gradient. Terms (weights in the config): `kl` = KL(z) (1), `margin` = the hinge sum
    (alpha = 0.5), `adversarial` = sum KL(E(x_s)) (alpha = 0.5), `reconstruction` = MSE
    (beta = 0.04). `margin` reaches only the encoder (its inputs are detached), `adversarial`
    only the decoder (the encoder runs on detached copies of its weights, x_r is decoded from a
    detached code), `kl` only the encoder, `reconstruction` both, so one backward of the
    weighted sum gives each network exactly its own loss's gradient. Two learning rates via
    `param_groups`.

    Divergences: the authors alternate an encoder step and a decoder step on every batch; here
    both networks step together on the same batch (one optimiser, two parameter groups), so the
    decoder's step does not see the encoder's update of that batch. The authors' decoder also
    gets the MSE gradient twice (their encoder loss is not detached from the decoder); here
    once. 2D slices come from the 3D engine (`models.slices`): patches (B, 1, X, Y, Z) are Z
    slices. Intensities: the authors rescale slices to [-1, 1]; contraseg feeds what the data
    layer produces (z-scored inside the brain) unless configured otherwise.
    """

    spatial: ClassVar[str] = "2d"
    kind = MethodKind.GENERATOR
    loss_terms = ("kl", "margin", "adversarial", "reconstruction")
    loss_weight_defaults = {"margin": 0.5, "adversarial": 0.5, "reconstruction": 0.04}

    def __init__(self, modalities, num_classes, config: IntroVAEConfig, loss_weights=None):
        super().__init__(modalities, num_classes, loss_weights)
        if len(self.modalities) != 1:
            raise ConfigError(f"introvae models one modality (T1), got {list(self.modalities)}")
        self.config = config
        self.encoder = VAEEncoder2d(config.channels, config.latent_channels)
        self.decoder = VAEDecoder2d(config.channels, config.latent_channels)
        # the in-plane training patch, saved with the weights: inference centres each slice in
        # a canvas of this size, as training did (0, 0: not recorded, older runs)
        self.register_buffer("trained_slice", torch.zeros(2, dtype=torch.long))
        self._register_load_state_dict_pre_hook(self._default_trained_slice)

    def _default_trained_slice(self, state_dict, prefix, *args) -> None:
        """Checkpoints from before the buffer load with it unset (the old padding)."""
        state_dict.setdefault(f"{prefix}trained_slice", torch.zeros(2, dtype=torch.long))

    def check_patch(self, patch: list[int]) -> None:
        """The engine's patch check; the in-plane size is recorded for inference."""
        super().check_patch(patch)
        self.trained_slice.copy_(torch.tensor([int(n) for n in patch[:2]]))

    @property
    def size_divisor(self) -> int:
        return 2 ** len(self.config.channels)

    def param_groups(self, lr: float) -> list[dict]:
        """Encoder and decoder with their own learning rates (None: the run's optim.lr)."""
        return [{"params": list(self.encoder.parameters()),
                 "lr": self.config.encoder_lr or lr},
                {"params": list(self.decoder.parameters()),
                 "lr": self.config.decoder_lr or lr}]

    def reconstruct_slices(self, slices: Tensor) -> Tensor:
        """(N, 1, X, Y) -> the decoding of each slice's mean latent: for a tumour T1, the
        closest normal-looking T1 (the pseudo-normal brain)."""
        return self.decoder(self.encoder(slices)[0])

    def reconstruct(self, images: Tensor) -> Tensor:
        """`reconstruct_slices` of every slice of (B, 1, X, Y, Z)."""
        return batch_as_slices(self.reconstruct_slices(slices_as_batch(images)), images.shape[0])

    def pseudo_normal(self, t1: Tensor) -> Tensor:
        """(B, 1, X, Y, Z) -> the pseudo-normal of every WHOLE slice, centred with zeros in the
        training patch as the sampler did (runs that did not record it: padded to the size
        divisor): what CLFC compares with and `contraseg normal` writes."""
        size = self.trained_slice.tolist() if bool(self.trained_slice.all()) else None
        return whole_slices(self.reconstruct_slices, t1, self.size_divisor, size=size)

    def forward(self, images: Tensor, available: Tensor) -> Tensor:
        return self.reconstruct(images)

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        real = slices_as_batch(batch.images.float())
        mu, logvar = self.encoder(real)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        rec = self.decoder(z)
        fake = self.decoder(torch.randn_like(z))
        original = self.config.reduction == "original"
        kl = kl_per_sample if original else kl_divergence
        margin = self.config.margin * (mu[0].numel() / 512 if original else 1.0)
        hinge = sum(F.relu(margin - kl(*self.encoder(x.detach()))).mean() for x in (rec, fake))
        frozen = {name: p.detach() for name, p in self.encoder.named_parameters()}
        # the decoder's view of x_r starts from a detached code (as the authors' decoder step)
        adversarial = sum(kl(*functional_call(self.encoder, frozen, (x,))).mean()
                          for x in (self.decoder(z.detach()), fake))
        return {"kl": kl(mu, logvar).mean(), "margin": hinge, "adversarial": adversarial,
                "reconstruction": self._reconstruction(rec, real)}

    def _reconstruction(self, rec: Tensor, real: Tensor) -> Tensor:
        if self.config.reduction == "original":  # 1/2 the squared error of each slice
            return 0.5 * (rec - real).pow(2).flatten(1).sum(1).mean()
        if self.config.reconstruction_reduction == "sum":
            return 0.5 * F.mse_loss(rec, real, reduction="sum")
        return F.mse_loss(rec, real)
