"""The CIFAR ResNets of the distillation papers' tables (He et al. 2016, Sec. 4.2, as CRD's code builds them): a 3x3
stem, three stages of basic blocks with 6n+2 layers in all, global average pooling, a linear classifier. One name
each, no architecture options: ``resnet8``, ``resnet14``, ``resnet20``, ``resnet32``, ``resnet44``, ``resnet56``,
``resnet110`` (stem 16 channels, stages 16/32/64) and ``resnet8x4``, ``resnet32x4`` (stem 32, stages 64/128/256).

Module paths for feature taps: ``features.stem``, ``features.stage1`` .. ``features.stage3`` (32x32, 16x16 and 8x8
maps on CIFAR), ``features.pool``; ``penultimate`` is the pooled vector. Weights start as the reference code draws
them (Kaiming-normal, fan-out, for the convolutions). Any input size and channel count.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ..layers import kaiming_fan_out, pooled
from ..family import ModelFamily, register_model
from .resnet18 import BasicBlock


class CifarResNet(nn.Module):
    """stem (3x3 conv, BN, ReLU) -> three stages of (depth - 2) / 6 basic blocks (strides 1, 2, 2) -> pool -> linear."""

    def __init__(self, input_shape, num_classes, depth: int, widths=(16, 16, 32, 64)):
        super().__init__()
        assert (depth - 2) % 6 == 0 and depth >= 8, depth
        blocks = (depth - 2) // 6
        stem, *stages = widths
        parts: OrderedDict[str, nn.Module] = OrderedDict(
            stem=nn.Sequential(nn.Conv2d(input_shape[0], stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU()))
        cin = stem
        for i, width in enumerate(stages):
            layers = []
            for b in range(blocks):
                layers.append(BasicBlock(cin, width, 2 if (i > 0 and b == 0) else 1, "batch"))
                cin = width
            parts[f"stage{i + 1}"] = nn.Sequential(*layers)
        self.features = pooled(parts)
        self.classifier = nn.Linear(cin, num_classes)
        kaiming_fan_out(self)

    def forward(self, x):
        return self.classifier(self.features(x))


@dataclass
class CifarResNetFamily(ModelFamily):
    """A named CIFAR ResNet: its depth and widths are the name's, not options."""

    depth: ClassVar[int] = 20
    widths: ClassVar[tuple[int, ...]] = (16, 16, 32, 64)

    def build(self, input_shape, num_classes):
        return CifarResNet(input_shape, num_classes, depth=self.depth, widths=self.widths)


# name: (depth, widths) -- CRD's (Tian et al. 2020) resnet8 .. resnet110, resnet8x4, resnet32x4
PRESETS = {**{f"resnet{d}": (d, (16, 16, 32, 64)) for d in (8, 14, 20, 32, 44, 56, 110)},
           "resnet8x4": (8, (32, 64, 128, 256)), "resnet32x4": (32, (32, 64, 128, 256))}

for _name, (_depth, _widths) in PRESETS.items():
    _cls = type(f"CifarResNet_{_name}", (CifarResNetFamily,), {"depth": _depth, "widths": _widths,
                                                              "__module__": __name__,
                                                              "__doc__": f"``{_name}``: CIFAR ResNet, depth {_depth}, "
                                                                         f"widths {'/'.join(map(str, _widths))}."})
    register_model(_name)(dataclass(_cls))
    globals()[_cls.__name__] = _cls
del _name, _depth, _widths, _cls
