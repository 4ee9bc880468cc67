"""distillab: machine teaching in PyTorch -- model distillation and dataset distillation.

The API in one place: ``train``, ``distill``, ``chain``, ``condense_data``, ``evaluate``, ``predict``,
``inspect_teacher``, ``load``; models as spec strings or ``nn.Module``s, data as spec strings, torch ``Dataset``s,
``DataLoader``s or tensors; plug-ins with ``register_loss`` (a ``LossTerm`` dataclass) and ``register_method`` (a
``Method`` dataclass). See docs/design.md and docs/extending.md.
"""

from ._version import __version__
from .api import (Result, chain, condense_data, distill, evaluate, evaluate_model, evaluate_synset, inspect_teacher,
                  load, predict, train)
from .condense import Method, SyntheticSet, register_method
from .errors import DistillabError
from .kd import LossInputs, LossTerm, register_loss

__all__ = ["DistillabError", "LossInputs", "LossTerm", "Method", "Result", "SyntheticSet", "__version__", "chain",
           "condense_data", "distill", "evaluate", "evaluate_model", "evaluate_synset", "inspect_teacher", "load",
           "predict",
           "register_loss", "register_method", "train"]
