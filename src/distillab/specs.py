"""Spec strings: ``name:key=value,key=value`` (models, losses, augmentations, data sources).

Values stay strings here; each consumer converts and validates the keys it knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import DistillabError, require


@dataclass(frozen=True)
class Spec:
    name: str
    options: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.options.items())


def parse_spec(text: str, what: str = "spec") -> Spec:
    """``mlp:hidden=800-800,dropout=0.5`` -> Spec("mlp", {"hidden": "800-800", "dropout": "0.5"})."""
    require(isinstance(text, str) and text.strip() != "", f"empty {what}")
    name, _, rest = text.strip().partition(":")
    options: dict[str, str] = {}
    if rest:
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise DistillabError(f"bad {what} '{text}': expected key=value after ':', got '{item}'")
            options[key.strip()] = value.strip()
    return Spec(name.strip(), options)


class Options:
    """Typed, checked access to a spec's options; complains about keys nobody asked for."""

    def __init__(self, spec: Spec, what: str):
        self.spec, self.what = spec, what
        self._left = dict(spec.options)

    def _take(self, key: str):
        return self._left.pop(key, None)

    def get_str(self, key: str, default: str, choices: tuple[str, ...] | None = None) -> str:
        value = self._take(key)
        value = default if value is None else value
        if choices is not None and value not in choices:
            raise DistillabError(f"{self.what} '{self.spec}': {key} must be one of {', '.join(choices)}, got '{value}'")
        return value

    def get_float(self, key: str, default: float, low: float | None = None, high: float | None = None,
                  low_inclusive: bool = True) -> float:
        return self._number(key, default, float, "a number", low, high, low_inclusive)

    def get_int(self, key: str, default: int, low: int | None = None, high: int | None = None) -> int:
        return self._number(key, default, int, "a whole number", low, high, True)

    def _number(self, key, default, convert, kind, low, high, low_inclusive):
        raw = self._take(key)
        if raw is None:
            return default
        try:
            value = convert(raw)
        except ValueError:
            raise DistillabError(f"{self.what} '{self.spec}': {key} must be {kind}, got '{raw}'") from None
        self._check_range(key, value, low, high, low_inclusive)
        return value

    def get_ints(self, key: str, default: list[int], low: int = 1) -> list[int]:
        raw = self._take(key)
        if raw is None:
            return default
        try:
            values = [int(v) for v in raw.split("-") if v != ""]
        except ValueError:
            raise DistillabError(f"{self.what} '{self.spec}': {key} must be whole numbers joined by '-', "
                                 f"like 800-800, got '{raw}'") from None
        for v in values:
            self._check_range(key, v, low, None, True)
        return values

    def _check_range(self, key, value, low, high, low_inclusive):
        if low is not None and (value < low or (not low_inclusive and value == low)):
            bound = f">= {low}" if low_inclusive else f"> {low}"
            raise DistillabError(f"{self.what} '{self.spec}': {key} must be {bound}, got {value}")
        if high is not None and value > high:
            raise DistillabError(f"{self.what} '{self.spec}': {key} must be <= {high}, got {value}")

    def done(self) -> None:
        if self._left:
            raise DistillabError(f"{self.what} '{self.spec}': unknown option(s) {', '.join(sorted(self._left))}")
