"""Checkpoints: everything a loop needs to continue exactly where it stopped, in one safetensors file.

A loop hands ``Checkpoints.save`` a tree of its state -- tensors, optimisers, torch Generators, modules, and plain
JSON values -- and gets the same tree back from ``load``; ``restore`` puts saved values back into live objects
(tensors copied in place, optimiser and generator states set). Files are written atomically (write, fsync,
rename), never pickled, and record the sizes of the run's log files, which ``load`` truncates back to match.

Stopping: ``stop_requested()`` turns true after SIGTERM or SIGINT while a loop runs (``signals_stop_loops``); the
loop then saves and raises ``Interrupted`` at its next step boundary, so a killed scheduler job resumes cleanly.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import DistillabError, require
from .files import load_tensors, save_tensors

CHECKPOINT_FORMAT = "distillab.checkpoint"


class Interrupted(Exception):
    """A loop stopped on request after saving a checkpoint; the run can be resumed."""


# --------------------------------------------------------------------------------------------------------------
# Trees of state <-> (tensors, JSON)


def pack(tree) -> tuple[dict[str, torch.Tensor], object]:
    """Split a tree into named tensors and a JSON skeleton that refers to them."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value, path: str):
        if isinstance(value, torch.Tensor):
            tensors[path] = value.detach()
            return {"__tensor__": path}
        if isinstance(value, torch.Generator):
            tensors[path] = value.get_state()
            return {"__generator__": path}
        if isinstance(value, (nn.Module, torch.optim.Optimizer)):
            return {"__state_dict__": walk(value.state_dict(), path)}
        if isinstance(value, dict):
            return {"__dict__": [[walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(value.items())]}
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        require(value is None or isinstance(value, (bool, int, float, str)),
                f"cannot checkpoint a {type(value).__name__}")
        return value

    return tensors, walk(tree, "s")


def unpack(tensors: dict[str, torch.Tensor], skeleton):
    """The tree back: tensors in place of their references; generators and state dicts as saved values."""
    def walk(node):
        if isinstance(node, dict):
            if "__tensor__" in node:
                return tensors[node["__tensor__"]]
            if "__generator__" in node:
                return ("generator", tensors[node["__generator__"]])
            if "__state_dict__" in node:
                return ("state_dict", walk(node["__state_dict__"]))
            if "__tuple__" in node:
                return tuple(walk(v) for v in node["__tuple__"])
            return {walk(k): walk(v) for k, v in node["__dict__"]}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    try:
        return walk(skeleton)
    except (KeyError, TypeError, ValueError) as e:
        raise DistillabError(f"the checkpoint is corrupt ({type(e).__name__}); start the run again with --overwrite") from None


def restore(live: dict, saved: dict) -> None:
    """Put ``saved`` values (from ``unpack``) back into the live objects of the same tree."""
    for key, obj in live.items():
        require(key in saved, f"the checkpoint lacks '{key}'; it was made by another version: start again with --overwrite")
        value = saved[key]
        if isinstance(obj, torch.Tensor):
            require(isinstance(value, torch.Tensor) and value.shape == obj.shape,
                    f"the checkpoint's '{key}' does not fit this run; start again with --overwrite")
            with torch.no_grad():
                obj.copy_(value)
        elif isinstance(obj, torch.Generator):
            obj.set_state(value[1])
        elif isinstance(obj, (nn.Module, torch.optim.Optimizer)):
            try:
                obj.load_state_dict(value[1])
            except (RuntimeError, ValueError, KeyError) as e:
                raise DistillabError(f"the checkpoint's '{key}' does not fit this run ({str(e).splitlines()[0][:80]}); "
                                     "start again with --overwrite") from None
        elif isinstance(obj, dict):
            restore(obj, value)
        elif isinstance(obj, (list, tuple)):
            require(isinstance(value, list) and len(value) == len(obj),
                    f"the checkpoint's '{key}' does not fit this run; start again with --overwrite")
            restore(dict(enumerate(obj)), dict(enumerate(value)))
        else:
            raise TypeError(f"cannot restore a {type(obj).__name__} in place; read it from the saved tree")


# --------------------------------------------------------------------------------------------------------------
# Stopping on signals


_STOP = {"requested": False, "loops": 0, "signal": None}


def stop_signal():
    """The signal that stopped the run (SIGTERM or SIGINT), if one did."""
    return _STOP["signal"]


def stop_requested() -> bool:
    return _STOP["requested"]


def stop_if_requested() -> None:
    """At a step boundary of a loop that keeps no checkpoint (a library call, a benchmark cell): stop there when a
    signal asked, instead of running to the loop's end; there is nothing to save."""
    if _STOP["requested"]:
        raise Interrupted()


@contextlib.contextmanager
def loop_running():
    """Marks a loop that checks ``stop_requested()`` at its step boundaries: a signal then waits for it. A stop
    requested while no step boundary came (a one-shot method) stops the run when the loop ends."""
    _STOP["loops"] += 1
    try:
        yield
    finally:
        _STOP["loops"] -= 1
        if _STOP["requested"] and not _STOP["loops"]:
            _STOP["requested"] = False
            raise Interrupted()


def signals_stop_loops() -> None:
    """SIGTERM and SIGINT ask a running loop to checkpoint and stop; outside a loop (or on a second signal) they
    interrupt at once. Called by the CLI, not the library: signal handlers belong to the application."""
    def handler(signum, frame):
        _STOP["signal"] = signum
        if _STOP["loops"] and not _STOP["requested"]:
            _STOP["requested"] = True
            return
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


# --------------------------------------------------------------------------------------------------------------
# The checkpoint file


class Checkpoints:
    """One checkpoint file for one loop, saved every ``every`` units of progress (0: only when stopping)."""

    def __init__(self, path: Path, every: int = 1, logs: list[Path] = (), flush: Callable[[], None] | None = None):
        require(isinstance(every, int) and every >= 0, f"--checkpoint-every must be >= 0, got {every}")
        self.path, self.every, self.logs, self.flush = Path(path), every, list(logs), flush

    def sibling(self, name: str) -> "Checkpoints":
        """The checkpoint of a later loop of the same run (same interval and logs), in its own file."""
        return Checkpoints(self.path.with_name(f"{self.path.stem}-{name}{self.path.suffix}"), self.every, self.logs,
                           self.flush)

    def due(self, done: int) -> bool:
        """True when ``done`` units (epochs, iterations, runs) complete a checkpoint interval."""
        return bool(self.every) and done % self.every == 0

    def save(self, tree: dict) -> None:
        if self.flush:
            self.flush()
        logs = {p.name: p.stat().st_size if p.exists() else 0 for p in self.logs}
        tensors, skeleton = pack(tree)
        save_tensors(self.path, tensors, {"format": CHECKPOINT_FORMAT, "tree": skeleton, "logs": logs},
                     durable=True)

    def load(self) -> dict | None:
        """The saved tree, with the run's logs cut back to what they held at that moment; None if none."""
        if not self.path.exists():
            return None
        tensors, meta = load_tensors(self.path, CHECKPOINT_FORMAT)
        logs = meta.get("logs") or {}
        require(isinstance(logs, dict), f"{self.path} is corrupt; start the run again with --overwrite")
        for p in self.logs:
            size = logs.get(p.name, 0)
            require(isinstance(size, int) and size >= 0, f"{self.path} is corrupt; start again with --overwrite")
            if p.exists() and p.stat().st_size > size:
                with open(p, "r+b") as f:
                    f.truncate(size)
        return unpack(tensors, meta.get("tree"))

    def save_and_stop_if_requested(self, tree_of: Callable[[], dict]) -> None:
        if stop_requested():
            self.save(tree_of())
            raise Interrupted()

    def after(self, done: int, tree_of: Callable[[], dict]) -> None:
        """Call after each unit of progress: saves when an interval completes, or saves and stops on request."""
        stop = stop_requested()  # read once: a signal between two reads would stop the loop unsaved
        if self.due(done) or stop:
            self.save(tree_of())
        if stop:
            raise Interrupted()
