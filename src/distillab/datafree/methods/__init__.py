"""The built-in data-free methods, one module each. Every module in this folder is imported here and registers its
method: a new built-in method is one new file."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
