"""``kd``: KL(p_T || p_S) at temperature T, batchmean, times T^2 (Hinton et al. 2015). From a top-k black box, the
KL between the k named classes plus one bucket for the rest."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import require
from ..functional import bucket_kd_loss, kd_loss
from ..loss import LossTerm, register_loss


@register_loss("kd")
@dataclass
class KD(LossTerm):
    distance_like = True

    T: float = 4.0

    def check(self) -> None:
        super().check()
        require(self.T > 0, f"--loss {self}: T must be > 0, got {self.T}")

    def __call__(self, batch):
        t = batch.teacher
        if t.topk_index is not None:
            value = bucket_kd_loss(batch.student_logits, t.topk_index, t.topk_logprob, self.T)
        else:
            value = kd_loss(batch.student_logits, t.logits, self.T)
        return {f"kd_T{self.T:g}": self.w * value}
