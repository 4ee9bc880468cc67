"""``mobilenetv2:width=0.5,expand=6``: the CIFAR MobileNetV2 of the distillation papers' tables (CRD's
``MobileNetV2``, from Jin et al. 2019's route-constrained optimisation code; at its defaults, half width).

A stride-2 3x3 stem of 32 x width channels; seven stages of inverted residual blocks (1x1 expansion by ``expand``,
the first stage by 1 -> depthwise 3x3 -> linear 1x1; a residual where the shape is kept) of 16, 24, 32, 64, 96, 160,
320 x width channels, 1, 2, 3, 4, 3, 3, 1 blocks, strides 1, 1, 2, 2, 1, 2, 1 (the second stage keeps the size, unlike
ImageNet's); a 1x1 conv to 1280 channels (1280 x width above width 1), global average pooling, a linear classifier.
Module paths for feature taps: ``features.stem``, ``features.stage1`` .. ``features.stage7``, ``features.head``.
Weights start as the reference code draws them (Kaiming-normal, fan-out, for the convolutions; N(0, 0.01) for the
classifier). Any input size and channel count.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import nn

from ..layers import kaiming_fan_out, pooled
from ..family import ModelFamily, check_range, register_model

# (expansion (None: the ``expand`` option), channels, blocks, stride) per stage, at width 1
STAGES = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1), (None, 160, 3, 2),
          (None, 320, 1, 1))


def conv_bn(cin, cout, kernel, stride=1, groups=1, relu=True) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
            *([nn.ReLU()] if relu else [])]


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expansion):
        super().__init__()
        mid = cin * expansion
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(*conv_bn(cin, mid, 1), *conv_bn(mid, mid, 3, stride, groups=mid),
                                  *conv_bn(mid, cout, 1, relu=False))

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, input_shape, num_classes, width=0.5, expand=6):
        super().__init__()
        cin = int(32 * width)
        parts: OrderedDict[str, nn.Module] = OrderedDict(stem=nn.Sequential(*conv_bn(input_shape[0], cin, 3, 2)))
        for i, (t, channels, blocks, stride) in enumerate(STAGES):
            cout = int(channels * width)
            layers = []
            for b in range(blocks):
                layers.append(InvertedResidual(cin, cout, stride if b == 0 else 1, expand if t is None else t))
                cin = cout
            parts[f"stage{i + 1}"] = nn.Sequential(*layers)
        last = int(1280 * width) if width > 1.0 else 1280
        parts["head"] = nn.Sequential(*conv_bn(cin, last, 1))
        self.features = pooled(parts)
        self.classifier = nn.Linear(last, num_classes)
        kaiming_fan_out(self)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("mobilenetv2")
@dataclass
class MobileNetV2Family(ModelFamily):
    width: float = 0.5   # width multiplier of every layer but the last conv (CRD's MobileNetV2: 0.5)
    expand: int = 6      # expansion of the inverted residual blocks after the first stage

    def check(self) -> None:
        check_range(self, "width", self.width, 0.0625, 4)  # the first stage keeps int(16 x width) >= 1 channels
        check_range(self, "expand", self.expand, 1, 16)

    def build(self, input_shape, num_classes):
        return MobileNetV2(input_shape, num_classes, width=self.width, expand=self.expand)
