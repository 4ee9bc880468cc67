"""``random``: a random subset of real training images, ``ipc`` per class (the baseline every method must beat)."""

from __future__ import annotations

from dataclasses import dataclass

from ..method import Method, random_real_images, register_method
from ..synset import SyntheticSet


@register_method("random")
@dataclass
class Random(Method):
    def run(self, train, ipc, generator, progress=None):
        return SyntheticSet.class_major(train, random_real_images(train, ipc, generator), ipc)
