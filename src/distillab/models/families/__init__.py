"""The built-in model families, one module each. Every module in this folder is imported here and registers its
family: a new built-in family is one new file."""

from ...registry import Registry

Registry.discover(__name__, __path__)
