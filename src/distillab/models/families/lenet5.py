"""``lenet5[:norm=none|batch]`` and ``lenet5-half`` (DAFL's LeNet-5-half: every layer half as wide)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ...errors import require
from ..family import ModelFamily, register_model


class LeNet5(nn.Module):
    """LeNet-5 (ReLU, max-pool); ``half`` halves every layer's width (DAFL's LeNet-5-half)."""

    def __init__(self, input_shape, num_classes, half=False, norm="none"):
        super().__init__()
        c1, c2, f1, f2 = (3, 8, 60, 42) if half else (6, 16, 120, 84)
        batch = norm == "batch"  # BatchNorm after every conv and hidden linear layer (DeepInversion's teachers)
        channels, height, width = input_shape
        require(min(height, width) >= 4, f"lenet5 takes images of at least 4x4 pixels (it pools twice), got "
                                         f"{height}x{width}; use mlp or convnet")
        pad2 = 0 if min(height, width) // 2 >= 10 else 2  # small inputs (8x8 digits) keep their size
        self.features = nn.Sequential(
            nn.Conv2d(channels, c1, 5, padding=2), *([nn.BatchNorm2d(c1)] if batch else []), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=pad2), *([nn.BatchNorm2d(c2)] if batch else []), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten())
        was_training = self.features.training
        self.features.eval()  # the size probe must not move BatchNorm's running statistics
        with torch.no_grad():
            n = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.features.train(was_training)
        self.fc = nn.Sequential(nn.Linear(n, f1), *([nn.BatchNorm1d(f1)] if batch else []), nn.ReLU(),
                                nn.Linear(f1, f2), *([nn.BatchNorm1d(f2)] if batch else []), nn.ReLU())
        self.classifier = nn.Linear(f2, num_classes)

    def forward(self, x):
        return self.classifier(self.fc(self.features(x)))


@register_model("lenet5")
@dataclass
class LeNet5Family(ModelFamily):
    norm: Literal["none", "batch"] = "none"  # batch: BatchNorm after every conv and hidden linear layer

    def build(self, input_shape, num_classes):
        return LeNet5(input_shape, num_classes, half=False, norm=self.norm)


@register_model("lenet5-half")
@dataclass
class LeNet5HalfFamily(ModelFamily):
    norm: Literal["none", "batch"] = "none"

    def build(self, input_shape, num_classes):
        return LeNet5(input_shape, num_classes, half=True, norm=self.norm)
