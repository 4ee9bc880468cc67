"""``shufflenetv1``: the CIFAR ShuffleNet (Zhang et al. 2018, 3 groups; CRD's ``ShuffleV1``).

A 1x1 stem of 24 channels; three stages of 4, 8, 4 bottleneck units (grouped 1x1 -> channel shuffle -> depthwise 3x3
-> grouped 1x1; the first unit of a stage strides 2 and concatenates a 3x3 average-pooled shortcut) ending at 240,
480, 960 channels; global average pooling, a linear classifier. Module paths for feature taps: ``features.stem``,
``features.stage1`` .. ``features.stage3``. PyTorch's default initialisation (as the reference code). Any input size
and channel count.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..layers import pooled
from ..family import ModelFamily, register_model

STEM = 24
STAGES = ((240, 4), (480, 8), (960, 4))  # (channels out, units)
GROUPS = 3


class ChannelShuffle(nn.Module):
    """(N, g * c, H, W) -> (N, c * g, H, W): interleave the channels of ``groups`` groups."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self):
        return f"groups={self.groups}"


class ShuffleUnit(nn.Module):
    def __init__(self, cin, cout, stride, groups, first_groups):
        super().__init__()
        mid = cout // 4
        self.stride = stride
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, groups=first_groups, bias=False), nn.BatchNorm2d(mid)
        self.shuffle = ChannelShuffle(first_groups)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, groups=groups, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()

    def forward(self, x):
        out = self.shuffle(torch.relu(self.bn1(self.conv1(x))))
        out = self.bn3(self.conv3(torch.relu(self.bn2(self.conv2(out)))))
        skip = self.shortcut(x)
        return torch.relu(torch.cat([out, skip], 1) if self.stride == 2 else out + skip)


class ShuffleNetV1(nn.Module):
    def __init__(self, input_shape, num_classes, groups=GROUPS, stages=STAGES):
        super().__init__()
        parts: OrderedDict[str, nn.Module] = OrderedDict(
            stem=nn.Sequential(nn.Conv2d(input_shape[0], STEM, 1, bias=False), nn.BatchNorm2d(STEM), nn.ReLU()))
        cin = STEM
        for i, (cout, units) in enumerate(stages):
            layers = []
            for u in range(units):
                # the first unit concatenates its input, so it makes cout - cin channels; the network's first 1x1
                # conv (on the stem's 24 channels) is not grouped
                layers.append(ShuffleUnit(cin, cout - cin if u == 0 else cout, 2 if u == 0 else 1, groups,
                                          1 if cin == STEM else groups))
                cin = cout
            parts[f"stage{i + 1}"] = nn.Sequential(*layers)
        self.features = pooled(parts)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("shufflenetv1")
@dataclass
class ShuffleNetV1Family(ModelFamily):
    def build(self, input_shape, num_classes):
        return ShuffleNetV1(input_shape, num_classes)
