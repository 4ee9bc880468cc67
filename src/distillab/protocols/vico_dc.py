"""``vico-dc``: the evaluation of VICO-UoE/DatasetCondensation's main.py for DC sets (``--method DC``): fresh models
trained E + 1 passes with the rate dropped tenfold and the optimiser rebuilt after pass E//2 + 1
(``evaluate_synset``), on images augmented per image by its non-differentiable ``augment`` with the parameters of
``get_daparam``: crop 4 px, scale 0.2, rotate 45 degrees, noise 0.001; strategy crop_scale_rotate for MNIST,
crop_noise for a batch-norm ConvNet, none otherwise; E = 1000 whenever the models train with augmentation, 300
otherwise; 20 models per set (its ``--num_eval``), the test set read after the last pass."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..augmentation import DC_OPS, DCAugment
from ..errors import DistillabError, require
from ..evaluation import Augmentation, EvalProtocol, ReferenceSchedule, register_protocol
from ..specs import parse_spec


def is_batch_norm_convnet(spec: str) -> bool:
    parsed = parse_spec(spec, "model spec")
    return parsed.name == "convnet" and parsed.options.get("norm") == "batch"


def dc_strategy(data: str | None) -> str:
    """get_daparam's strategy for a dataset (distillab's spec of it): crop_scale_rotate on MNIST, else none."""
    return "crop_scale_rotate" if data == "mnist" else "none"


@register_protocol("vico-dc")
@dataclass
class VicoDC(ReferenceSchedule, EvalProtocol):
    runs: int = 20
    epochs: int = 0                    # 0: 1000 when the models train with augmentation, 300 without (main.py)
    strategy: str = "auto"             # auto: get_daparam's for the dataset; or ops of crop, scale, rotate, noise
    strategy_bn: str = "crop_noise"    # a batch-norm ConvNet's (get_daparam's ConvNetBN rule); same: as strategy
    crop: int = 4
    scale: float = 0.2
    rotate: int = 45
    noise: float = 0.001

    reference = ("VICO-UoE/DatasetCondensation main.py + utils.py (commit 53f63a6): evaluate_synset, get_daparam, "
                 "augment")
    quick = {"runs": 1, "epochs": 2, "models": ("convnet:width=4,depth=2",), "strategy": "crop_scale_rotate"}
    zero_means_auto = ("epochs",)

    def check(self) -> None:
        super().check()
        for key in ("strategy", "strategy_bn"):
            value = getattr(self, key)
            if value in ("auto", "none", "same"):
                require(key == "strategy_bn" or value != "same", "vico-dc strategy 'same' is for strategy_bn only")
                continue
            DCAugment(strategy=value, crop=self.crop, scale=self.scale, rotate=self.rotate, noise=self.noise)
        require(not (self.strategy_bn == "auto"), "vico-dc strategy_bn is a strategy or 'same'")
        # the ops and their settings are checked by DCAugment (one line each)
        DCAugment(strategy="_".join(DC_OPS), crop=self.crop, scale=self.scale, rotate=self.rotate, noise=self.noise)

    def for_data(self, data, synset=None):
        if self.strategy != "auto":
            return self
        return dataclasses.replace(self, strategy=dc_strategy(data))

    def strategy_for(self, spec: str) -> str:
        if self.strategy == "auto":
            raise DistillabError("the vico-dc protocol's augmentation depends on the dataset: resolve it with "
                                 "for_data(data) first (the API does)")
        if is_batch_norm_convnet(spec) and self.strategy_bn != "same":
            return self.strategy_bn
        return self.strategy

    def epochs_for(self, spec: str) -> int:
        return self.epochs or (1000 if self.strategy_for(spec) != "none" else 300)

    def augmentation(self, input_shape, spec):
        strategy = self.strategy_for(spec)
        if strategy == "none":
            return None
        return Augmentation(DCAugment(strategy=strategy, crop=self.crop, scale=self.scale, rotate=self.rotate,
                                      noise=self.noise, input_shape=tuple(input_shape)), per_image=True)

    def summary(self, spec: str | None = None) -> str:
        spec = spec or self.models[0]
        strategy = self.strategy_for(spec)
        return f"{self.epochs_for(spec)} epochs (+1 pass)" + ("" if strategy == "none" else f", dc {strategy}")
