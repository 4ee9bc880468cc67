"""The built-in audits, one module each. Every module in this folder is imported here and registers its
audit: a new built-in audit is one new file."""

from ...registry import Registry

Registry.discover(__name__, __path__)
