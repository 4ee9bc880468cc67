"""``kmeans``: the ``ipc`` k-means cluster centres of each class, in pixel space."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..method import Method, register_method
from ..synset import SyntheticSet


@register_method("kmeans")
@dataclass
class KMeans(Method):
    def run(self, train, ipc, generator, progress=None):
        from sklearn.cluster import KMeans as SKMeans

        out = []
        for idx in train.class_indices():
            feats = train.read(idx).flatten(1).cpu().numpy()
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
            km = SKMeans(n_clusters=ipc, n_init=1, random_state=seed).fit(feats)
            out.append(torch.from_numpy(km.cluster_centers_).float().view(ipc, *train.input_shape).to(train.device))
        return SyntheticSet.class_major(train, torch.cat(out), ipc)
