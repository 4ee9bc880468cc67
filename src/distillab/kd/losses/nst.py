"""``nst``: Neuron Selectivity Transfer (Huang & Wang 2017, "Like what you like: knowledge distill via neuron
selectivity transfer"). Each channel's map of a (N, C, H, W) feature map, flattened over H x W and L2-normalised,
is one sample of that example's distribution; the loss is the squared MMD between the student's and the teacher's
channels with the polynomial kernel k(x, y) = (x . y)^2 (d = 2, c = 0): mean k(t, t) + mean k(s, s) - 2 mean
k(s, t) over the channel pairs of each example, then over the batch -- mdistiller's ``nst_loss``/``poly_kernel``
(which sums it over the stages after the first; here one tap pair). Default weight 50: mdistiller's CIFAR-100
config, beside cross-entropy of weight 1.

Channels are samples, so their counts may differ; the spatial sizes must match (mdistiller average-pools the larger
map down, assuming square maps; distillab refuses instead: tap layers of one size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..loss import FeatureTerm, register_loss


def poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(x . y)^2 for every channel x of ``a`` and y of ``b``, per example: (N, C_b, C_a)."""
    return (b @ a.transpose(1, 2)).pow(2)


def nst_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    s = F.normalize(student.float().flatten(2), dim=2)
    t = F.normalize(teacher.float().flatten(2), dim=2)
    return poly_kernel(t, t).mean().detach() + poly_kernel(s, s).mean() - 2 * poly_kernel(s, t).mean()


@register_loss("nst")
@dataclass
class NST(FeatureTerm):
    distance_like = True
    example = {"student": "features.0", "teacher": "features.0"}  # needs (N, C, H, W) feature maps

    w: float = 50.0

    def build(self, sample, generator):
        self.feature_maps(sample, "compares the channels of (N, C, H, W) feature maps", same_size=True)
        return []

    def __call__(self, batch):
        return {"nst": self.w * nst_loss(*self.features(batch))}
