"""``dafl``: a generator trained against the fixed teacher (Chen et al. 2019): its samples should be classified
confidently (cross-entropy to the teacher's own argmax), excite the teacher's last features (minus their mean
absolute value) and cover the classes evenly (minus the entropy of the batch's mean prediction). The transfer set is
drawn from the trained generator and labelled by the teacher."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import require
from ...models import constructors_drawing_from
from ..method import DataFreeMethod, register_datafree


class Generator(nn.Module):
    """DAFL's generator: z -> linear -> (2w, H/4, W/4) -> 2x [upsample, conv, BN, LeakyReLU] -> conv -> tanh ->
    BatchNorm without affine (samples land in the teacher's normalised input range)."""

    def __init__(self, latent: int, width: int, input_shape):
        super().__init__()
        c, h, w = input_shape
        self.shape, self.h0, self.w0 = tuple(input_shape), math.ceil(h / 4), math.ceil(w / 4)
        self.project = nn.Sequential(nn.Linear(latent, 2 * width * self.h0 * self.w0))
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * width), nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, width, 3, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Conv2d(width, c, 3, padding=1), nn.Tanh(), nn.BatchNorm2d(c, affine=False))
        self.width = width

    def forward(self, z):
        x = self.body(self.project(z).view(len(z), 2 * self.width, self.h0, self.w0))
        return x[:, :, :self.shape[1], :self.shape[2]]


@register_datafree("dafl")
@dataclass
class DAFL(DataFreeMethod):
    quick = {"iterations": 60, "batch": 64, "width": 16, "samples": 500}

    iterations: int = 2000  # generator steps
    batch: int = 256
    lr: float = 0.01        # Adam
    latent: int = 100
    width: int = 16         # the paper's MNIST generator has 64 (convs of 128); 16 fits a CPU hour with the student
    oh: float = 1.0         # weight of the one-hot (cross-entropy) term
    activation: float = 0.1  # weight of the feature-activation term
    balance: float = 5.0    # weight of the class-balance (information entropy) term

    def check(self) -> None:
        super().check()
        require(self.iterations >= 1 and self.batch >= 2, f"--method {self}: iterations >= 1 and batch >= 2")
        require(self.lr > 0 and self.latent >= 1 and self.width >= 1, f"--method {self}: lr, latent, width > 0")
        require(min(self.oh, self.activation, self.balance) >= 0, f"--method {self}: loss weights must be >= 0")

    def objective(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The generator's loss: the three terms of ``dafl_terms`` by their weights."""
        terms = dafl_terms(logits, features)
        return self.oh * terms["one_hot"] + self.activation * terms["activation"] + self.balance * terms["balance"]

    def run(self, teacher, n, generator, progress=None):
        with constructors_drawing_from(generator):
            net = Generator(self.latent, self.width, teacher.input_shape)
        net.to(teacher.device)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        net.train()
        for step in range(self.iterations):
            x = net(torch.randn(self.batch, self.latent, generator=generator).to(teacher.device))
            logits, features = teacher.with_features(x)
            loss = self.objective(logits, features)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if progress:
                progress(step, loss.item())
        images = []
        with torch.no_grad():  # drawn in batches of the training size, as the generator's BatchNorm learned them
            for start in range(0, n, self.batch):
                z = torch.randn(self.batch, self.latent, generator=generator).to(teacher.device)
                images.append(net(z)[:n - start])
        x = torch.cat(images)
        return x, teacher.labels(x)


def dafl_terms(logits: torch.Tensor, features: torch.Tensor) -> dict[str, torch.Tensor]:
    """The generator's three loss terms (each to be minimised): the cross-entropy of the teacher's outputs to their
    own argmax; minus the mean absolute feature; minus the entropy of the batch's mean prediction, which is lowest
    (-log K) when the batch covers the K classes evenly and 0 when it is all one class."""
    probs = F.softmax(logits, 1).mean(0)
    return {"one_hot": F.cross_entropy(logits, logits.argmax(1)), "activation": -features.abs().mean(),
            "balance": (probs * torch.log(probs.clamp_min(1e-12))).sum()}
