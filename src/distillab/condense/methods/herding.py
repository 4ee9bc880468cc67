"""``herding``: greedy herding (Welling 2009) in pixel space: each pick moves the running mean of the chosen
images closest to the class mean."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..method import Method, register_method
from ..synset import SyntheticSet


@register_method("herding")
@dataclass
class Herding(Method):
    def run(self, train, ipc, generator, progress=None):
        out = []
        for idx in train.class_indices():
            images = train.read(idx)
            feats = images.flatten(1).double()
            target = feats.mean(0)
            chosen: list[int] = []
            total = torch.zeros_like(target)
            for t in range(1, ipc + 1):
                dist = ((total[None] + feats) / t - target[None]).pow(2).sum(1)
                if chosen:
                    dist[chosen] = float("inf")
                i = int(dist.argmin())
                chosen.append(i)
                total += feats[i]
            out.append(images[chosen])
        return SyntheticSet.class_major(train, torch.cat(out).clone(), ipc)
