"""The commands of ``distillab``: one file each in this folder, holding its ``COMMAND`` (a ``Command``: its flags,
its examples and its call into the Python API). A new command is a new file; ``registered()`` finds it.

No module here imports torch or numpy when imported: ``distillab --help`` builds every command's flags and answers
at once; a command's ``run`` imports the API when it runs. ``flags.py`` holds ``Command`` and the flag groups
several commands share.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from .flags import Command


def discover(package: str, path) -> dict[str, Command]:
    """The ``COMMAND`` of every module of a folder of commands (a package's ``__name__`` and ``__path__``), by
    name, in the order of 'distillab --help'."""
    modules = [importlib.import_module(f"{package}.{m.name}") for m in pkgutil.iter_modules(path)]
    found = sorted((m.COMMAND for m in modules if hasattr(m, "COMMAND")), key=lambda c: (c.order, c.name))
    return {command.name: command for command in found}


@functools.cache
def registered() -> dict[str, Command]:
    """distillab's own commands, by name, in --help order."""
    return discover(__name__, __path__)
