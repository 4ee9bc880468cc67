"""``lskd``: KD on standardised logits (Sun et al., CVPR 2024, "Logit Standardization in Knowledge Distillation").
Each example's student and teacher logits are z-scored over the classes, (z - mean) / (std + 1e-7) with the
unbiased std and the epsilon of the authors' ``normalize`` (sunshangquan/logit-standardization-KD), before the
usual KL(p_T || p_S) at temperature T, batchmean, times T^2. T defaults to their base temperature, 2; their
CIFAR-100 recipe weighs it ``ce:w=0.1 lskd:w=9``. ``dkd:standardise=1`` is the same pre-process for DKD.

Standardising removes each example's offset, so a teacher that gives log-probabilities (logits up to a constant
per example) is matched exactly; a top-k black box has no full logits to standardise and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import require
from ..functional import kd_loss
from ..loss import LossTerm, register_loss

EPS = 1e-7  # the authors' normalize(): (logit - mean) / (1e-7 + std)


def standardise(logits: torch.Tensor) -> torch.Tensor:
    """Z-score each row over the classes: (z - mean) / (std + 1e-7), the std unbiased (torch's default)."""
    z = logits.float()
    return (z - z.mean(1, keepdim=True)) / (EPS + z.std(1, keepdim=True))


@register_loss("lskd")
@dataclass
class LSKD(LossTerm):
    distance_like = True

    T: float = 2.0

    def check(self) -> None:
        super().check()
        require(self.T > 0, f"--loss {self}: T must be > 0, got {self.T}")

    def check_teacher(self, teacher) -> None:
        require(getattr(teacher, "kind", "logits") != "topk",
                f"--loss {self}: standardising needs the teacher's full outputs, not only its top-k; use kd")

    def __call__(self, batch):
        value = kd_loss(standardise(batch.student_logits), standardise(batch.teacher.logits), self.T)
        return {f"lskd_T{self.T:g}": self.w * value}
