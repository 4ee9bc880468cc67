"""``ce``: cross-entropy with the hard labels, optionally label-smoothed."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ...errors import require
from ..loss import LossTerm, register_loss


@register_loss("ce")
@dataclass
class CE(LossTerm):
    smoothing: float = 0.0

    def check(self) -> None:
        super().check()
        require(0 <= self.smoothing <= 0.99, f"--loss {self}: smoothing must be in [0, 0.99], got {self.smoothing}")

    def __call__(self, batch):
        return {"ce": self.w * F.cross_entropy(batch.student_logits, batch.labels, label_smoothing=self.smoothing)}
