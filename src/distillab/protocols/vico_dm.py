"""``vico-dm``: the evaluation of VICO-UoE/DatasetCondensation's main_DM.py: as ``vico-dsa`` (1000 epochs + 1
pass, the optimiser rebuilt at the decay, DiffAugment per image with whole-pixel crops), with main_DM.py's own
default strategy, color_crop_cutout_flip_scale_rotate for every dataset (its README gives no digit exception), and
20 models per set (its ``--num_eval``; the README's commands pass 5)."""

from __future__ import annotations

from dataclasses import dataclass

from ..dsa import VICO_STRATEGY
from ..evaluation import register_protocol
from .vico_dsa import VicoDSA


@register_protocol("vico-dm")
@dataclass
class VicoDM(VicoDSA):
    strategy: str = VICO_STRATEGY

    reference = "VICO-UoE/DatasetCondensation main_DM.py + utils.py (commit 53f63a6): evaluate_synset, DiffAugment"
