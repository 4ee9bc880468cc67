"""``wrn:depth=40,width=2``: the wide ResNet WRN-depth-width (Zagoruyko & Komodakis 2016; the CIFAR teachers and
students of the distillation papers: WRN-40-2, WRN-16-2, WRN-40-1, WRN-16-1), without dropout.

Pre-activation basic blocks in three stages of (depth - 4) / 6 blocks, 16/32/64 x width channels (strides 1, 2, 2)
after a 16-channel 3x3 stem; BN and ReLU after the last stage, global average pooling, a linear classifier. Module
paths for feature taps: ``features.stem``, ``features.stage1`` .. ``features.stage3`` (pre-activation maps),
``features.head`` (after the final BN and ReLU). Weights start as the reference code draws them (Kaiming-normal,
fan-out, for the convolutions; zero linear bias). Any input size and channel count.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import require
from ..layers import kaiming_fan_out, pooled
from ..family import ModelFamily, check_range, register_model


class WideBlock(nn.Module):
    """BN -> ReLU -> conv 3x3 (stride) -> BN -> ReLU -> conv 3x3, plus the input; a 1x1 conv of the activated input
    where the channels or the size change."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if (cin != cout or stride != 1) else None

    def forward(self, x):
        act = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(act))))
        return out + (x if self.shortcut is None else self.shortcut(act))


class WideResNet(nn.Module):
    def __init__(self, input_shape, num_classes, depth=40, width=2):
        super().__init__()
        blocks = (depth - 4) // 6
        parts: OrderedDict[str, nn.Module] = OrderedDict(stem=nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False))
        cin = 16
        for i, channels in enumerate((16 * width, 32 * width, 64 * width)):
            parts[f"stage{i + 1}"] = nn.Sequential(*[WideBlock(cin if b == 0 else channels, channels,
                                                               2 if (i > 0 and b == 0) else 1) for b in range(blocks)])
            cin = channels
        parts["head"] = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU())
        self.features = pooled(parts)
        self.classifier = nn.Linear(cin, num_classes)
        kaiming_fan_out(self)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("wrn")
@dataclass
class WideResNetFamily(ModelFamily):
    depth: int = 40   # 6n + 4 layers: 10, 16, 22, 28, 40, ...
    width: int = 2    # widening factor k: stages of 16k, 32k, 64k channels

    def check(self) -> None:
        check_range(self, "depth", self.depth, 10, 1000)
        require((self.depth - 4) % 6 == 0, f"--model {self.name}: depth must be 6n+4 (10, 16, 22, 28, 40, ...), "
                                           f"got {self.depth}")
        check_range(self, "width", self.width, 1, 64)

    def build(self, input_shape, num_classes):
        return WideResNet(input_shape, num_classes, depth=self.depth, width=self.width)
