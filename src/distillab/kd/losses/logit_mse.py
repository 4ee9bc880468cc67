"""``logit-mse``: 1/2 ||z_s - z_t||^2 per example (Ba & Caruana 2014); ``center=1`` matches a teacher that gives
only probabilities exactly (log-probabilities equal logits up to a per-example constant)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

from ...errors import require
from ..functional import logit_mse
from ..loss import LossTerm, register_loss


@register_loss("logit-mse")
@dataclass
class LogitMSE(LossTerm):
    distance_like = True

    center: bool = False
    reduce: Literal["sum", "mean"] = "sum"

    def check_teacher(self, teacher) -> None:
        require(teacher.kind != "topk", "logit-mse needs the teacher's full outputs, not only its top-k; use kd")
        if teacher.kind == "logprobs" and not self.center:
            warnings.warn("logit-mse against a teacher that gives probabilities: use center=1 "
                          "(log-probabilities equal logits only up to a per-example constant)")

    def __call__(self, batch):
        return {"logit_mse": self.w * logit_mse(batch.student_logits, batch.teacher.logits, self.center, self.reduce)}
