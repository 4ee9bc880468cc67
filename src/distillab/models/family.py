"""A model family: an options dataclass, registered by name, that builds its network for an input shape and a class
count -- ``convnet:width=128,depth=3`` is ``ConvNetFamily(width=128, depth=3)``. A new family is one file in
``models/families/`` (or your own module, registered with ``distillab.register_model``)::

    @register_model("tiny")
    @dataclass
    class Tiny(ModelFamily):
        width: int = 16
        def build(self, input_shape, num_classes):
            return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), self.width), nn.ReLU(),
                                 nn.Linear(self.width, num_classes))

The network's last linear layer should be called ``classifier`` (its input is the "penultimate" feature that
feature losses tap). Its weights are drawn by ``build_model`` from an explicit generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from ..errors import require
from ..registry import Registry
from ..specs import Plugin
from .layers import xavier_init


@dataclass
class ModelFamily(Plugin):
    """Base class of model families: every family also takes ``init`` (xavier: Xavier-normal conv and linear weights,
    zero biases, as Wang et al. 2018 train LeNet)."""

    init: Literal["default", "xavier"] = "default"

    def build(self, input_shape: tuple, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def make(self, input_shape: tuple, num_classes: int) -> nn.Module:
        """The network, initialised as ``init`` says (the caller seeds the draws)."""
        model = self.build(tuple(input_shape), num_classes)
        if self.init == "xavier":
            xavier_init(model)
        return model


MODELS = Registry("model", ModelFamily, "--model")


def register_model(name: str, *, replace: bool = False):
    """Class decorator: make a ModelFamily dataclass available as ``--model NAME[:key=value,...]``."""
    return MODELS.register(name, replace=replace)


def check_range(family: ModelFamily, key: str, value, low, high=None) -> None:
    """One line naming the model, the option and its range."""
    bound = f">= {low}" if high is None else f"{low}..{high}"
    require(low <= value and (high is None or value <= high),
            f"--model {family.name}: {key} must be {bound}, got {value}")
