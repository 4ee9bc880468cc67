"""distillab: machine teaching in PyTorch -- model distillation and dataset distillation.

The API in one place: ``train``, ``distill``, ``chain``, ``condense_data``, ``evaluate``, ``predict``,
``pseudolabel``, ``metadata``, ``distill_datafree``, ``audit``, ``serve``, ``tune``,
``inspect_teacher``, ``load``; models as spec strings or ``nn.Module``s, data as spec strings, torch ``Dataset``s,
``DataLoader``s or tensors; plug-ins with ``register_loss`` (a ``LossTerm`` dataclass) and ``register_method`` (a
``Method`` dataclass) and ``register_audit`` (an ``Audit`` dataclass). See docs/design.md and docs/extending.md.

Names load on first use, so ``import distillab`` (and ``distillab --help``) do not import torch.
"""

import importlib

from ._version import __version__
from .errors import DistillabError

_WHERE = {
    "Result": "api", "chain": "api", "condense_data": "api", "distill": "api", "evaluate": "api",
    "evaluate_model": "api", "evaluate_synset": "api", "inspect_teacher": "api", "load": "api", "predict": "api",
    "pseudolabel": "api", "metadata": "api", "distill_datafree": "api", "audit": "api", "serve": "api", "tune": "api",
    "train": "api", "export": "api", "resume": "api", "experts": "api", "data_export": "api", "tune_allocator": "speed",
    "Method": "condense", "SyntheticSet": "condense", "register_method": "condense", "Labels": "condense",
    "register_labels": "condense", "DataFreeMethod": "datafree", "register_datafree": "datafree",
    "ModelFamily": "models", "register_model": "models", "DataSource": "data", "register_dataset": "data",
    "LossInputs": "kd", "LossTerm": "kd", "register_loss": "kd", "Audit": "audits", "register_audit": "audits",
}

__all__ = ["DistillabError", "__version__", *_WHERE]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'distillab' has no attribute '{name}'")


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
