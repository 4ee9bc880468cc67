"""A data source: a dataset by name (``digits``) or by name and path (``npz:PATH``), registered like the other
plug-ins. A new source is one file in ``data/sources/`` (or your own module, registered with
``distillab.register_dataset``)::

    @register_dataset("blobs")
    @dataclass
    class Blobs(DataSource):
        def load(self, path, fetch):
            ...  # images in [0, 1] (N, C, H, W), int64 labels
            return Dataset("blobs", train, test, classes, mean, std, source="made here")

``data.load`` checks what a source returns (every class has training images, nothing is NaN or infinite).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..registry import Registry
from ..specs import Plugin


@dataclass
class DataSource(Plugin):
    """Base class of data sources; ``takes_path``: the spec is ``NAME:PATH`` (a file or folder), else ``NAME``."""

    takes_path: ClassVar[bool] = False

    def load(self, path: str, fetch: bool):
        """The dataset (a ``data.Dataset``); ``fetch=False`` must not download anything."""
        raise NotImplementedError


DATASETS = Registry("dataset", DataSource, "--data")


def register_dataset(name: str, *, replace: bool = False):
    """Class decorator: make a DataSource dataclass available as ``--data NAME`` (or ``NAME:PATH``)."""
    return DATASETS.register(name, replace=replace)


def dataset_forms() -> str:
    """``mnist, digits, ..., npz:PATH``: how each registered source is named, for --help and errors."""
    return ", ".join(name + (":PATH" if DATASETS.get(name).takes_path else "") for name in DATASETS.names())
