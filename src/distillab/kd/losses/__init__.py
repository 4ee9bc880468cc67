"""The built-in loss terms, one module each. Every module in this folder is imported here and registers its term:
a new built-in term is one new file."""

from ...registry import Registry

Registry.discover(__name__, __path__)
