"""`model.checkpointing` recomputes activations in the backward pass: memory for time only."""

from __future__ import annotations

import pytest
import torch

from contraseg.models.registry import build_method

MODALITIES = ("t1", "t1c", "t2", "flair")


@pytest.mark.parametrize("name,settings", [
    ("rfnet", {"base_channels": 4, "fusion_hidden": 8, "prm_hidden": 8}),
    ("dc-seg", {"base_channels": 4, "fusion_hidden": 8, "prm_hidden": 8, "modality_channels": 4,
                "modality_downsamples": 2, "rec_hidden": 8, "ssim_window": 3}),
    ("dcl-manet", {"modality_channels": 2, "depth": 3, "rfb_groups": 2}),
])
def test_checkpointing_gives_the_same_losses_and_gradients(name, settings):
    """`model.checkpointing` trades memory for time only: same terms, same gradients."""
    from contraseg.models.base import Batch

    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        method = build_method(name, MODALITIES, 4, {**settings, "checkpointing": checkpointing})
        gen = torch.Generator().manual_seed(1)
        batch = Batch(torch.randn(2, 4, 16, 16, 16, generator=gen),
                      torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1]]).bool(),
                      torch.randint(0, 4, (2, 16, 16, 16), generator=gen), epoch=100)
        total, terms = method.total_loss(batch)
        total.backward()
        results.append((terms, {k: p.grad for k, p in method.named_parameters()}))
    (terms, grads), (terms_cp, grads_cp) = results
    for key in terms:
        torch.testing.assert_close(terms_cp[key], terms[key])
    for key, grad in grads.items():
        assert (grad is None) == (grads_cp[key] is None), key
        if grad is not None:
            torch.testing.assert_close(grads_cp[key], grad, atol=1e-5, rtol=1e-4)
