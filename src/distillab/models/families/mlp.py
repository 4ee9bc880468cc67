"""``mlp:hidden=800-800[,dropout=0.5][,input_dropout=0.2]``: a multilayer perceptron (Hinton et al. 2015's MNIST
teacher with dropout, its student without)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from ..family import ModelFamily, check_range, register_model
from ..layers import Dropout


class MLP(nn.Module):
    """Flatten -> [linear -> ReLU (-> dropout)] per hidden width -> linear."""


    def __init__(self, input_shape, num_classes, hidden=(800, 800), dropout=0.0, input_dropout=0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        if input_dropout:
            layers.append(Dropout(input_dropout))
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(Dropout(dropout))
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model("mlp")
@dataclass
class MLPFamily(ModelFamily):
    hidden: tuple[int, ...] = (800, 800)  # widths of the hidden layers, joined by '-' in a spec
    dropout: float = 0.0                  # after every hidden layer
    input_dropout: float = 0.0            # on the inputs

    def check(self) -> None:
        for width in self.hidden:
            check_range(self, "hidden", width, 1)
        check_range(self, "dropout", self.dropout, 0, 0.95)
        check_range(self, "input_dropout", self.input_dropout, 0, 0.95)

    def build(self, input_shape, num_classes):
        return MLP(input_shape, num_classes, hidden=self.hidden, dropout=self.dropout,
                   input_dropout=self.input_dropout)
