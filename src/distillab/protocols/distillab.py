"""``distillab``: the default protocol -- the DC/DSA papers' settings (ConvNet-3, SGD 0.01, momentum 0.9, weight
decay 5e-4, batch 256, the rate tenfold lower from epoch E//2 + 1 on) as distillab runs them: E passes, one
optimiser throughout, DSA drawn once per batch or the reference's DC augmentation drawn per image, 300 epochs
unless told. It is the default because it is one fixed yardstick for every method and dataset: the reference
protocols change their epochs, augmentation and draws by dataset and method (docs/design.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..augmentation import DCAugment
from ..dsa import DSA
from ..errors import require
from ..evaluation import Augmentation, EvalProtocol, register_protocol

# the protocol's augment options: none, or the reference's non-differentiable per-image augmentation (DCAugment)
AUGMENTS = ("none", "dc")


@register_protocol("distillab")
@dataclass
class Protocol(EvalProtocol):
    """The field's protocol: ``runs`` fresh models of each spec in ``models`` trained on the set, then measured once."""

    dsa: bool = False
    augment: str = "none"
    dsa_draw: Literal["batch", "image"] = "batch"  # DSA parameters shared by a batch, or drawn per image

    reference = ("distillab: E passes, the rate x0.1 from epoch E//2+1 on (one optimiser), DSA drawn once per "
                 "batch with fractional-pixel crops, or the reference's DC augmentation per image")

    def check(self) -> None:
        super().check()
        require(self.augment in AUGMENTS, f"--augment must be one of {', '.join(AUGMENTS)}, got '{self.augment}'")
        require(not (self.dsa and self.augment != "none"),
                f"--dsa and --augment {self.augment} are two evaluation augmentations; pick one (the reference uses "
                "its dc augmentation only when DSA is off)")

    def lr_at(self, spec: str, p: int) -> float:
        """0-based pass; x0.1 from epoch E//2+1 (1-based) on."""
        return self.lr * (0.1 if p + 1 >= self.epochs // 2 + 1 else 1.0)

    def augmentation(self, input_shape, spec):
        if self.dsa:
            return Augmentation(DSA.for_inputs(input_shape), per_image=self.dsa_draw == "image")
        if self.augment == "dc":
            return Augmentation(DCAugment.for_inputs(input_shape), per_image=True)
        return None

    def summary(self, spec: str | None = None) -> str:
        return f"{self.epochs} epochs" + (" with DSA" if self.dsa else "") + \
            (" with dc augmentation" if self.augment == "dc" else "")
