"""``convnet:width=128,depth=3,norm=instance|batch|layer|none,pool=avg|max``: the dataset-distillation ConvNet
(ConvNet-3 at its defaults), 1-D for signals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from ...errors import require
from ..family import ModelFamily, check_range, register_model
from ..layers import norm_layer


class ConvNet(nn.Module):
    """depth x [conv 3x3 -> norm -> ReLU -> pool 2x2] -> linear. 28x28 inputs get padding 3 first (as 32x32).

    Signals (inputs one row high, (C, 1, L)) get the 1-D form: conv 1x3, pool 1x2 along their length.
    """

    def __init__(self, input_shape, num_classes, width=128, depth=3, norm="instance", pool="avg"):
        super().__init__()
        channels, height, width_px = input_shape
        one_d = height == 1
        layers: list[nn.Module] = []
        size = [height, width_px]
        for i in range(depth):
            pad = 3 if (i == 0 and height == 28 and width_px == 28) else 1
            if one_d:
                layers.append(nn.Conv1d(channels if i == 0 else width, width, 3, padding=pad))
            else:
                layers.append(nn.Conv2d(channels if i == 0 else width, width, 3, padding=pad))
                size[0] = size[0] + 2 * pad - 2
            size[1] = size[1] + 2 * pad - 2
            pooled = size[1:] if one_d else size
            require(min(pooled) >= 2, f"convnet:depth={depth} halves its input {depth} times, but a {height}x{width_px} "
                                      f"input is down to {'x'.join(map(str, size))} at layer {i + 1}; use a smaller "
                                      "depth or larger inputs")
            layers += [norm_layer(norm, width, one_d), nn.ReLU()]
            layers.append((nn.AvgPool1d(2) if pool == "avg" else nn.MaxPool1d(2)) if one_d else
                          (nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2)))
            size = [size[0] if one_d else size[0] // 2, size[1] // 2]
        self.one_d = one_d
        self.features = nn.Sequential(*([nn.Flatten(1, 2)] if one_d else []), *layers, nn.Flatten())
        self.classifier = nn.Linear(width * size[0] * size[1], num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("convnet")
@dataclass
class ConvNetFamily(ModelFamily):
    width: int = 128                                      # channels of every conv layer
    depth: int = 3                                        # conv -> norm -> ReLU -> pool blocks
    norm: Literal["instance", "batch", "layer", "none"] = "instance"
    pool: Literal["avg", "max"] = "avg"

    def check(self) -> None:
        check_range(self, "width", self.width, 1)
        check_range(self, "depth", self.depth, 1, 8)

    def build(self, input_shape, num_classes):
        return ConvNet(input_shape, num_classes, width=self.width, depth=self.depth, norm=self.norm, pool=self.pool)
