"""distillab: machine teaching in PyTorch -- model distillation and dataset distillation."""

__version__ = "0.1.0"

from .errors import DistillabError  # noqa: E402
from .api import Result, distill, evaluate_model, train  # noqa: E402

__all__ = ["DistillabError", "Result", "distill", "evaluate_model", "train", "__version__"]
