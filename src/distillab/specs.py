"""Spec strings: ``name:key=value,key=value`` (models, losses, condensation methods, data sources).

``options_from_spec`` fills an options dataclass (a model family, a loss term, a condensation method, ...): each field
is an option, its type says how to read the value, its default is the option's one default; ``spec_string`` writes it
back.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import ClassVar

from .errors import DistillabError, require


@dataclass(frozen=True)
class Spec:
    name: str
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.options.items())


def _split_items(rest: str, text: str, what: str) -> list[str]:
    """Split at commas outside [...]: a value that holds commas itself (a model spec) is written in brackets."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(rest):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth < 0:
            raise DistillabError(f"bad {what} '{text}': unbalanced ']'")
        if ch == "," and depth == 0:
            items.append(rest[start:i])
            start = i + 1
    if depth != 0:
        raise DistillabError(f"bad {what} '{text}': unbalanced '['")
    return items + [rest[start:]]


def parse_spec(text: str, what: str = "spec") -> Spec:
    """``mlp:hidden=800-800,dropout=0.5`` -> Spec("mlp", {"hidden": "800-800", "dropout": "0.5"}).

    A value containing commas goes in brackets: ``dm:model=[convnet:width=16,depth=2],iterations=5``; one made
    of ``key:value`` pairs may also go without: ``bptt:attack=source:3,target:8``.
    """
    require(isinstance(text, str) and text.strip() != "", f"empty {what}")
    name, _, rest = text.strip().partition(":")
    options: dict[str, str] = {}
    if rest:
        items: list[str] = []
        for item in _split_items(rest, text, what):
            # a value made of key:value pairs may go unbracketed: attack=source:3,target:8
            if "=" not in item and ":" in item and items and ":" in items[-1].partition("=")[2]:
                items[-1] += "," + item
            else:
                items.append(item)
        for item in items:
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise DistillabError(f"bad {what} '{text}': expected key=value after ':', got '{item}'")
            require(key.strip() not in options, f"bad {what} '{text}': '{key.strip()}' is given twice")
            value = value.strip()
            if value.startswith("[") and value.endswith("]"):
                value = value[1:-1]
            options[key.strip()] = value
    return Spec(name.strip(), options)


# --------------------------------------------------------------------------------------------------------------
# Options dataclasses

TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no")


def option_fields(cls) -> dict[str, tuple[dataclasses.Field, object]]:
    """{name: (field, type)} of the options a dataclass takes from a spec (fields with init=True)."""
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls) if f.init}


def _convert(raw: str, kind, key: str, where: str):
    if typing.get_origin(kind) is typing.Literal:
        choices = typing.get_args(kind)
        if raw not in choices:
            raise DistillabError(f"{where}: {key} must be one of {', '.join(map(str, choices))}, got '{raw}'")
        return raw
    if kind is bool:
        if raw.lower() in TRUE:
            return True
        if raw.lower() in FALSE:
            return False
        raise DistillabError(f"{where}: {key} must be 1 or 0 (true or false), got '{raw}'")
    if typing.get_origin(kind) is tuple and typing.get_args(kind)[:1] == (int,):  # whole numbers joined by '-'
        try:  # (an mlp's hidden widths, 800-800; none: empty)
            return tuple(int(v) for v in raw.split("-") if v.strip() != "")
        except ValueError:
            raise DistillabError(f"{where}: {key} must be whole numbers joined by '-', like 800-800, got '{raw}'") \
                from None
    if typing.get_origin(kind) is tuple:  # several values, joined by '+' (a protocol's models)
        values = tuple(v.strip() for v in raw.split("+"))
        if not all(values):
            raise DistillabError(f"{where}: {key} takes values joined by '+', got '{raw}'")
        return values
    if kind in (int, float):
        try:
            value = kind(raw)
        except ValueError:
            raise DistillabError(f"{where}: {key} must be {'a whole number' if kind is int else 'a number'}, "
                                 f"got '{raw}'") from None
        if kind is float and not math.isfinite(value):
            raise DistillabError(f"{where}: {key} must be a finite number, got '{raw}'")
        return value
    return raw


def options_from_spec(cls, options: dict[str, str], where: str, defaults: dict | None = None):
    """An instance of the options dataclass ``cls`` from a spec's string options; unknown keys are an error.

    ``defaults`` fill options the spec leaves out, for the fields ``cls`` has (e.g. the --tap paths).
    """
    known = option_fields(cls)
    unknown = sorted(set(options) - set(known))
    if unknown:
        listed = ", ".join(known) if known else "none"
        raise DistillabError(f"{where}: unknown option(s) {', '.join(unknown)}; its options are {listed}")
    values = {k: v for k, v in (defaults or {}).items() if k in known}
    values.update({key: _convert(raw, known[key][1], key, where) for key, raw in options.items()})
    return cls(**values)


def _typed(value, kind, key: str, where: str):
    """A value read from JSON, checked against the option's type (a file may be forged)."""
    if typing.get_origin(kind) is typing.Literal:
        ok = value in typing.get_args(kind)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typing.get_origin(kind) is tuple:  # JSON keeps a tuple as a list
        item = typing.get_args(kind)[0]
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, item) and not isinstance(v, bool) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, kind) if isinstance(kind, type) else True
    if not ok:
        raise DistillabError(f"{where}: option {key} holds {value!r}"[:200] + f", not a valid {getattr(kind, '__name__', kind)}")
    return value


def options_from_values(cls, values: dict, where: str):
    """An instance of the options dataclass ``cls`` from typed values (JSON metadata); unknown keys are an error."""
    known = option_fields(cls)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise DistillabError(f"{where}: unknown option(s) {', '.join(map(str, unknown))}; its options are "
                             f"{', '.join(known) or 'none'}")
    return cls(**{key: _typed(value, known[key][1], key, where) for key, value in values.items()})


def _format(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        whole = value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        text = ("-" if whole else "+").join(map(str, value))
        return f"[{text}]" if "," in text else text
    text = repr(value) if isinstance(value, float) else str(value)
    return f"[{text}]" if "," in text else text


def spec_string(name: str, options) -> str:
    """``name:key=value,...`` with every option of the dataclass instance ``options``: parses back to an equal one."""
    values = [f"{key}={_format(getattr(options, key))}" for key in option_fields(type(options))]
    return name + (":" + ",".join(values) if values else "")


EXECUTION = "execution"  # field metadata: an option of how a part runs (compile), not of what it makes


def execution_option(default):
    """A field for an option that changes how a part runs but not what it makes (beyond float rounding): it
    parses and shows in the spec string like any option, and is left out of ``option_values``, the recipe that
    files record and that kept benchmark cells are matched by."""
    return dataclasses.field(default=default, metadata={EXECUTION: True})


def option_values(options) -> dict:
    """{key: value} of every option of a dataclass instance that shapes what it makes (what files record):
    execution options (``execution_option``) are left out."""
    return {key: getattr(options, key) for key, (f, _) in option_fields(type(options)).items()
            if not f.metadata.get(EXECUTION)}


def options_help(cls) -> str:
    """``key=default, ...`` for --help texts."""
    return ", ".join(f"{key}={_format(f.default)}" for key, (f, _) in option_fields(cls).items()
                     if f.default is not dataclasses.MISSING) or "no options"


class Plugin:
    """What every registered part (a loss term, a condensation method, a label mode) shares: a dataclass whose fields
    are its options, checked on creation, written back as its spec string and, with its name, into files."""

    name: ClassVar[str] = ""

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Refuse impossible options (one line, naming the option)."""

    def __str__(self) -> str:
        return spec_string(self.name, self)

    def describe(self) -> dict:
        """What files and config.yaml record: the name and every option (execution options too: it rebuilds the
        part as it was given)."""
        return {"name": self.name, **{key: getattr(self, key) for key in option_fields(type(self))}}
