"""``dsa``: gradient matching with differentiable siamese augmentation (Zhao & Bilen 2021; docs/reference.md §2):
``gm`` with the augmentation on -- one draw per class, applied to its real and its synthetic images alike -- and the
synthetic images starting from real ones. ``recipe=vico``: main.py's ``--method DSA --init real`` (gm's vico recipe
with the augmentation on: the strategy without flip for grayscale digits, as the DSA instructions say for MNIST)."""

from __future__ import annotations

from dataclasses import dataclass

from ..method import register_method
from .gm import GM


@register_method("dsa")
@dataclass
class SiameseGM(GM):
    dsa: bool = True

    recipes = {"vico": {**GM.recipes["vico"], "dsa": True, "init": "real"}}
