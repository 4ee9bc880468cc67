"""The built-in data-free methods, one module each. Every module in this folder is imported here and registers its
method: a new built-in method is one new file."""

from ...registry import Registry

Registry.discover(__name__, __path__)
