"""`example-fcn`: a small fully convolutional network that sees which modalities it has.

Not a published method: the smallest complete example of the contract (docs/extending.md).
The missing modalities are zeroed with `mask_missing` (never read), and the availability is
given to the network as M extra constant channels, so one network serves every subset.
Objective: `dice` (soft Dice over the classes) + `ce` (cross-entropy), each weighted in the
config (`loss_weights.dice`, `loss_weights.ce`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from importlib import resources

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contraseg.models import Batch, Method, mask_missing, register


@dataclass
class ExampleFCNConfig:
    """Model settings (`--set model.width=16`)."""

    width: int = 8
    depth: int = 2  # convolution blocks before the 1x1 head


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True),
                         nn.LeakyReLU(0.01, inplace=True))


@register("example-fcn", ExampleFCNConfig,
          presets=resources.files("contraseg_example") / "presets.yaml")
class ExampleFCN(Method):
    """A small FCN with availability channels (the contraseg plugin example)."""

    spatial = "3d"
    loss_terms = ("dice", "ce")

    def __init__(self, modalities, num_classes, config: ExampleFCNConfig, loss_weights=None):
        super().__init__(modalities, num_classes, loss_weights)
        m = self.num_modalities
        widths = [2 * m] + [config.width] * config.depth
        self.body = nn.Sequential(*(_block(a, b) for a, b in itertools.pairwise(widths)))
        self.head = nn.Conv3d(widths[-1], num_classes, 1)

    def forward(self, images: Tensor, available: Tensor) -> Tensor:
        images = mask_missing(images[:, : self.num_modalities], available)
        flags = available.to(images.dtype).view(*available.shape, 1, 1, 1)
        return self.head(self.body(torch.cat([images, flags.expand_as(images)], 1)))

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        logits = self(batch.images, batch.available).float()
        probs = torch.softmax(logits, 1)
        onehot = F.one_hot(batch.target, self.num_classes).movedim(-1, 1).float()
        dims = (0, *range(2, logits.ndim))
        dice = (2 * (probs * onehot).sum(dims) + 1e-5) / (probs.sum(dims) + onehot.sum(dims)
                                                          + 1e-5)
        return {"dice": 1 - dice.mean(), "ce": F.cross_entropy(logits, batch.target)}
