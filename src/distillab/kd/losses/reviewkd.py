"""``reviewkd``: Distilling Knowledge via Knowledge Review (Chen, Liu, Zhao & Jia, CVPR 2021). The student's
features at several stages are "reviewed" from the deepest stage to the shallowest: at each stage a learned fusion
module (ABF, attention-based fusion) squeezes the student's map to ``mid`` channels (1x1 convolution + batch norm),
mixes it with the fused map handed down from the next deeper stage (resized to this stage's size by nearest
interpolation) through two learned attention maps (a 1x1 convolution of both, sigmoid: a * own + b * deeper; the
deepest stage has nothing to mix), resizes the result to the paired teacher map's size, hands it on to the next
shallower stage and maps it to the teacher's channels (3x3 convolution + batch norm). Each stage's output o is
compared with the teacher's map t by the hierarchical context loss (HCL): the MSE of o and t plus the MSEs of their
average-pooled 4x4, 2x2 and 1x1 versions (only the levels smaller than the map's height and width), weighted 1,
1/2, 1/4, ... in that order and divided by the sum of the weights used; the loss is the sum over stages, times
min(epoch / warmup, 1) read from ``batch.schedule`` (epochs counted from 1; ``warmup=0``: none) -- mdistiller's
``ReviewKD`` and ``hcl_loss``. Defaults: mdistiller's ``REVIEWKD_WEIGHT`` 1 (its resnet32x4 -> resnet8x4 CIFAR-100
config uses 5) and ``WARMUP_EPOCHS`` 20, beside cross-entropy of weight 1; ``mid`` = min(``max_mid`` (512), the
deepest student tap's channels).

Taps: ``student=A+B+C``, ``teacher=A'+B'+C'``, paired in order from the shallowest stage to the deepest (the fusion
runs from the last pair to the first). Each is a (N, C, H, W) map; an (N, C) vector, such as ``penultimate``, is
read as a 1x1 map: mdistiller's last stage is the pooled pre-logit feature so read, so its setting is
``reviewkd:student=STAGE1+STAGE2+STAGE3+penultimate,teacher=...`` (it pairs the student's stages 1-3 outputs with
the teacher's pre-activation ones; distillab reads whatever the tapped modules return).

Learned parts: one fusion module per stage, made in ``build`` from the sample's shapes with the generator given
(convolutions initialised as mdistiller does) and trained with the student. Their batch norms always use batch
statistics while training, so a 1x1 stage needs batches of at least 2 rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import require
from ...models import constructors_drawing_from
from ..loss import MultiFeatureTerm, register_loss

PYRAMID = (4, 2, 1)  # the pooled sizes HCL compares besides the full maps, with weights 1/2, 1/4, 1/8 of the full


class ReviewFusion(nn.Module):
    """One stage's fusion module (ABF): ``squeeze`` (1x1 convolution to ``mid`` channels, batch norm), ``attention``
    (1x1 convolution of both inputs to two maps, sigmoid; None at the deepest stage), ``expand`` (3x3 convolution to
    the teacher's channels, batch norm)."""

    def __init__(self, student_channels: int, mid: int, teacher_channels: int, fuse: bool):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(student_channels, mid, 1, bias=False), nn.BatchNorm2d(mid))
        self.expand = nn.Sequential(nn.Conv2d(mid, teacher_channels, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(teacher_channels))
        self.attention = nn.Sequential(nn.Conv2d(2 * mid, 2, 1), nn.Sigmoid()) if fuse else None
        for conv in (self.squeeze[0], self.expand[0]):
            nn.init.kaiming_uniform_(conv.weight, a=1)

    def forward(self, x: torch.Tensor, deeper: torch.Tensor | None, size) -> tuple[torch.Tensor, torch.Tensor]:
        """(the output to compare with the teacher's map of spatial ``size``, the fused map handed to the next
        shallower stage)."""
        x = self.squeeze(x)
        if self.attention is not None:
            deeper = F.interpolate(deeper, size=tuple(x.shape[-2:]), mode="nearest")
            a = self.attention(torch.cat([x, deeper], dim=1))
            x = x * a[:, :1] + deeper * a[:, 1:]
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=tuple(size), mode="nearest")
        return self.expand(x), x


class ReviewHead(nn.Module):
    """The learned parts: ``stages``, one fusion module per tap pair, shallowest first."""

    def __init__(self, student_channels: list[int], teacher_channels: list[int], mid: int):
        super().__init__()
        last = len(student_channels) - 1
        self.stages = nn.ModuleList(ReviewFusion(s, mid, t, fuse=k < last)
                                    for k, (s, t) in enumerate(zip(student_channels, teacher_channels)))

    def forward(self, students: list[torch.Tensor], sizes: list) -> list[torch.Tensor]:
        """Each stage's output, shallowest first, reviewed from the deepest."""
        outputs, deeper = [], None
        for stage, x, size in zip(reversed(self.stages), reversed(students), reversed(sizes)):
            out, deeper = stage(x, deeper, size)
            outputs.append(out)
        return outputs[::-1]


def hcl_loss(outputs: list[torch.Tensor], teachers: list[torch.Tensor]) -> torch.Tensor:
    """The hierarchical context loss, summed over the stages."""
    total = 0.0
    for o, t in zip(outputs, teachers):
        value, weight, norm = F.mse_loss(o, t), 1.0, 1.0
        for level in PYRAMID:
            if level < min(o.shape[-2:]):
                weight /= 2
                value = value + weight * F.mse_loss(F.adaptive_avg_pool2d(o, level), F.adaptive_avg_pool2d(t, level))
                norm += weight
        total = total + value / norm
    return total


@register_loss("reviewkd")
@dataclass
class ReviewKD(MultiFeatureTerm):
    # not distance-like: a student equal to the teacher still goes through the fusion modules
    example = {"student": "features.2+features.6+penultimate",  # 8x8 and 4x4 maps, the flattened features as 1x1
               "teacher": "features.2+features.6+penultimate"}

    w: float = 1.0
    warmup: int = 20
    max_mid: int = 512

    head: ReviewHead | None = field(default=None, init=False, repr=False, compare=False)

    def check(self) -> None:
        super().check()
        require(self.warmup >= 0, f"--loss {self}: warmup must be >= 0 (epochs; 0 for none), got {self.warmup}")
        require(self.max_mid >= 1, f"--loss {self}: max_mid must be >= 1, got {self.max_mid}")

    def maps(self, batch) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The tapped features as (N, C, H, W) maps (vectors as 1x1), students and teachers, shallowest first."""
        students, teachers = [], []
        for (s, t), sp, tp in zip(self.feature_pairs(batch), self.student_taps(), self.teacher_taps()):
            require(s.dim() in (2, 4) and t.dim() in (2, 4),
                    f"the {self.name} loss reads (N, C, H, W) maps or (N, C) vectors, but the student's '{sp}' gives "
                    f"{tuple(s.shape[1:])} and the teacher's '{tp}' {tuple(t.shape[1:])}; tap other layers")
            students.append((s if s.dim() == 4 else s[:, :, None, None]).float())
            teachers.append((t if t.dim() == 4 else t[:, :, None, None]).float())
        return students, teachers

    def ramp(self, schedule) -> float:
        """The warm-up factor min(epoch / warmup, 1), epochs counted from 1."""
        return 1.0 if self.warmup == 0 else min(schedule.epoch / self.warmup, 1.0)

    def build(self, sample, generator):
        students, teachers = self.maps(sample)
        mid = min(self.max_mid, students[-1].shape[1])
        with constructors_drawing_from(generator):
            self.head = ReviewHead([s.shape[1] for s in students], [t.shape[1] for t in teachers],
                                   mid).to(students[0].device)
        return [self.head]

    def __call__(self, batch):
        students, teachers = self.maps(batch)
        require(not self.head.training or len(students[0]) > 1 or all(s.shape[-2:] != (1, 1) for s in students),
                f"--loss {self}: a batch of one row cannot train the batch norms of a 1x1 stage; use batches of 2+")
        outputs = self.head(students, [t.shape[-2:] for t in teachers])
        return {"reviewkd": self.w * self.ramp(batch.schedule) * hcl_loss(outputs, teachers)}
