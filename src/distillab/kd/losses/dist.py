"""``dist``: DIST (Huang et al., NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher"). With Y_s, Y_t the
softmax(z / T) of a batch (examples x classes): the inter-class relation is 1 - Pearson correlation between a
student row and the teacher's, averaged over the examples; the intra-class relation the same over columns (each
class across the batch); the loss is T^2 (beta inter + gamma intra). Pearson is taken as the authors' code does:
the cosine of the centred vectors with 1e-8 added to the product of norms (hunto/image_classification_sota,
lib/models/losses/dist_kd.py).

Defaults are those of their ``DIST`` class and of their ImageNet recipe (``kd: dist``): beta = gamma = 1, T = 1.
Their CIFAR-100 recipe (``kd: dist_t4``, kd weight 2) is ``dist:T=4,w=2``.

Not distance-like in the contract's strict sense: the 1e-8 leaves 1 - r slightly above 0 when student and teacher
agree on nearly uniform probabilities (a small centred norm). A top-k black box is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import require
from ..loss import LossTerm, register_loss

EPS = 1e-8  # the authors' cosine_similarity: (a * b).sum(1) / (|a| |b| + eps)


def one_minus_pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - Pearson correlation of each row of ``a`` with that of ``b``, averaged over the rows."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + EPS)
    return 1 - r.mean()


def dist_parts(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
               temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(inter, intra), each times T^2."""
    t = temperature
    y_s = F.softmax(student_logits.float() / t, dim=1)
    y_t = F.softmax(teacher_logits.float() / t, dim=1)
    return one_minus_pearson(y_s, y_t) * t * t, one_minus_pearson(y_s.t(), y_t.t()) * t * t


@register_loss("dist")
@dataclass
class DIST(LossTerm):
    beta: float = 1.0
    gamma: float = 1.0
    T: float = 1.0

    def check(self) -> None:
        super().check()
        require(self.T > 0, f"--loss {self}: T must be > 0, got {self.T}")
        require(self.beta >= 0 and self.gamma >= 0,
                f"--loss {self}: beta and gamma must be >= 0, got {self.beta}, {self.gamma}")

    def check_teacher(self, teacher) -> None:
        require(getattr(teacher, "kind", "logits") != "topk",
                f"--loss {self}: DIST needs the teacher's full outputs, not only its top-k; use kd")

    def __call__(self, batch):
        inter, intra = dist_parts(batch.student_logits, batch.teacher.logits, self.T)
        return {"dist": self.w * (self.beta * inter + self.gamma * intra)}
