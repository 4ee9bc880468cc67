"""``herding``: greedy herding (Welling 2009): each pick moves the running mean of the chosen images closest to the
class mean -- in pixel space (``space=pixels``, the default), or in the feature space of a network trained on the
whole training split first (``space=features``: the penultimate features of ``model``, as the DC paper's coreset
baselines use a ConvNet trained on the whole set; ``recipe=dc``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ...errors import require
from ...evaluation import EvalProtocol, train_sequential
from ...models import build_model
from ..method import Method, register_method
from ..synset import SyntheticSet


@register_method("herding")
@dataclass
class Herding(Method):
    quick = {}

    space: Literal["pixels", "features"] = "pixels"
    # space=features: the network whose penultimate features herding works in, trained here on the whole training
    # split by SGD (momentum 0.9, weight decay 5e-4, as the evaluation protocol trains)
    model: str = "convnet:width=128,depth=3"
    epochs: int = 3
    lr: float = 0.01
    batch_size: int = 256

    recipes = {"dc": dict(space="features", model="convnet:width=128,depth=3", epochs=3, lr=0.01, batch_size=256)}

    def check(self) -> None:
        require(self.epochs >= 1, f"herding epochs must be at least 1, got {self.epochs}")
        require(self.lr > 0, f"herding lr must be > 0, got {self.lr}")
        require(self.batch_size >= 1, f"herding batch_size must be at least 1, got {self.batch_size}")

    def check_data(self, train) -> None:
        if self.space == "features":
            net = build_model(self.model, train.input_shape, train.num_classes)
            require(hasattr(net, "features"), f"herding in feature space reads the model's .features part; "
                                              f"'{self.model}' has none (use mlp or convnet)")

    def run(self, train, ipc, generator, progress=None):
        embed = self.feature_map(train, generator) if self.space == "features" else None
        out = []
        for idx in train.class_indices():
            images = train.read(idx)
            feats = (images if embed is None else embed(images)).flatten(1).double()
            out.append(images[herd(feats, ipc)])
        return SyntheticSet.class_major(train, torch.cat(out).clone(), ipc)

    def feature_map(self, train, generator):
        """A network trained on every training image (read once per epoch), returned as its embedding."""
        net = build_model(self.model, train.input_shape, train.num_classes, generator).to(train.device)
        protocol = EvalProtocol(runs=1, models=(self.model,), epochs=self.epochs, lr=self.lr,
                                batch_size=self.batch_size)
        x = train.read(torch.arange(len(train)))
        for _ in range(self.epochs - 1):  # the budget counts every image each epoch reads
            train.reads.note(torch.arange(len(train)))
        train_sequential([net], x, train.y, protocol, generator)

        @torch.no_grad()
        def embed(images):
            return torch.cat([net.features(part) for part in images.split(256)])

        return embed


def herd(feats: torch.Tensor, k: int) -> list[int]:
    """Positions of the k rows whose running mean, picked greedily one at a time, stays closest to the mean."""
    target = feats.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(target)
    for t in range(1, k + 1):
        dist = ((total[None] + feats) / t - target[None]).pow(2).sum(1)
        if chosen:
            dist[chosen] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        total += feats[i]
    return chosen
