"""``hint``: FitNets feature regression (Romero et al. 2015) through a learned connector (1x1 conv or linear)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import nn

from ...models import constructors_drawing_from
from ..loss import FeatureTerm, register_loss
from ..taps import make_connector


@register_loss("hint")
@dataclass
class Hint(FeatureTerm):
    distance_like = True

    connector: nn.Module | None = field(default=None, init=False, repr=False, compare=False)

    def build(self, sample, generator):
        s, t = self.features(sample)
        with constructors_drawing_from(generator):
            self.connector = make_connector(tuple(s.shape[1:]), tuple(t.shape[1:])).to(s.device)
        return [self.connector]

    def __call__(self, batch):
        s, t = self.features(batch)
        return {"hint": self.w * F.mse_loss(self.connector(s.float()), t)}
