"""Every random stream of a run comes from its seed through this one helper.

A stream is named for what it drives. The formulas are frozen: runs recorded in docs/benchmarks.md were made with
them, and a new stream gets a new name rather than a changed formula.

| stream       | seed          | drives                                                          |
|--------------|---------------|-----------------------------------------------------------------|
| ``main``     | seed          | a run's own draws: model init, batch order, augmentation, condensing |
| ``dropout``  | seed + 1      | dropout masks during training                                   |
| ``connectors`` | seed + 2    | loss terms' ``build``, in order: connectors (FitNets hints), kd's noise seed |
| ``protocol`` | seed * 1000 + i | the i-th model spec of the evaluation protocol, or the i-th as-made run |
| ``expert``   | seed * 100003 + 50021 + i | the i-th expert trajectory (``distillab experts``)          |
| ``labels``   | seed + 10000  | a condensation's label mode (learned labels), after the method's draws |
| ``synthesis`` | seed + 20000 | a data-free method's transfer set (``distillab datafree``)          |
| ``subset``   | seed * 7919 + 30011 + i | a benchmark's labelled subset of a dataset (``bench omni-mnist``) |
| ``audit``    | seed + 40000 + i | the i-th audit of ``distillab audit`` (its models, shadows, samples) |

The global RNG is never seeded or drawn from (module constructors run on a fork of it, ``models``).
"""

from __future__ import annotations

import torch

STREAMS = {
    "main": lambda seed, index: seed + index,
    "dropout": lambda seed, index: seed + 1 + index,
    "connectors": lambda seed, index: seed + 2 + index,
    "protocol": lambda seed, index: seed * 1000 + index,
    "expert": lambda seed, index: seed * 100_003 + 50_021 + index,
    "labels": lambda seed, index: seed + 10_000 + index,
    "synthesis": lambda seed, index: seed + 20_000 + index,
    "subset": lambda seed, index: seed * 7_919 + 30_011 + index,
    "audit": lambda seed, index: seed + 40_000 + index,
}


def derive(seed: int, stream: str = "main", index: int = 0) -> int:
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream '{stream}'; known: {', '.join(STREAMS)}")
    return STREAMS[stream](int(seed), int(index))


def generator(seed: int, stream: str = "main", index: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh torch.Generator for ``stream`` of a run seeded ``seed``."""
    return torch.Generator(device=device).manual_seed(derive(seed, stream, index))
