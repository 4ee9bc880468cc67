"""``resnet18[:width=64,norm=batch|instance|layer|none]``: CIFAR-style ResNet-18 (3x3 stem, no max-pool)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..family import ModelFamily, check_range, register_model
from ..layers import norm_layer


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(norm, cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm_layer(norm, cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3x3 stem, no max-pool, four stages of two basic blocks."""

    def __init__(self, input_shape, num_classes, width=64, norm="batch"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False), norm_layer(norm, width), nn.ReLU())
        blocks, cin = [], width
        for stage, mult in enumerate((1, 2, 4, 8)):
            for b in range(2):
                stride = 2 if (stage > 0 and b == 0) else 1
                blocks.append(BasicBlock(cin, width * mult, stride, norm))
                cin = width * mult
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.layers(self.stem(x))))


@register_model("resnet18")
@dataclass
class ResNet18Family(ModelFamily):
    width: int = 64                                    # channels of the first stage (doubled per stage)
    norm: Literal["batch", "instance", "layer", "none"] = "batch"

    def check(self) -> None:
        check_range(self, "width", self.width, 1)

    def build(self, input_shape, num_classes):
        return ResNet18(input_shape, num_classes, width=self.width, norm=self.norm)
