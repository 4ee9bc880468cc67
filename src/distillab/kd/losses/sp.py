"""``sp``: Similarity-Preserving KD (Tung & Mori, ICCV 2019). Each side's features, flattened per example to F
(b x d), give the batch's Gram matrix G = F F^T (b x b), each row L2-normalised (``F.normalize``, eps 1e-12); the
loss is ||G_s - G_t||_F^2 / b^2 -- mdistiller's ``sp_loss``, which reads the last feature map there (tap it with
``student=PATH,teacher=PATH``; the default taps read the penultimate features). Default weight 3000: mdistiller's
CIFAR-100 config, beside cross-entropy of weight 1 (``ce sp``).

G is b x b whatever the features' shape, so the two sides' channels and spatial sizes may differ; the loss is
unchanged by a positive scale of either side's features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..loss import FeatureTerm, register_loss


def similarity_matrix(f: torch.Tensor) -> torch.Tensor:
    """G = F F^T of the flattened features, each row L2-normalised."""
    f = f.float().flatten(1)
    return F.normalize(f @ f.T)


def sp_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    b = len(student)
    return (similarity_matrix(teacher) - similarity_matrix(student)).pow(2).sum() / (b * b)


@register_loss("sp")
@dataclass
class SP(FeatureTerm):
    distance_like = True

    w: float = 3000.0

    def __call__(self, batch):
        return {"sp": self.w * sp_loss(*self.features(batch))}
