"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images; a seeded quarter held out as the test
split). The tests' dataset: no download."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core import Dataset, _holdout, _stats
from ..source import DataSource, register_dataset


@register_dataset("digits")
@dataclass
class Digits(DataSource):
    def load(self, path, fetch):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(bunch.target, dtype=torch.int64)
        train, test = _holdout(x, y, 0.25)
        mean, std = _stats(train.x)
        return Dataset("digits", train, test, [str(i) for i in range(10)], mean, std, "scikit-learn load_digits")
