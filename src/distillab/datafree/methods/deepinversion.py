"""``deepinversion``: inputs optimised so that the batch statistics at every BatchNorm layer of the teacher match
its running statistics, with cross-entropy to a target class, total-variation and L2 priors, and random jitter
(and flips, off for digits) per step (Yin et al. 2020). Needs a teacher with BatchNorm."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import require
from ..method import DATAFREE, DataFreeMethod, balanced_labels, optimise_inputs, register_datafree

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


@register_datafree("deepinversion")
@dataclass
class DeepInversion(DataFreeMethod):
    quick = {"iterations": 30, "batch": 100, "samples": 500}

    iterations: int = 300  # optimisation steps per batch
    batch: int = 256
    lr: float = 0.1
    bn: float = 1.0        # weight of the BatchNorm-statistics term
    tv: float = 0.05       # total variation (mean squared difference of neighbouring pixels, normalised units)
    l2: float = 0.001      # mean squared input
    jitter: int = 2        # random shift of up to this many pixels each step
    flip: bool = False     # random horizontal flips (not for digits)

    def check(self) -> None:
        super().check()
        require(self.iterations >= 1 and self.batch >= 2, f"--method {self}: iterations >= 1 and batch >= 2")
        require(self.lr > 0, f"--method {self}: lr must be > 0")
        require(min(self.bn, self.tv, self.l2) >= 0 and self.jitter >= 0,
                f"--method {self}: bn, tv, l2 and jitter must be >= 0")

    def steps(self, n: int) -> int:
        return self.iterations * math.ceil(n / self.batch)

    def check_teacher(self, teacher) -> None:
        others = ", ".join(m for m in DATAFREE.names() if m != self.name)
        require(any(isinstance(m, _BN) for m in teacher.model.modules()),
                f"deepinversion needs a teacher with BatchNorm layers (e.g. lenet5:norm=batch, convnet:norm=batch, "
                f"resnet18); for this teacher use {others}")

    def run(self, teacher, n, generator, progress=None):
        layers = [m for m in teacher.model.modules() if isinstance(m, _BN)]
        stats: list[torch.Tensor] = []

        def match(module, inputs, _output):
            x = inputs[0].float()
            dims = [0] + list(range(2, x.dim()))
            mean, var = x.mean(dims), x.var(dims, unbiased=False)
            stats.append(torch.norm(mean - module.running_mean, 2) + torch.norm(var - module.running_var, 2))

        labels = balanced_labels(teacher.num_classes, n)
        images, step = [], 0
        hooks = [m.register_forward_hook(match) for m in layers]
        try:
            for start in range(0, n, self.batch):
                y = labels[start:start + self.batch].to(teacher.device)

                def loss_of(x):
                    seen = x
                    if self.jitter:
                        dx, dy = (torch.randint(-self.jitter, self.jitter + 1, (2,), generator=generator)).tolist()
                        seen = torch.roll(seen, shifts=(dy, dx), dims=(2, 3))
                    if self.flip and bool(torch.rand((), generator=generator) < 0.5):
                        seen = seen.flip(3)
                    stats.clear()
                    logits = teacher(seen)
                    tv = ((x[:, :, 1:] - x[:, :, :-1]) ** 2).mean() + ((x[..., 1:] - x[..., :-1]) ** 2).mean()
                    return (F.cross_entropy(logits, y) + self.bn * torch.stack(stats).sum() + self.tv * tv
                            + self.l2 * (x ** 2).mean())

                x = torch.randn(len(y), *teacher.input_shape, generator=generator).to(teacher.device)
                x, step = optimise_inputs(x, loss_of, self.iterations, self.lr, progress, step, betas=(0.5, 0.9))
                images.append(x)
        finally:
            for h in hooks:
                h.remove()
        return torch.cat(images), labels
