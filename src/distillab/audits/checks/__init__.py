"""The built-in audits, one module each. Every module in this folder is imported here and registers its
audit: a new built-in audit is one new file."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
