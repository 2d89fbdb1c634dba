"""IntroVAE: the KL and margin terms against hand computation, which network each term trains,
the spatial latent and the pseudo-normal path."""

from __future__ import annotations

import math

import pytest
import torch

from contraseg.engine.config import load_config
from contraseg.errors import ConfigError
from contraseg.models.base import Batch
from contraseg.models.introvae import IntroVAE, kl_divergence, kl_per_sample
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


def replayed_losses(method: IntroVAE, b: Batch, seed: int = 5):
    """The loss terms, then the same random draws replayed by hand: (terms, real slices, mu,
    logvar, reconstruction x_r, prior sample x_p)."""
    torch.manual_seed(seed)
    terms = method.losses(b)
    torch.manual_seed(seed)
    real = b.images.permute(0, 4, 1, 2, 3).flatten(0, 1)
    mu, logvar = method.encoder(real)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    return terms, real, mu, logvar, method.decoder(z), method.decoder(torch.randn_like(z))


def test_margin_term_is_the_hinge_of_the_re_encoded_kls():
    method = tiny()
    terms, real, mu, logvar, rec, fake = replayed_losses(method, batch())
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


def test_paper_preset_steps_encoder_and_decoder_by_plain_sgd():
    """The authors' optimiser, by behaviour: with every gradient 1 each step moves the encoder
    by exactly -1e-4 and the decoder by -5e-3, the second step as the first (no momentum, no
    weight decay, a constant lr), on the 256^2 slices of a 512-channel latent."""
    from contraseg.engine.optim import make_optimizer, make_scheduler

    paper = load_config("introvae", "paper")
    method = build_method("introvae", ("t1",), 2, paper.model, paper.loss_weights)
    method.check_patch(paper.data.patch_size)
    with torch.no_grad():
        mu, _ = method.encoder(torch.zeros(1, 1, 256, 256))
    assert mu.shape == (1, 512, 16, 16)
    optimizer = make_optimizer(method.param_groups(paper.optim.lr), paper.optim)
    schedule = make_scheduler(optimizer, paper.optim, paper.total_steps)
    encoder, decoder = next(method.encoder.parameters()), next(method.decoder.parameters())
    for _ in range(2):
        before = encoder.detach().clone(), decoder.detach().clone()
        for p in method.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
        schedule.step()
        assert torch.allclose(before[0] - encoder.detach(), torch.full_like(encoder, 1e-4))
        assert torch.allclose(before[1] - decoder.detach(), torch.full_like(decoder, 5e-3))


def test_original_margin_counts_per_512_latent_elements():
    """`reduction=original`: the hinge is the mean over slices of max(0, m' - KL(slice)) with
    m' = m x (latent elements) / 512, each KL 1/2 sum(sigma^2 + mu^2 - 1 - log sigma^2) by
    hand; a margin far above every KL makes the scaling decide the value."""
    method = tiny(reduction="original", margin=5120.0)
    terms, _, mu, _, rec, fake = replayed_losses(method, batch())
    elements = mu[0].numel()
    margin = 5120.0 * elements / 512
    hinge = 0.0
    for x in (rec, fake):
        m, lv = (t.detach().double() for t in method.encoder(x))
        per_slice = [0.5 * float((lv[i].exp() + m[i] ** 2 - 1 - lv[i]).sum())
                     for i in range(m.shape[0])]
        assert max(per_slice) < margin
        hinge += sum(margin - k for k in per_slice) / len(per_slice)
    assert terms["margin"].item() == pytest.approx(hinge, rel=1e-5)


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


def test_original_reductions_are_per_slice_means_by_hand():
    """Two slices, latents of 2 elements, unit variance: per-slice KL 1/2 sum mu^2 = (0.5, 2);
    the released KL is their sum over the batch (2.5), the original their mean (1.25). Squared
    errors 1 and 9 over 4 pixels a slice: MSE 10/8, half the sum 5, half per slice 2.5."""
    mu, logvar = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.zeros(2, 2)
    assert kl_per_sample(mu, logvar).tolist() == pytest.approx([0.5, 2.0])
    assert kl_divergence(mu, logvar).item() == pytest.approx(2.5)
    real = torch.zeros(2, 1, 2, 2)
    rec = torch.zeros(2, 1, 2, 2)
    rec[0, 0, 0, 0], rec[1, 0, 1, 1] = 1.0, 3.0
    expected = {("released", None): 10 / 8, ("released", "mean"): 10 / 8,
                ("released", "sum"): 5.0, ("original", None): 2.5, ("original", "sum"): 2.5}
    for (reduction, rec_reduction), value in expected.items():
        method = tiny(reduction=reduction, reconstruction_reduction=rec_reduction)
        assert method._reconstruction(rec, real).item() == pytest.approx(value)
    with pytest.raises(ConfigError, match="model.reduction"):
        tiny(reduction="batch")
    with pytest.raises(ConfigError, match="does not apply with model.reduction=original"):
        tiny(reduction="original", reconstruction_reduction="mean")


def test_original_kl_is_a_mean_over_slices():
    """A batch of the same slice twice: the original KL term is that slice's KL, the released
    one (a batch sum) twice it."""
    for reduction, factor in (("original", 1.0), ("released", 2.0)):
        method = tiny(reduction=reduction)
        one = batch(n=1, depth=1)
        two = Batch(one.images.repeat(2, 1, 1, 1, 1), torch.ones(2, 1, dtype=torch.bool))
        single, doubled = method.losses(one)["kl"], method.losses(two)["kl"]
        assert doubled.item() == pytest.approx(factor * single.item(), rel=1e-5)


def test_the_training_slice_is_recorded_and_used_at_inference():
    """check_patch (the trainer's) records the in-plane patch; pseudo_normal then centres each
    slice with zeros in it, as the training sampler does; weights saved without the record
    load and keep the old padding."""
    method = tiny().eval()
    method.check_patch([32, 32, 1])
    assert method.trained_slice.tolist() == [32, 32]
    t1 = torch.randn(1, 1, 20, 24, 2)
    with torch.no_grad():
        out = method.pseudo_normal(t1)
        canvas = torch.zeros(1, 1, 32, 32, 2)
        canvas[:, :, 6:26, 4:28] = t1  # centred as data.patches.crop_patch pads
        expected = method.reconstruct(canvas)[:, :, 6:26, 4:28]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    state = {k: v for k, v in method.state_dict().items() if k != "trained_slice"}
    older = tiny()
    older.load_state_dict(state)
    assert older.trained_slice.tolist() == [0, 0]
    with torch.no_grad():
        assert not torch.allclose(older.eval().pseudo_normal(t1), out, atol=1e-4)
