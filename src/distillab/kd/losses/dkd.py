"""``dkd``: Decoupled KD (Zhao et al., CVPR 2022). At temperature T, with t the labelled class of an example:
TCKD is the KL between the teacher's and the student's binary distributions (p_t, 1 - p_t), NCKD the KL between
their distributions over the other classes alone (the target left out and the rest renormalised); the loss is
T^2 (alpha TCKD + beta NCKD), averaged over the batch, times the warm-up min(epoch / warmup, 1) read from
``batch.schedule`` (epochs counted from 1, as in mdistiller; ``warmup=0``: none). Defaults are mdistiller's for
CIFAR-100 (alpha 1, beta 8, T 4, warm-up 20 epochs). ``standardise=1`` z-scores both sides' logits first
(Sun et al. 2024, see ``lskd``; their recipe: ``dkd:standardise=1,T=2,alpha=9,beta=72``).

Needs the hard labels and the teacher's full outputs (logits or log-probabilities; a top-k black box is refused).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import require
from ..loss import LossTerm, register_loss


def dkd_parts(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
              temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each batchmean and times T^2."""
    t = temperature
    s, q = student_logits.float() / t, teacher_logits.float() / t
    target = F.one_hot(labels, s.shape[1]).bool()

    def binary(z):  # log (p_t, 1 - p_t), without forming 1 - p_t
        all_ = z.logsumexp(1)
        return torch.stack([z[target] - all_, z.masked_fill(target, float("-inf")).logsumexp(1) - all_], 1)

    def others(z):  # log-softmax over the non-target classes
        return F.log_softmax(z[~target].view(len(z), -1), dim=1)

    tckd = F.kl_div(binary(s), binary(q), reduction="batchmean", log_target=True)
    nckd = F.kl_div(others(s), others(q), reduction="batchmean", log_target=True)
    return tckd * t * t, nckd * t * t


@register_loss("dkd")
@dataclass
class DKD(LossTerm):
    distance_like = True

    alpha: float = 1.0
    beta: float = 8.0
    T: float = 4.0
    warmup: int = 20
    standardise: bool = False

    def check(self) -> None:
        super().check()
        require(self.T > 0, f"--loss {self}: T must be > 0, got {self.T}")
        require(self.alpha >= 0 and self.beta >= 0,
                f"--loss {self}: alpha and beta must be >= 0, got {self.alpha}, {self.beta}")
        require(self.warmup >= 0, f"--loss {self}: warmup must be >= 0 (epochs; 0 for none), got {self.warmup}")

    def check_teacher(self, teacher) -> None:
        require(getattr(teacher, "kind", "logits") != "topk",
                f"--loss {self}: DKD needs the teacher's full outputs, not only its top-k; use kd")

    def ramp(self, schedule) -> float:
        """The warm-up factor min(epoch / warmup, 1), epochs counted from 1."""
        return 1.0 if self.warmup == 0 else min(schedule.epoch / self.warmup, 1.0)

    def __call__(self, batch):
        require(batch.labels is not None and batch.labels.dim() == 1,
                f"--loss {self}: DKD needs the hard labels (class indices) of the batch")
        s, q = batch.student_logits.float(), batch.teacher.logits.float()
        if self.standardise:
            from .lskd import standardise  # here, so that the registry lists the terms in file order
            s, q = standardise(s), standardise(q)
        tckd, nckd = dkd_parts(s, q, batch.labels, self.T)
        return {"dkd": self.w * self.ramp(batch.schedule) * (self.alpha * tckd + self.beta * nckd)}
