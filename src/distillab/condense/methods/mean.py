"""``mean``: the means of ``ipc`` random groups of each class's images."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..method import Method, register_method
from ..synset import SyntheticSet


@register_method("mean")
@dataclass
class Mean(Method):
    def run(self, train, ipc, generator, progress=None):
        out = []
        for idx in train.class_indices():
            perm = idx[torch.randperm(len(idx), generator=generator)]
            out += [train.read(group).mean(0, keepdim=True) for group in perm.tensor_split(ipc)]
        return SyntheticSet.class_major(train, torch.cat(out), ipc)
