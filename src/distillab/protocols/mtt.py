"""``mtt``: the evaluation of GeorgeCazenavette/mtt-distillation's distill.py: as ``vico-dsa`` (1000 epochs + 1
pass, the optimiser rebuilt at the decay, DiffAugment per image with whole-pixel crops; its scale and rotate use
``align_corners=True``, the same sampling positions as distillab's for maps about the centre), with its default
strategy color_crop_cutout_flip_scale_rotate, 5 models per set (``--num_eval``) and the learning rate the set
learned (``args.lr_net = syn_lr``): lr 0 takes an mtt set's learned rate, or distill.py's initial 0.01 for any other
set. The reference reports the best of its evaluations over the run; distillab measures the final set only."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..dsa import VICO_STRATEGY
from ..evaluation import register_protocol
from .vico_dsa import VicoDSA

MTT_LR_TEACHER = 0.01  # distill.py's --lr_teacher: the learned rate's start


@register_protocol("mtt")
@dataclass
class MTTProtocol(VicoDSA):
    runs: int = 5
    lr: float = 0.0          # 0: the set's learned rate (mtt sets), else 0.01
    strategy: str = VICO_STRATEGY

    reference = "GeorgeCazenavette/mtt-distillation distill.py + utils.py (commit 50dccea): evaluate_synset"
    zero_means_auto = ("lr",)

    def for_data(self, data, synset=None):
        resolved = super().for_data(data, synset)
        if resolved.lr == 0:
            learned = synset is not None and (synset.meta or {}).get("method") == "mtt" and synset.lrs is not None
            resolved = dataclasses.replace(resolved, lr=float(synset.lrs.reshape(-1)[0]) if learned else MTT_LR_TEACHER)
        return resolved

    def summary(self, spec: str | None = None) -> str:
        rate = "the set's learned rate" if self.lr == 0 else f"lr {self.lr:.4g}"
        return f"{self.epochs} epochs (+1 pass), DSA {self.strategy} per image, {rate}"
