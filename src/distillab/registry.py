"""Registries: named plug-ins, each an options dataclass with behaviour -- loss terms, condensation methods, label
modes, data-free methods, audits, evaluation protocols, model families and data sources.

A plug-in class is registered under a name (``@LOSSES.register("kd")``); a spec ``NAME:key=value,...`` builds an
instance, its fields filled from the options (``specs.options_from_spec``). Choices in the CLI and its --help
(``help()``), the benchmarks' lists and the errors for unknown names all read the registry; the built-in parts of a
family are the files of one folder, imported by ``discover()``.

Code named by the user -- ``import:pkg.module:Name[:key=value,...]`` typed on the command line or passed from
Python -- is imported only with ``trust_code=True``. Anything read from a file is parsed with ``trust_code=False``
unless the user passed ``--trust-code``: a file can name a registered plug-in, never make distillab import code.
"""

from __future__ import annotations

import importlib
import pkgutil

from .errors import DistillabError, require
from .specs import options_from_spec, options_from_values, options_help, parse_spec

IMPORT_PREFIX = "import:"


def untrusted_code_error(what: str, spec: str, source: str) -> DistillabError:
    return DistillabError(f"{source} names code to import ({what} '{spec}'); distillab imports code named by a "
                          "file only when you trust it: pass --trust-code (trust_code=True in Python)")


def import_object(spec: str, what: str):
    """``import:pkg.module:Name`` -> the object. Only ever called for specs the user typed or trusted."""
    parts = spec.split(":")
    require(len(parts) >= 3 and parts[1] and parts[2],
            f"bad {what} '{spec}'; expected import:pkg.module:Name[:key=value,...]")
    try:
        return getattr(importlib.import_module(parts[1]), parts[2])
    except (ImportError, AttributeError) as e:
        raise DistillabError(f"cannot import {parts[1]}:{parts[2]} ({e}); is the module on PYTHONPATH?") from None


class Registry:
    """Plug-in classes of one kind (``base``), by name, in registration order."""

    def __init__(self, kind: str, base: type, flag: str):
        self.kind, self.base, self.flag = kind, base, flag
        self._classes: dict[str, type] = {}
        self._builtin: set[str] = set()

    def register(self, name: str, *, replace: bool = False):
        """Class decorator: ``@registry.register("name")``. Classes defined inside distillab count as built-in
        (the benchmarks' lists take those); a user's own stay out of them."""
        def decorate(cls):
            require(isinstance(cls, type) and issubclass(cls, self.base),
                    f"a {self.kind} must be a subclass of {self.base.__name__}, got {cls!r}")
            require(isinstance(name, str) and name and ":" not in name and "," not in name,
                    f"a {self.kind} name must be a non-empty word without ':' or ',', got {name!r}")
            require(replace or name not in self._classes or self._classes[name] is cls,
                    f"a {self.kind} named '{name}' is registered already; pass replace=True to override it")
            cls.name = name
            self._classes[name] = cls
            if cls.__module__.split(".")[0] == "distillab":
                self._builtin.add(name)
            return cls
        return decorate

    def unregister(self, name: str) -> None:
        self._classes.pop(name, None)
        self._builtin.discard(name)

    @staticmethod
    def discover(package: str, path) -> list[str]:
        """Import every module of a plug-in folder (a package's ``__name__`` and ``__path__``), each registering
        its part: a new built-in part is one new file there. Returns the modules' names."""
        names = [m.name for m in pkgutil.iter_modules(path)]
        for name in names:
            importlib.import_module(f"{package}.{name}")
        return names

    def help(self) -> str:
        """``name (key=default, ...); ...`` for --help texts and errors; a class may add a note before its options
        (``help_note()``, e.g. an audit's "privacy")."""
        def note(cls) -> str:
            text = cls.help_note() if hasattr(cls, "help_note") else ""
            return f"{text}; " if text else ""
        return "; ".join(f"{name} ({note(cls)}{options_help(cls)})" for name, cls in self._classes.items())

    def names(self, builtin_only: bool = False) -> list[str]:
        return [n for n in self._classes if not builtin_only or n in self._builtin]

    def get(self, name: str) -> type | None:
        """A registered class by name, or None: never imports anything (safe for names read from files)."""
        return self._classes.get(name) if isinstance(name, str) else None

    def resolve(self, name: str, *, trust_code: bool = True, source: str = "") -> type:
        if name.startswith(IMPORT_PREFIX):
            if not trust_code:
                raise untrusted_code_error(self.kind, name, source or "this input")
            cls = import_object(name, self.kind)
            require(isinstance(cls, type) and issubclass(cls, self.base),
                    f"{name} is not {'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind} (a subclass of distillab's "
                    f"{self.base.__name__})")
            if not getattr(cls, "name", ""):
                cls.name = name
            return cls
        cls = self._classes.get(name)
        if cls is None:
            raise DistillabError(f"unknown {self.kind} '{name}'; choose from {', '.join(self._classes)}, or "
                                 f"{IMPORT_PREFIX}pkg.module:Name for your own")
        return cls

    def split(self, text: str) -> tuple[str, dict[str, str]]:
        """``NAME[:key=value,...]`` or ``import:pkg.module:Name[:key=value,...]`` -> (name, string options)."""
        require(isinstance(text, str) and text.strip() != "", f"empty {self.kind} spec")
        text = text.strip()
        if text.startswith(IMPORT_PREFIX):
            parts = text.split(":", 3)
            return ":".join(parts[:3]), parse_spec("x:" + parts[3], self.kind).options if len(parts) == 4 else {}
        spec = parse_spec(text, self.kind)
        return spec.name, spec.options

    def parse(self, text: str, *, trust_code: bool = True, defaults: dict | None = None, source: str = ""):
        """An instance from ``NAME[:key=value,...]`` or ``import:pkg.module:Name[:key=value,...]``."""
        name, options = self.split(text)
        cls = self.resolve(name, trust_code=trust_code, source=source)
        where = f"{self.flag} '{text.strip()}'"
        recipe = options.pop("recipe", None) if hasattr(cls, "recipe_options") else None
        if recipe is not None:  # a named recipe fills the options the spec leaves out (see condense.Method)
            defaults = {**(defaults or {}), **cls.recipe_options(recipe)}
        made = options_from_spec(cls, options, where, defaults)
        if recipe is not None:
            made.recipe = recipe
        return made

    def from_description(self, description: dict, *, trust_code: bool = False, source: str = ""):
        """An instance back from ``describe()`` (``{"name": ..., option: value, ...}``), as files record it."""
        where = source or "this input"
        require(isinstance(description, dict) and isinstance(description.get("name"), str),
                f"{where}: a {self.kind} is recorded as {{'name': ..., options...}}, got {description!r}"[:300])
        cls = self.resolve(description["name"], trust_code=trust_code, source=where)
        options = {k: v for k, v in description.items() if k != "name"}
        return options_from_values(cls, options, f"{where}: {self.kind} '{description['name']}'")
