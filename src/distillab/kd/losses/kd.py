"""``kd``: KL(p_T || p_S) at temperature T, batchmean, times T^2 (Hinton et al. 2015). From a top-k black box, the
KL between the k named classes plus one bucket for the rest.

``noise``: Sau & Balasubramanian 2016's noisy teacher. Each batch, the teacher's logits become z * (1 + xi), xi ~
N(0, noise) drawn anew per example and class; log-probabilities (a black box's answers, an ensemble) are centred per
example first. The draws come from the term's own generator, seeded in ``build`` from the run's seed and
checkpointed with the run. A top-k teacher has no logits to perturb and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import require
from ..functional import bucket_kd_loss, kd_loss, noisy_logits
from ..loss import LossTerm, register_loss


@register_loss("kd")
@dataclass
class KD(LossTerm):
    T: float = 4.0
    noise: float = 0.0

    @property
    def distance_like(self) -> bool:  # a perturbed target is not matched by a student equal to the teacher
        return self.noise == 0

    def check(self) -> None:
        super().check()
        require(self.T > 0, f"--loss {self}: T must be > 0, got {self.T}")
        require(self.noise >= 0, f"--loss {self}: noise must be >= 0 (the relative scale of the teacher's noise), "
                                 f"got {self.noise}")

    def check_teacher(self, teacher) -> None:
        require(self.noise == 0 or getattr(teacher, "kind", "logits") != "topk",
                f"--loss {self}: noise perturbs the teacher's logits, and a top-k black box gives only its top "
                "classes; drop noise or give the teacher's full outputs (predict without --top-k)")

    def build(self, sample, generator):
        self._noise = None
        if self.noise > 0:
            seed = int(torch.randint(0, 2 ** 62, (), generator=generator))
            self._noise = torch.Generator(device=sample.student_logits.device).manual_seed(seed)
        return []

    def generators(self) -> dict[str, torch.Generator]:
        return {"noise": self._noise} if getattr(self, "_noise", None) is not None else {}

    def targets(self, teacher) -> torch.Tensor:
        """The teacher's logits this batch is distilled from: perturbed by a fresh draw when ``noise`` > 0."""
        if self.noise == 0:
            return teacher.logits
        require(getattr(self, "_noise", None) is not None,
                f"--loss {self}: its noise generator is made by Distillation.attach(); call it before training")
        return noisy_logits(teacher.logits, self.noise, self._noise, center=teacher.kind == "logprobs")

    def __call__(self, batch):
        t = batch.teacher
        if t.topk_index is not None:
            value = bucket_kd_loss(batch.student_logits, t.topk_index, t.topk_logprob, self.T)
        else:
            value = kd_loss(batch.student_logits, self.targets(t), self.T)
        return {f"kd_T{self.T:g}": self.w * value}
