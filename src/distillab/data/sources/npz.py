"""``npz:PATH``: your own arrays -- ``x`` and ``y`` (and ``x_test``, ``y_test``; without them a fifth is held out),
``layout`` saying how ``x`` is laid out, ``classes`` naming the classes. Sizes are checked from the headers before
anything is read; nothing in the file is unpickled."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core import _load_npz
from ..source import DataSource, register_dataset


@register_dataset("npz")
@dataclass
class Npz(DataSource):
    takes_path = True

    def load(self, path, fetch):
        return _load_npz(Path(path))
