"""Dataset distillation: a training set condensed into a few (synthetic) images per class.

``SyntheticSet`` (``synset.py``) is the artefact; ``Method`` (``method.py``) the plug-in shape; each built-in method
is one module in ``methods/``: the baselines ``random``, ``herding``, ``kmeans``, ``mean``; ``dm`` (distribution
matching) and ``bptt`` (Wang et al. 2018).
"""

from . import methods  # noqa: F401  (registers the built-in methods)
from .method import (METHODS, Method, Progress, check_ipc, condense, initial_images, parse_method,
                     random_real_images, register_method)
from .methods.bptt import BPTT
from .methods.dm import DM
from .synset import SYNSET_FORMAT, SyntheticSet, dataset_hash

__all__ = ["METHODS", "Method", "Progress", "check_ipc", "condense", "initial_images", "parse_method",
           "random_real_images", "register_method", "BPTT", "DM", "SYNSET_FORMAT", "SyntheticSet", "dataset_hash"]
