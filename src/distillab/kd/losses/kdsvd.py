"""``kdsvd``: Self-supervised Knowledge Distillation using Singular Value Decomposition (Lee, Kim & Song, ECCV
2018), as mdistiller's ``KDSVD.py`` computes it. Each tapped (N, C, H, W) map, seen per example as a matrix of
C*H rows and W columns (mdistiller's reshape; the authors' TensorFlow code takes H*W rows and C columns), is
summarised by its leading right singular vectors, each L2-normalised: k of the teacher's, k + 3 of the student's.
Singular vectors have no sign of their own, so each teacher vector is matched by the student vector with the
largest |cosine| to it, taken with that cosine's sign. Both sides' vectors are then scaled by the teacher's leading
k singular values (L2-normalised over the k). Between each layer and the one before it, every pair of rows of the
two (W x k) summaries gives exp(-(a - b)^2 / 8) per vector; the loss is the squared difference between the
student's and the teacher's such maps, summed (non-finite entries dropped, as NaN from the SVD would be) and
divided by the batch size, summed over consecutive layer pairs -- mdistiller's ``kdsvd_loss``, which reads every
stage after the first. Defaults k = 1 and weight 1: mdistiller's CIFAR-100 config (``KDSVD.K``,
``KDSVD.LOSS.FEAT_WEIGHT``), beside cross-entropy of weight 1.

Taps: ``student=a+b[+...]`` and ``teacher=c+d[+...]``, at least two pairs (the loss lives between consecutive
layers); the student's and the teacher's maps of a pair must have one width W (the singular vectors live on it), and
the channel and height counts may differ. No learned parts. Distance-like: a student whose maps equal the teacher's
picks the teacher's own vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import DistillabError, require
from ..loss import MultiFeatureTerm, register_loss

EXTRA = 3    # the student offers k + 3 singular vectors to match the teacher's k
WIDTH = 8.0  # exp(-d^2 / 8): the RBF kernel's fixed width


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def leading_right_vectors(feature: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` right singular vectors of each example's (C*H) x W matrix, each L2-normalised, (N, W, n),
    and the first ``n`` singular values, L2-normalised together, (N, n)."""
    b, c, h, w = feature.shape
    require(bool(torch.isfinite(feature).all()), "the kdsvd loss met features that are not finite: a map with "
                                                 "repeated singular values (a blank border, a constant channel) "
                                                 "has no SVD gradient; tap deeper layers")
    try:
        _, values, vh = torch.linalg.svd(feature.float().reshape(b, c * h, w), full_matrices=False)
    except torch.linalg.LinAlgError:
        raise DistillabError("the kdsvd loss could not take the SVD of a feature map (it did not converge); tap "
                             "deeper layers") from None
    vectors = _finite(vh.mT)[..., :n]
    return F.normalize(vectors, dim=1), F.normalize(_finite(values)[:, :n], dim=1)


def matched(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """For each teacher vector (column), the student's column of largest |cosine| to it, times that cosine's
    sign (a tie adds the tied columns)."""
    cosine = student.mT @ teacher
    strength = cosine.abs()
    pick = torch.where(strength == strength.amax(1, keepdim=True), cosine.sign(), torch.zeros_like(cosine))
    return student @ pick.detach()


def rbf(rows: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """exp(-(a - b)^2 / 8) for every row a of ``rows`` and b of ``previous``, per vector: (N, W, W_prev, k)."""
    return torch.exp(-(rows.unsqueeze(2) - previous.unsqueeze(1)).pow(2) / WIDTH)


def kdsvd_loss(students: list[torch.Tensor], teachers: list[torch.Tensor], k: int) -> torch.Tensor:
    total, before = 0.0, None
    for s, t in zip(students, teachers):
        t_vectors, t_values = leading_right_vectors(t, k)
        s_vectors, _ = leading_right_vectors(s, k + EXTRA)
        scale = t_values.unsqueeze(1)
        s_vectors, t_vectors = matched(s_vectors, t_vectors) * scale, t_vectors * scale
        if before is not None:
            gap = (rbf(s_vectors, before[0]) - rbf(t_vectors, before[1]).detach()).pow(2)
            total = total + _finite(gap).sum() / len(s)
        before = (s_vectors, t_vectors)
    return total


@register_loss("kdsvd")
@dataclass
class KDSVD(MultiFeatureTerm):
    distance_like = True
    example = {"student": "features.1+features.5", "teacher": "features.1+features.5"}  # two (N, C, H, W) maps

    w: float = 1.0
    k: int = 1

    def check(self) -> None:
        super().check()
        require(self.k >= 1, f"--loss {self}: k must be >= 1, got {self.k}")
        require(len(self.student_taps()) >= 2, f"--loss {self}: kdsvd compares consecutive layers; tap at least two "
                                               "per side (student=PATH+PATH,teacher=PATH+PATH)")

    def build(self, sample, generator):
        for (s, t), sp, tp in zip(self.feature_pairs(sample), self.student_taps(), self.teacher_taps()):
            shapes = f"the student's '{sp}' gives {tuple(s.shape[1:])} and the teacher's '{tp}' {tuple(t.shape[1:])}"
            require(s.dim() == 4 and t.dim() == 4, f"the kdsvd loss takes the SVD of (N, C, H, W) feature maps, but "
                                                   f"{shapes}; tap convolutional layers")
            require(s.shape[3] == t.shape[3], f"the kdsvd loss matches singular vectors along the maps' width, but "
                                              f"{shapes}; pair layers of one width")
        return []

    def __call__(self, batch):
        pairs = self.feature_pairs(batch)
        return {"kdsvd": self.w * kdsvd_loss([s for s, _ in pairs], [t for _, t in pairs], self.k)}
