"""The CIFAR VGGs of the distillation papers' tables (CRD's ``vgg8`` .. ``vgg19``, all with batch norm): five blocks
of 3x3 conv -> BN -> ReLU (64, 128, 256, 512, 512 channels), max-pooled 2x2 after the first three (and the fourth on
inputs of 64 pixels or more), global average pooling, one linear layer (no fully connected stack). One name each, no
architecture options: ``vgg8``, ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``.

Module paths for feature taps: ``features.block0`` .. ``features.block4``, ``features.pool``. Weights start as the
reference code draws them (Kaiming-normal, fan-out, for the convolutions; N(0, 0.01) for the classifier; zero
biases). Images of at least 8x8 pixels (it halves them three times), any channel count.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ...errors import require
from ..layers import kaiming_fan_out, pooled
from ..family import ModelFamily, register_model

# convolutions per block, by name (the five blocks have 64, 128, 256, 512, 512 channels)
LAYOUTS = {"vgg8": (1, 1, 1, 1, 1), "vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3),
           "vgg19": (2, 2, 4, 4, 4)}
CHANNELS = (64, 128, 256, 512, 512)


class VGG(nn.Module):
    def __init__(self, input_shape, num_classes, convs=(2, 2, 2, 2, 2), name="vgg"):
        super().__init__()
        channels, height, width = input_shape
        require(min(height, width) >= 8, f"{name} halves its input three times: it takes images of at least 8x8 "
                                         f"pixels, got {height}x{width}; use a resnet or wrn")
        parts: OrderedDict[str, nn.Module] = OrderedDict()
        cin = channels
        for i, (n, cout) in enumerate(zip(convs, CHANNELS)):
            layers: list[nn.Module] = []
            for _ in range(n):
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
                cin = cout
            parts[f"block{i}"] = nn.Sequential(*layers)
            if i < 3 or (i == 3 and min(height, width) >= 64):  # the reference pools a fourth time on 64x64 inputs
                parts[f"pool{i}"] = nn.MaxPool2d(2)
        self.features = pooled(parts)
        self.classifier = nn.Linear(cin, num_classes)
        kaiming_fan_out(self)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.classifier.weight, 0, 0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x):
        return self.classifier(self.features(x))


@dataclass
class VGGFamily(ModelFamily):
    """A named CIFAR VGG: its layers are the name's, not options."""

    convs: ClassVar[tuple[int, ...]] = LAYOUTS["vgg13"]

    def build(self, input_shape, num_classes):
        return VGG(input_shape, num_classes, convs=self.convs, name=self.name)


for _name, _convs in LAYOUTS.items():
    _cls = type(f"VGG_{_name}", (VGGFamily,), {"convs": _convs, "__module__": __name__,
                                               "__doc__": f"``{_name}``: CIFAR VGG with batch norm."})
    register_model(_name)(dataclass(_cls))
    globals()[_cls.__name__] = _cls
del _name, _convs, _cls
