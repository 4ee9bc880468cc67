"""The skeleton every command's run shares: its clock, its reporter, the call that makes it again, its output
folder, its metrics and its last line.

    @run_function("train")
    def train(data, model, *, out=None, ..., quiet=False, **options) -> Result:
        job = Run("train", locals())            # the clock starts; the call is read off the function's signature
        ... check the inputs: a bad one fails here, before any output ...
        with job.output(config) as run:         # the folder, written all-or-nothing (outputs.RunOutput)
            ... the work, logging through run.log ...
            job.finish(metrics)                 # metrics.json
        return job.result("test accuracy 0.97", model)   # "...; wrote OUT" and the Result

A run function is registered by name with ``run_function``: its signature says what its recorded call holds, and
``resume`` finds a resumable one by the name its call.json records.
"""

from __future__ import annotations

import inspect
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from torch import nn

from .. import distributed
from ..files import final_path
from ..outputs import RunOutput, peak_rss_mb
from ..reporting import Reporter, keep_warnings


@dataclass
class Result:
    """What a run gives back: its figures (metrics.json's), its folder, the model it trained, the synthetic set it
    made (condense) and its history: metrics.jsonl's records, one per epoch (or iteration, stage, seed)."""

    metrics: dict
    out: Path | None = None
    model: nn.Module | None = None
    synset: object | None = None  # a SyntheticSet
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class RunFunction:
    command: str  # the CLI command that makes such a run
    function: Callable
    resumable: bool
    folder: str  # what its output folder records as its command (default folder runs/FOLDER-...)


RUN_FUNCTIONS: dict[str, RunFunction] = {}


def run_function(command: str, *, resumable: bool = True, folder: str | None = None):
    """Register an API function that makes a run of the CLI command ``command``; ``resumable``: ``resume`` may
    call it again; ``folder``: the command its output folder records, where it is not ``command``."""
    def register(function):
        RUN_FUNCTIONS[function.__name__] = RunFunction(command, function, resumable, folder or command)
        return function
    return register


# Where a run is written and how it reports: not part of the call (a resumed run may change them); every other
# argument is, so that no option that changes a result can be left out of the record.
RUN_PLUMBING = frozenset({"out", "overwrite", "resume", "quiet", "log", "checkpoint_every"})


def plain_call(function: str, **kwargs) -> dict | None:
    """The call that makes a run, as ``resume`` makes it again; None when an argument is not plain data (a Python
    teacher object): such a run resumes only by calling the function again with ``resume=True``."""
    kwargs = {k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()}
    kwargs = {k: [str(x) if isinstance(x, Path) else x for x in v] if isinstance(v, (list, tuple)) else v
              for k, v in kwargs.items()}
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError):
        return None
    return {"function": function, "kwargs": kwargs}


def call_of(function: str, arguments: dict, omit: tuple[str, ...] = (), **recorded) -> dict | None:
    """The call that makes a run, read off the signature of the run function ``function``: each of its arguments
    (``arguments``: the function's ``locals()``; ``**options`` spread out) but ``RUN_PLUMBING``, ``omit``
    (arguments folded into another one) and those left at None; ``recorded`` gives an argument's recorded form (a
    spec string for an object)."""
    kwargs = {}
    for name, param in inspect.signature(RUN_FUNCTIONS[function].function).parameters.items():
        if name in RUN_PLUMBING or name in omit:
            continue
        if param.kind is param.VAR_KEYWORD:
            kwargs.update({k: v for k, v in arguments[name].items() if k not in RUN_PLUMBING})
        else:
            kwargs[name] = arguments[name]
    kwargs.update(recorded)
    return plain_call(function, **{k: v for k, v in kwargs.items() if v is not None})


def finished(folder: Path) -> Result | None:
    """A nested run (a chain stage, a seed) that finished before the run was stopped."""
    path = Path(folder) / "metrics.json"
    return Result(json.loads(path.read_text()), Path(folder)) if path.exists() else None


class Run:
    """One run of the registered run function ``function`` called with ``arguments`` (its ``locals()``):
    ``omit`` and ``recorded`` shape its recorded call (``call_of``); ``record=False`` records none; ``command``:
    the folder's command where the function makes runs of several (``repeat_over_seeds``)."""

    def __init__(self, function: str, arguments: dict, *, omit: tuple[str, ...] = (), record: bool = True,
                 command: str | None = None, **recorded):
        self.started = time.time()
        self.function, self.arguments = function, dict(arguments)  # a copy: locals() is the frame's own dict
        self.command = command or RUN_FUNCTIONS[function].folder
        self.reporter = Reporter(arguments.get("quiet", (arguments.get("kwargs") or {}).get("quiet", False)))
        self.call = call_of(function, arguments, omit, **recorded) if record else None
        self.run: RunOutput | None = None
        self.metrics: dict | None = None
        self.warnings: list[str] = []  # every warning shown while the run runs, for its metrics.json
        keep_warnings(self)
        if distributed.world() > 1:
            self.reporter.info(f"{distributed.world()} processes (torchrun): results {distributed.AGREEMENT}")

    def kept_warning(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def record(self, arguments: dict, omit: tuple[str, ...] = (), **recorded) -> None:
        """Record the call from ``arguments`` as they stand now: for a run whose recorded form of an argument needs
        checks on its inputs first (``Run(..., record=False)`` at the start)."""
        self.arguments = dict(arguments)
        self.call = call_of(self.function, self.arguments, omit, **recorded)

    def seconds(self) -> float:
        return round(time.time() - self.started, 2)

    def timing(self) -> dict:
        """The figures every run reports last: its wall-clock seconds and the process's peak memory."""
        return {"wall_seconds": self.seconds(), "peak_rss_mb": peak_rss_mb()}

    @contextmanager
    def output(self, config: dict | None, *, out=None):
        """The run's folder (``out``, default the ``out`` argument) as ``with job.output(config) as run:``, with
        ``config`` written first (config.yaml)."""
        given = self.arguments
        self.run = RunOutput(out if out is not None else given.get("out"), self.command, given.get("overwrite", False),
                             given.get("resume", False), self.call, given.get("log", ("jsonl",)))
        with self.run as run:
            if config is not None:
                run.write_config(config)
            yield run

    def finish(self, metrics: dict) -> dict:
        """Write metrics.json (inside the ``with``: the folder is renamed into place after it), with every warning
        the run gave (``warnings``)."""
        if self.warnings:
            metrics = {**metrics, "warnings": list(self.warnings)}
        self.metrics = metrics
        self.run.write_metrics(metrics)
        return metrics

    def result(self, line: str | None = None, model: nn.Module | None = None, synset=None) -> Result:
        """After the ``with``: report ``line`` with where the run was written, and return the Result."""
        if line is not None:
            self.reporter.info(f"{line}; wrote {final_path(self.run.final)}")
        log = self.run.final / "metrics.jsonl"
        history = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
        return Result(self.metrics, self.run.final, model, synset, history)
