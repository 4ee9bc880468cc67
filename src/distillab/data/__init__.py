"""Datasets as in-memory image tensors, named by spec strings.

A dataset is loaded as raw images in [0, 1] (N, C, H, W) with integer labels, plus the normalisation its models use.
``split()`` carves a seeded validation set from the training data: model selection uses it, never the test set.

Sources (``source.py``: the ``DataSource`` base and the ``DATASETS`` registry; one file each in ``sources/``):
``digits`` (scikit-learn's bundled 8x8 digits), ``mnist``, ``cifar10``, ``cifar100``, ``npz:PATH``, ``folder:PATH``,
``hf:PATH_OR_NAME`` (the Hugging Face ``datasets`` format).
"""

from .core import *  # noqa: F401,F403  (the room's public names)
from .core import _safe_unpickle  # noqa: F401  (the arrays-only unpickler, tested through the package)
from .source import DATASETS, DataSource, dataset_forms, register_dataset  # noqa: F401
from . import sources  # noqa: E402,F401  (registers the built-in sources)
