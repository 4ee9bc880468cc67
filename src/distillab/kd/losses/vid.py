"""``vid``: Variational Information Distillation (Ahn, Hu, Damianou, Lawrence & Dai, CVPR 2019). A regressor of
three 1x1 convolutions (student channels -> teacher channels -> teacher channels, ReLU between, no biases) predicts
the teacher's (N, C, H, W) feature map from the student's as the mean mu of a Gaussian whose per-channel variance is
learned, sigma^2 = softplus(log_scale) + eps; the loss is its negative log-likelihood without the constant, mean over
all elements of 0.5 * ((mu - t)^2 / sigma^2 + log sigma^2) -- mdistiller's ``vid_loss`` (eps 1e-5). log_scale starts
at log(exp(init_pred_var - eps) - 1), so that sigma^2 starts at ``init_pred_var`` (5). Default weight 1:
mdistiller's CIFAR-100 config (``VID.LOSS.FEAT_WEIGHT``), beside cross-entropy of weight 1; mdistiller sums it over
the stages after the first, here one tap pair.

Learned parts: the regressor and log_scale, made in ``build`` from the generator given and trained with the student
(checkpointed and resumed with it). mdistiller keeps its log_scales in a plain list that its optimiser never sees,
so there sigma^2 stays at ``init_pred_var``; distillab trains log_scale, as the paper and the authors' code do.
The loss may be negative (log sigma^2 < 0). The spatial sizes must match (mdistiller average-pools the larger square
map down; distillab refuses instead: tap layers of one size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import require
from ...models import constructors_drawing_from
from ..loss import FeatureTerm, register_loss


class VIDHead(nn.Module):
    """The learned parts: ``regressor`` (three 1x1 convolutions) and ``log_scale`` (one per teacher channel)."""

    def __init__(self, student_channels: int, teacher_channels: int, init_pred_var: float, eps: float):
        super().__init__()
        s, t = student_channels, teacher_channels
        self.regressor = nn.Sequential(nn.Conv2d(s, t, 1, bias=False), nn.ReLU(), nn.Conv2d(t, t, 1, bias=False),
                                       nn.ReLU(), nn.Conv2d(t, t, 1, bias=False))
        self.log_scale = nn.Parameter(math.log(math.exp(init_pred_var - eps) - 1.0) * torch.ones(t))


def vid_loss(head: VIDHead, student: torch.Tensor, teacher: torch.Tensor, eps: float) -> torch.Tensor:
    mean = head.regressor(student.float())
    var = (F.softplus(head.log_scale) + eps).view(1, -1, 1, 1)
    return (0.5 * ((mean - teacher.float()) ** 2 / var + torch.log(var))).mean()


@register_loss("vid")
@dataclass
class VID(FeatureTerm):
    # not distance-like: a student equal to the teacher still leaves the regressor's error and 0.5 log sigma^2
    example = {"student": "features.0", "teacher": "features.0"}  # needs (N, C, H, W) feature maps

    w: float = 1.0
    init_pred_var: float = 5.0
    eps: float = 1e-5

    head: VIDHead | None = field(default=None, init=False, repr=False, compare=False)

    def check(self) -> None:
        super().check()
        require(self.eps > 0, f"--loss {self}: eps must be > 0, got {self.eps}")
        require(self.init_pred_var > self.eps,
                f"--loss {self}: init_pred_var must be > eps ({self.eps}), got {self.init_pred_var}")

    def build(self, sample, generator):
        s, t = self.feature_maps(sample, "regresses the teacher's (N, C, H, W) feature map", same_size=True)
        with constructors_drawing_from(generator):
            self.head = VIDHead(s.shape[1], t.shape[1], self.init_pred_var, self.eps).to(s.device)
        return [self.head]

    def __call__(self, batch):
        return {"vid": self.w * vid_loss(self.head, *self.features(batch), self.eps)}
