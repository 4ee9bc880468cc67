"""What the model families share: dropout drawn from an explicit generator, the normalisation layers by name,
Xavier initialisation; and ``Renormalise``, which puts a normalisation in front of a model."""

from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Module):
    """Dropout that draws its masks from an explicit generator (set by the trainer) for reproducible runs."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator)
        return x * keep / (1 - self.p)

    def extra_repr(self):
        return f"p={self.p}"


def set_dropout_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    for m in model.modules():
        if isinstance(m, Dropout):
            m.generator = generator


def norm_layer(kind: str, channels: int, one_d: bool = False) -> nn.Module:
    if kind == "instance":  # instance norm with affine parameters, as the DD reference code writes it
        return nn.GroupNorm(channels, channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "batch":
        return nn.BatchNorm1d(channels) if one_d else nn.BatchNorm2d(channels)
    return nn.Identity()


def xavier_init(model: nn.Module) -> None:
    """Xavier-normal weights and zero biases for every conv and linear layer (Wang et al. 2018 train LeNet so)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class Renormalise(nn.Module):
    """Maps inputs normalised one way (``mean_from``, ``std_from`` per channel) to another (``mean_to``,
    ``std_to``): a teacher trained with other statistics, or (``from_pixels``) a model exported to take the data's
    own values."""

    def __init__(self, mean_from, std_from, mean_to, std_to):
        super().__init__()
        view = lambda v: torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", view(std_from) / view(std_to))
        self.register_buffer("shift", (view(mean_from) - view(mean_to)) / view(std_to))

    @classmethod
    def from_pixels(cls, mean, std) -> "Renormalise":
        """The normalisation itself: (x - mean) / std, for inputs as the data holds them."""
        return cls([0.0] * len(mean), [1.0] * len(std), mean, std)

    def forward(self, x):
        return x * self.scale + self.shift
