"""Dataset distillation: a training set condensed into a few (synthetic) images per class.

``SyntheticSet`` (``synset.py``) is the artefact; ``Method`` (``method.py``) the plug-in shape; each built-in method
is one module in ``methods/``: the baselines ``random``, ``herding``, ``kmeans``, ``mean``; ``dm`` (distribution
matching), ``gm``/``dsa`` (gradient matching) and ``bptt`` (Wang et al. 2018). ``labels.py``: how a set is
labelled once made (hard, learned, a teacher's outputs), for every method.
"""

from . import methods  # noqa: F401  (registers the built-in methods)
from .labels import LABELS, Labels, parse_labels, register_labels
from .method import (METHODS, Method, Progress, check_ipc, condense, initial_images, parse_method,
                     random_real_images, register_method, relabel)
from .methods.bptt import BPTT
from .methods.dm import DM
from ..data import dataset_hash
from .synset import SYNSET_FORMAT, SyntheticSet

__all__ = ["LABELS", "Labels", "parse_labels", "register_labels", "METHODS", "Method", "Progress", "check_ipc", "condense", "initial_images", "parse_method",
           "random_real_images", "register_method", "relabel", "BPTT", "DM", "SYNSET_FORMAT", "SyntheticSet", "dataset_hash"]
