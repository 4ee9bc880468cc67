"""The built-in data sources, one module each. Every module in this folder is imported here and registers its
source: a new built-in dataset is one new file."""

from ...registry import Registry

Registry.discover(__name__, __path__)
