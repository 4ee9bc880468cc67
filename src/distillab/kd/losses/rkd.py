"""``rkd``: relational KD (Park et al. 2019): distance and angle potentials of a batch's features, Huber loss."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import require
from ..functional import rkd_angle_loss, rkd_distance_loss
from ..loss import FeatureTerm, register_loss


@register_loss("rkd")
@dataclass
class RKD(FeatureTerm):
    distance_like = True

    distance: float = 25.0
    angle: float = 50.0

    def check(self) -> None:
        super().check()
        require(self.distance >= 0 and self.angle >= 0,
                f"--loss {self}: distance and angle weights must be >= 0, got {self.distance}, {self.angle}")

    def __call__(self, batch):
        s, t = self.features(batch)
        values = {}
        if self.distance:
            values["rkd_distance"] = self.w * self.distance * rkd_distance_loss(s, t)
        if self.angle:
            values["rkd_angle"] = self.w * self.angle * rkd_angle_loss(s, t)
        return values
