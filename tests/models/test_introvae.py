"""IntroVAE: the KL and margin terms against hand computation, which network each term trains,
the spatial latent and the pseudo-normal path."""

from __future__ import annotations

import math

import pytest
import torch

from contraseg.engine.config import load_config
from contraseg.errors import ConfigError
from contraseg.models.base import Batch
from contraseg.models.introvae import IntroVAE, kl_divergence
from contraseg.models.registry import build_method, list_methods


def tiny(**model) -> IntroVAE:
    config = load_config("introvae", "tiny")
    torch.manual_seed(0)
    return build_method("introvae", ("t1",), 2, {**config.model, **model}, config.loss_weights)


def batch(n=2, side=16, depth=3, seed=0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, side, side, depth, generator=gen) * 2 - 1
    return Batch(images, torch.ones(n, 1, dtype=torch.bool))


def test_kl_against_hand_computation():
    mu = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [math.log(0.5), 0.0]])
    # per element 1/2 (sigma^2 + mu^2 - 1 - log sigma^2), summed over everything
    by_hand = sum(0.5 * (math.exp(lv) + m**2 - 1 - lv)
                  for m, lv in zip(mu.flatten().tolist(), logvar.flatten().tolist(), strict=True))
    assert kl_divergence(mu, logvar).item() == pytest.approx(by_hand, rel=1e-6)
    assert kl_divergence(torch.zeros(3, 4), torch.zeros(3, 4)).item() == 0.0


def test_margin_term_is_the_hinge_of_the_re_encoded_kls():
    method = tiny()
    b = batch()
    torch.manual_seed(5)
    terms = method.losses(b)
    # replay the same random draws and recompute the hinge by hand
    torch.manual_seed(5)
    real = b.images.permute(0, 4, 1, 2, 3).flatten(0, 1)
    mu, logvar = method.encoder(real)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    rec, fake = method.decoder(z), method.decoder(torch.randn_like(z))
    kls = [kl_divergence(*method.encoder(x)).item() for x in (rec, fake)]  # D(z) = D(ng(z))
    hinge = sum(max(0.0, 120.0 - k) for k in kls)
    assert terms["margin"].item() == pytest.approx(hinge, rel=1e-5)
    assert terms["adversarial"].item() == pytest.approx(sum(kls), rel=1e-5)
    assert terms["kl"].item() == pytest.approx(kl_divergence(mu, logvar).item(), rel=1e-6)
    assert terms["reconstruction"].item() == pytest.approx(
        torch.mean((rec - real) ** 2).item(), rel=1e-6)
    assert hinge > 0  # an untrained encoder: re-encoded KLs are below the margin


@pytest.mark.parametrize(("term", "encoder_moves", "decoder_moves"), [
    ("kl", True, False), ("margin", True, False), ("adversarial", False, True),
    ("reconstruction", True, True)])
def test_each_term_trains_its_own_network(term, encoder_moves, decoder_moves):
    method = tiny()
    torch.manual_seed(1)
    method.losses(batch())[term].backward()
    grads = {name: any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
             for name, net in (("encoder", method.encoder), ("decoder", method.decoder))}
    assert grads == {"encoder": encoder_moves, "decoder": decoder_moves}


def test_default_weights_are_the_authors():
    method = build_method("introvae", ("t1",), 2, {"channels": [4, 8], "latent_channels": 4})
    assert method.loss_weights == {"kl": 1.0, "margin": 0.5, "adversarial": 0.5,
                                   "reconstruction": 0.04}
    paper = load_config("introvae", "paper")
    assert paper.model["latent_channels"] == 512 and paper.data.patch_size == [256, 256, 1]
    assert (paper.model["encoder_lr"], paper.model["decoder_lr"]) == (1e-4, 5e-3)


def test_spatial_latent_and_param_groups():
    method = build_method("introvae", ("t1",), 2, {"channels": [8, 16, 32, 64],
                                                    "latent_channels": 8})
    mu, logvar = method.encoder(torch.zeros(1, 1, 256, 256))
    assert mu.shape == logvar.shape == (1, 8, 16, 16)  # 256 / 16, as the authors' 512 x 16 x 16
    groups = method.param_groups(lr=0.1)
    assert [g["lr"] for g in groups] == [1e-4, 5e-3]
    assert sum(len(g["params"]) for g in groups) == len(list(method.parameters()))


def test_reconstruct_keeps_the_volume_shape():
    method = tiny()
    images = batch(n=1, depth=5).images
    out = method(images, torch.ones(1, 1, dtype=torch.bool))
    assert out.shape == images.shape and torch.isfinite(out).all()


def test_refusals():
    config = load_config("introvae", "tiny")
    with pytest.raises(ConfigError, match="one modality"):
        build_method("introvae", ("t1", "t2"), 2, config.model)
    assert "introvae" not in list_methods(kind="segmentation")
    assert "introvae" in list_methods(kind="generator")


def test_sum_reduction_is_half_the_summed_squared_error():
    mean, total = tiny(), tiny(reconstruction_reduction="sum")
    total.load_state_dict(mean.state_dict())
    b = batch()
    torch.manual_seed(3)
    a = mean.losses(b)["reconstruction"]
    torch.manual_seed(3)
    s = total.losses(b)["reconstruction"]
    assert s.item() == pytest.approx(0.5 * a.item() * b.images.numel(), rel=1e-5)
    with pytest.raises(ConfigError, match="reconstruction_reduction"):
        tiny(reconstruction_reduction="median")
