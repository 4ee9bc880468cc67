"""``pkt``: Probabilistic Knowledge Transfer (Passalis & Tefas, ECCV 2018). Each side's features (flattened per
example) are L2-normalised, x / (||x|| + 1e-7); their cosine similarities within the batch, mapped to [0, 1] by
(k + 1) / 2 and each row divided by its sum, are conditional probabilities p(j | i); the loss is the KL of the
teacher's from the student's, mean over all b^2 pairs of q log((q + 1e-7) / (p + 1e-7)) -- mdistiller's
``pkt_loss``, read from the penultimate features there. Default weight 30000: mdistiller's CIFAR-100 config, beside
cross-entropy of weight 1 (``ce pkt``).

Only similarities within each side are compared, so the two sides' widths may differ; the loss is unchanged by a
positive scale of either side's features (up to the 1e-7).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..loss import FeatureTerm, register_loss

EPS = 1e-7  # mdistiller's pkt_loss(eps=1e-7): on the norms and inside the log


def similarity_probabilities(f: torch.Tensor) -> torch.Tensor:
    """Rows of (cosine similarity + 1) / 2 over the batch, each row normalised to sum to 1."""
    f = f.float().flatten(1)
    f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + EPS)
    k = (f @ f.T + 1.0) / 2.0
    return k / k.sum(1, keepdim=True)


def pkt_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    p, q = similarity_probabilities(student), similarity_probabilities(teacher)
    return (q * torch.log((q + EPS) / (p + EPS))).mean()


@register_loss("pkt")
@dataclass
class PKT(FeatureTerm):
    distance_like = True

    w: float = 30000.0

    def __call__(self, batch):
        return {"pkt": self.w * pkt_loss(*self.features(batch))}
