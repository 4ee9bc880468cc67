"""``noise``: the transfer set is random inputs (standard normal in the teacher's normalised input space), labelled
by the teacher. The floor every data-free method must beat (about 88% on MNIST, REFERENCE.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import require
from ..method import DataFreeMethod, register_datafree


@register_datafree("noise")
@dataclass
class Noise(DataFreeMethod):
    quick = {"samples": 500}

    scale: float = 1.0  # standard deviation of the inputs, in normalised units

    def check(self) -> None:
        super().check()
        require(self.scale > 0, f"--method {self}: scale must be > 0, got {self.scale}")

    def run(self, teacher, n, generator, progress=None):
        x = (self.scale * torch.randn(n, *teacher.input_shape, generator=generator)).to(teacher.device)
        return x, teacher.labels(x)
