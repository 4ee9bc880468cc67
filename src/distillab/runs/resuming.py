"""Continuing an unfinished run with the call that started it (``resume``)."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

from ..errors import DistillabError, require
from ..registry import IMPORT_PREFIX
from .run import RUN_FUNCTIONS, Result


def resumable() -> dict:
    """Every run function that ``resume`` may call again, by name (this package's modules register them)."""
    for module in pkgutil.iter_modules(importlib.import_module(__package__).__path__):
        importlib.import_module(f"{__package__}.{module.name}")
    return {name: run for name, run in RUN_FUNCTIONS.items() if run.resumable}


def resume(out, *, command: str | None = None, quiet: bool = False, trust_code: bool = False,
           checkpoint_every: int | None = None) -> Result:
    """Continue the unfinished run in ``out`` (killed, stopped by a signal, or failed after a checkpoint) with the
    call that started it; ``command``, if given, must be the command that made it."""
    out = Path(out)
    partial = out.with_name(f".{out.name}.partial")
    if not partial.is_dir():
        raise DistillabError(f"nothing to resume in {out}: " + ("that run finished" if out.exists() else
                                                                "no unfinished run is there"))
    try:
        call = json.loads((partial / "call.json").read_text())
        function, kwargs = call["function"], dict(call["kwargs"])
        runs = resumable()
        require(function in runs, "")
    except (OSError, ValueError, KeyError, TypeError, DistillabError):
        raise DistillabError(f"{partial} does not say how it was started (call.json is missing or corrupt); "
                             "start the run again with --overwrite") from None
    made_by = kwargs.get("command") if function == "repeat_over_seeds" else runs[function].command
    require(command is None or command == made_by,
            f"{out} holds an unfinished '{made_by}' run; resume it with 'distillab {made_by} --resume {out}'")
    named = code_named_in(kwargs)
    require(trust_code or not named, f"{partial / 'call.json'} names code to import ({named[0] if named else ''}); "
                                     "resume it with --trust-code if you trust it")
    if "trust_code" in kwargs:
        kwargs["trust_code"] = trust_code
    if checkpoint_every is not None and function not in ("evaluate_synset", "experts"):
        kwargs["checkpoint_every"] = checkpoint_every
    fn = runs[function].function
    if function == "repeat_over_seeds":  # the function repeated, by name: train or distill only
        repeated = kwargs.get("fn")
        kwargs["fn"] = runs[repeated].function if repeated in ("train", "distill") else None
        require(kwargs["fn"] is not None, f"{partial / 'call.json'} is corrupt; start again with --overwrite")
    try:
        return fn(out=out, resume=True, quiet=quiet, **kwargs)
    except TypeError as e:
        raise DistillabError(f"{partial / 'call.json'} does not fit this version ({e}); start again with "
                             "--overwrite") from None


def code_named_in(value) -> list[str]:
    """The ``import:`` specs anywhere in a value read from a file (a recipe, a run's call.json)."""
    if isinstance(value, dict):
        return [spec for v in value.values() for spec in code_named_in(v)]
    if isinstance(value, (list, tuple)):
        return [spec for v in value for spec in code_named_in(v)]
    return [value] if isinstance(value, str) and IMPORT_PREFIX in value else []
