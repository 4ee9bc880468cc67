"""``shufflenetv2``: the CIFAR ShuffleNetV2 1x (Ma et al. 2018; CRD's ``ShuffleV2``).

A 1x1 stem of 24 channels; three stages, each a stride-2 down-sampling unit and 3, 7, 3 basic units (half the
channels pass, the other half goes 1x1 -> depthwise 3x3 -> 1x1; concatenated and shuffled) of 116, 232, 464
channels; a 1x1 conv to 1024 channels, global average pooling, a linear classifier. Module paths for feature taps:
``features.stem``, ``features.stage1`` .. ``features.stage3``, ``features.head``. PyTorch's default initialisation
(as the reference code). Any input size and channel count.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from ..layers import pooled
from ..family import ModelFamily, register_model
from .shufflenetv1 import ChannelShuffle

STEM = 24
STAGES = ((116, 3), (232, 7), (464, 3))  # (channels, basic units after the down-sampling one)
LAST = 1024


def _conv_bn(cin, cout, kernel, stride=1, depthwise=False, relu=True) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=cin if depthwise else 1, bias=False),
            nn.BatchNorm2d(cout), *([nn.ReLU()] if relu else [])]


class BasicUnit(nn.Module):
    def __init__(self, channels):
        super().__init__()
        half = channels // 2
        self.half = half
        self.branch = nn.Sequential(*_conv_bn(half, half, 1), *_conv_bn(half, half, 3, depthwise=True, relu=False),
                                    *_conv_bn(half, half, 1))
        self.shuffle = ChannelShuffle(2)

    def forward(self, x):
        keep, rest = x[:, :self.half], x[:, self.half:]
        return self.shuffle(torch.cat([keep, self.branch(rest)], 1))


class DownUnit(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        mid = cout // 2
        self.left = nn.Sequential(*_conv_bn(cin, cin, 3, 2, depthwise=True, relu=False), *_conv_bn(cin, mid, 1))
        self.right = nn.Sequential(*_conv_bn(cin, mid, 1), *_conv_bn(mid, mid, 3, 2, depthwise=True, relu=False),
                                   *_conv_bn(mid, mid, 1))
        self.shuffle = ChannelShuffle(2)

    def forward(self, x):
        return self.shuffle(torch.cat([self.left(x), self.right(x)], 1))


class ShuffleNetV2(nn.Module):
    def __init__(self, input_shape, num_classes, stages=STAGES, last=LAST):
        super().__init__()
        parts: OrderedDict[str, nn.Module] = OrderedDict(stem=nn.Sequential(*_conv_bn(input_shape[0], STEM, 1)))
        cin = STEM
        for i, (channels, basic) in enumerate(stages):
            units = [DownUnit(cin, channels)] + [BasicUnit(channels) for _ in range(basic)]
            parts[f"stage{i + 1}"] = nn.Sequential(*units)
            cin = channels
        parts["head"] = nn.Sequential(*_conv_bn(cin, last, 1))
        self.features = pooled(parts)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("shufflenetv2")
@dataclass
class ShuffleNetV2Family(ModelFamily):
    def build(self, input_shape, num_classes):
        return ShuffleNetV2(input_shape, num_classes)
