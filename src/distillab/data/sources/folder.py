"""``folder:PATH``: image files in one folder per class (``PATH/CLASS/*.png``), or ``train/`` and ``test/`` folders
of those; every image is read at one size and channel count."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core import _load_folder
from ..source import DataSource, register_dataset


@register_dataset("folder")
@dataclass
class Folder(DataSource):
    takes_path = True

    def load(self, path, fetch):
        return _load_folder(Path(path))
