"""``ofd``: A Comprehensive Overhaul of Feature Distillation (Heo, Kim, Yun, Park, Kwak & Choi, ICCV 2019). The
teacher's (N, C, H, W) responses are read *before* its ReLU; each teacher channel gets a margin m, the mean of its
negative responses, E[x | x < 0] for x ~ N(beta, gamma^2) with beta, |gamma| the channel's normalisation shift and
scale: m = beta - |gamma| phi(z) / Phi(z), z = -beta / |gamma| (phi, Phi the standard normal density and
distribution), or -3 |gamma| when Phi(z) <= 0.001. The teacher's map with every response below m raised to m is the
target r = max(t, m); the student's map, through a connector (conv k x k, no bias -> batch norm, from the student's
channels to the teacher's), is s; the loss is the partial L2 distance sum (s - r)^2 over the positions where it
matters, summed over channels and positions and averaged over the batch. A position is skipped where s <= r and
t <= 0: there the teacher's ReLU gives zero and a student at or below the target gives zero too. This is
mdistiller's ``feat_loss`` (its three masked terms are these three cases: t <= m, m < t <= 0, t > 0) with its
``ConnectorConvBN`` and margins (``init_ofd_modules``); the teacher's map is average-pooled to the student's spatial
size (``adaptive_avg_pool2d``) as mdistiller does. Default weight 0.001: mdistiller's CIFAR-100 config
(``OFD.LOSS.FEAT_WEIGHT``), beside cross-entropy of weight 1; connector kernel 1 (``OFD.CONNECTOR.KERNEL_SIZE``).
mdistiller sums the loss over the stages after the first, halving it per stage from the last; here one tap pair.

Where the margin comes from (``norm``): ``norm=PATH`` names the teacher's normalisation layer before the tapped
ReLU (a batch norm, or an instance norm: ``GroupNorm`` with one channel per group, as ``convnet`` builds), whose
affine shift and scale are beta and gamma, as in the paper; it needs a live teacher model (``cache=False``,
``--cache-teacher no``), since a cache keeps only outputs. Without ``norm`` (the default) beta and |gamma| are
estimated once, in ``build``, as each channel's mean and standard deviation of the teacher's tapped responses over the
sample batch (every position), and the same formula gives m; it works for any teacher that gives features, cached
too. Either way the margins are fixed before training (a buffer of the learned part, checkpointed with it).

Learned parts: the connector, made in ``build`` from the generator given (conv weights normal with std
sqrt(2 / (k^2 * teacher channels)), batch norm weight 1 and bias 0, as mdistiller initialises them) and trained
with the student; its batch norm always normalises with the batch's own statistics (mdistiller's keeps running
statistics that its loss never reads; here none are kept, so nothing but learned weights changes while training).
The teacher's tap must give some negative values on the sample batch (responses before the ReLU: tap the
normalisation layer); the student's tap is usually the same place in the student. Not distance-like: the connector
stands between the two.
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

THIN_TAIL = 0.001  # below this chance of a negative response, the margin is -3 sigma


def gaussian_margin(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per channel, E[x | x < 0] for x ~ N(mean, std^2); -3 |std| where P(x < 0) <= 0.001 (and for std 0, the
    response itself when it is negative, else 0)."""
    m, s = mean.detach().double(), std.detach().double().abs()
    z = -m / s
    below = torch.special.ndtr(z)
    density = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return torch.where(below > THIN_TAIL, m - s * density / below, -3 * s).float()


def ofd_loss(student: torch.Tensor, teacher: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """The partial L2 distance between the (connected) student's map and the teacher's pre-ReLU map, pooled to the
    student's size; ``margin``: one value per channel."""
    t = F.adaptive_avg_pool2d(teacher.float(), student.shape[-2:])
    target = torch.maximum(t, margin.view(1, -1, 1, 1).to(t))
    counted = (student > target) | (t > 0)
    return ((student - target).pow(2) * counted).sum() / len(student)


class OFDHead(nn.Module):
    """The learned part: ``connector`` (conv k x k without bias -> batch norm) and the fixed ``margin`` buffer."""

    def __init__(self, student_channels: int, teacher_channels: int, kernel_size: int, margin: torch.Tensor):
        super().__init__()
        conv = nn.Conv2d(student_channels, teacher_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        with torch.no_grad():
            conv.weight.normal_(0.0, math.sqrt(2.0 / (kernel_size * kernel_size * teacher_channels)))
        self.connector = nn.Sequential(conv, nn.BatchNorm2d(teacher_channels, track_running_stats=False))
        self.register_buffer("margin", margin.clone())


def _affine_per_channel(module: nn.Module) -> bool:
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        return module.affine
    return isinstance(module, nn.GroupNorm) and module.affine and module.num_groups == module.num_channels


@register_loss("ofd")
@dataclass
class OFD(FeatureTerm):
    # not distance-like: the connector stands between the student's map and the teacher's
    example = {"student": "features.1", "teacher": "features.1"}  # the instance norms, before the ReLU

    w: float = 0.001
    kernel_size: int = 1
    norm: str = ""  # the teacher's normalisation layer giving the margins; "": estimated from the sample batch

    head: OFDHead | None = field(default=None, init=False, repr=False, compare=False)
    norm_affine: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def check(self) -> None:
        super().check()
        require(self.kernel_size >= 1 and self.kernel_size % 2 == 1,
                f"--loss {self}: kernel_size must be an odd number >= 1, got {self.kernel_size}")

    def check_teacher(self, teacher) -> None:
        super().check_teacher(teacher)
        if not self.norm:
            return
        model = getattr(teacher, "model", None)
        require(isinstance(model, nn.Module), f"--loss {self}: norm= reads the teacher model's layer, but this teacher "
                f"is a cache or a table of outputs; use a live teacher (cache=False, --cache-teacher no) or leave "
                f"norm out to estimate the margins")
        modules = dict(model.named_modules())
        require(self.norm in modules and self.norm != "", f"--loss {self}: the teacher has no module '{self.norm}'")
        layer = modules[self.norm]
        require(_affine_per_channel(layer), f"--loss {self}: the teacher's '{self.norm}' is a "
                f"{type(layer).__name__}, not a batch or instance norm with affine parameters per channel; leave "
                f"norm out to estimate the margins")
        self.norm_affine = (layer.weight.detach().clone(), layer.bias.detach().clone())

    def build(self, sample, generator):
        s, t = self.feature_maps(sample, "distils the teacher's (N, C, H, W) responses before its ReLU")
        require(bool((t < 0).any()), f"the ofd loss reads the teacher's responses before its ReLU, but the teacher's "
                f"'{self.teacher}' gives no negative values; tap its normalisation layer (ofd:teacher=PATH)")
        if self.norm:
            require(self.norm_affine is not None, f"--loss {self}: norm= needs the teacher model (check_teacher)")
            scale, shift = self.norm_affine
            require(len(scale) == t.shape[1], f"--loss {self}: the teacher's '{self.norm}' has {len(scale)} "
                    f"channels but its '{self.teacher}' gives {t.shape[1]}; name the layer before that ReLU")
            margin = gaussian_margin(shift, scale)
        else:
            t = t.float()
            margin = gaussian_margin(t.mean((0, 2, 3)), t.std((0, 2, 3), unbiased=False))
        with constructors_drawing_from(generator):
            self.head = OFDHead(s.shape[1], t.shape[1], self.kernel_size, margin).to(s.device)
        return [self.head]

    def __call__(self, batch):
        s, t = self.features(batch)
        return {"ofd": self.w * ofd_loss(self.head.connector(s.float()), t, self.head.margin)}
