"""``at``: attention transfer (Zagoruyko & Komodakis 2017): squared distance of L2-normalised attention maps."""

from __future__ import annotations

from dataclasses import dataclass

from ..functional import attention_loss
from ..loss import FeatureTerm, register_loss


@register_loss("at")
@dataclass
class AT(FeatureTerm):
    distance_like = True
    example = {"student": "features.0", "teacher": "features.0"}  # attention maps need (N, C, H, W) features

    w: float = 1000.0

    def build(self, sample, generator):
        self.feature_maps(sample, "compares attention maps of (N, C, H, W) feature maps")
        return []

    def __call__(self, batch):
        return {"at": self.w * attention_loss(*self.features(batch))}
