"""What the model families share: dropout drawn from an explicit generator, the normalisation layers by name,
Xavier initialisation; ``Renormalise``, which puts a normalisation in front of a model; and for 1-D signals (held
as (B, C, 1, L) inside), ``SignalShapes`` and ``FromSignals``, which let a model take them as the user has them."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import DistillabError


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


def pooled(parts: dict) -> nn.Sequential:
    """A CIFAR network's ``features``: its named stages ``parts`` (in order), then global average pooling and
    flatten, so the penultimate feature (what distribution matching embeds) is the pooled vector."""
    return nn.Sequential(OrderedDict([*parts.items(), ("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]))


def kaiming_fan_out(model: nn.Module) -> None:
    """The CIFAR reference code's convolution initialisation: Kaiming normal, fan-out, for ReLU."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


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


def _signal_shapes(channels: int, length: int) -> str:
    return " or ".join(([f"(B, {length})"] if channels == 1 else []) + [f"(B, {channels}, {length})",
                                                                         f"(B, {channels}, 1, {length})"])


class SignalShapes:
    """A forward pre-hook for a model of 1-D signals of ``input_shape`` (C, 1, L), which it holds as one-row images:
    the model then also takes them as the user has them, (B, L) (one channel) or (B, C, L), besides (B, C, 1, L);
    any other shape is one ``DistillabError`` naming those three. ``distillab.load`` puts it on such models."""

    def __init__(self, input_shape):
        self.channels, _, self.length = (int(v) for v in input_shape)

    def accepted(self) -> str:
        return _signal_shapes(self.channels, self.length)

    def __call__(self, module, args):
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        x, c, length = args[0], self.channels, self.length
        if x.dim() == 4 and tuple(x.shape[1:]) == (c, 1, length):
            return None
        if x.dim() == 3 and tuple(x.shape[1:]) == (c, length):
            return (x[:, :, None, :], *args[1:])
        if x.dim() == 2 and c == 1 and x.shape[1] == length:
            return (x[:, None, None, :], *args[1:])
        raise DistillabError(f"this model takes 1-D signals of shape {self.accepted()} (B: any batch size); "
                             f"got {tuple(x.shape)}")

    def __repr__(self):
        return f"SignalShapes({self.accepted()})"


class FromSignals(nn.Module):
    """Signals as the data holds them, (B, L) for the NL layout or (B, C, L) for NCL, to the (B, C, 1, L) a model of
    them takes: the first layer of an exported model of 1-D data. Another shape raises an error naming the one it
    takes (written so that TorchScript keeps the check; torch.export and ONNX check input shapes themselves)."""

    def __init__(self, layout: str, input_shape):
        super().__init__()
        if layout not in ("NL", "NCL"):
            raise ValueError(f"layout must be NL or NCL, got {layout!r}")
        self.layout = layout
        self.channels, _, self.length = (int(v) for v in input_shape)
        self.takes = f"(B, {self.length})" if layout == "NL" else f"(B, {self.channels}, {self.length})"

    def forward(self, x):
        if self.layout == "NL":
            if x.dim() != 2 or x.size(1) != self.length:
                raise ValueError("this model takes 1-D signals of shape " + self.takes + " (B: any batch size); got "
                                 + str(list(x.shape)))
            return x[:, None, None, :]
        if x.dim() != 3 or x.size(1) != self.channels or x.size(2) != self.length:
            raise ValueError("this model takes 1-D signals of shape " + self.takes + " (B: any batch size); got "
                             + str(list(x.shape)))
        return x[:, :, None, :]

    def extra_repr(self):
        return f"{self.layout}: takes {self.takes}"
