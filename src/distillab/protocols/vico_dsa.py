"""``vico-dsa``: the evaluation of VICO-UoE/DatasetCondensation's main.py for DSA sets (``--method DSA``): fresh
models trained E + 1 = 1001 passes with the rate dropped tenfold and the optimiser rebuilt after pass E//2 + 1
(``evaluate_synset``), each batch augmented by ``DiffAugment`` with its strategy: one op family per batch, its
parameters drawn per image, whole-pixel crops (DSA style ``vico``); the strategy the DSA instructions give,
color_crop_cutout_scale_rotate for digit datasets (no flip), color_crop_cutout_flip_scale_rotate otherwise; 20
models per set, the test set read after the last pass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from ..dsa import DSA, VICO_DIGITS_STRATEGY, VICO_STRATEGY
from ..errors import DistillabError
from ..evaluation import Augmentation, EvalProtocol, ReferenceSchedule, register_protocol

DIGIT_DATASETS = ("mnist", "digits")  # the reference's note names MNIST and SVHN


@register_protocol("vico-dsa")
@dataclass
class VicoDSA(ReferenceSchedule, EvalProtocol):
    runs: int = 20
    epochs: int = 1000
    strategy: str = "auto"   # auto: color_crop_cutout_scale_rotate for digits, else all six families
    # the reference's whole-pixel crop and cutout; distillab: its fractional ones (to measure what the crop does)
    style: Literal["vico", "distillab"] = "vico"

    reference = "VICO-UoE/DatasetCondensation main.py + utils.py (commit 53f63a6): evaluate_synset, DiffAugment"
    quick = {"runs": 1, "epochs": 2, "models": ("convnet:width=4,depth=2",), "strategy": VICO_DIGITS_STRATEGY}

    def check(self) -> None:
        super().check()
        if self.strategy != "auto":
            DSA(strategy=self.strategy, style="vico")  # unknown families: one line

    def auto_strategy(self, data: str | None) -> str:
        return VICO_DIGITS_STRATEGY if data in DIGIT_DATASETS else VICO_STRATEGY

    def for_data(self, data, synset=None):
        if self.strategy != "auto":
            return self
        return dataclasses.replace(self, strategy=self.auto_strategy(data))

    def augmentation(self, input_shape, spec):
        if self.strategy == "auto":
            raise DistillabError(f"the {self.name} protocol's augmentation depends on the dataset: resolve it with "
                                 "for_data(data) first (the API does)")
        return Augmentation(DSA.for_inputs(input_shape, strategy=self.strategy, style=self.style), per_image=True)

    def summary(self, spec: str | None = None) -> str:
        return f"{self.epochs} epochs (+1 pass), DSA {self.strategy} per image"
