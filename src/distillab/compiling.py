"""``--compile off | on | auto``: torch.compile (inductor) for a run's hot step.

Eager PyTorch runs group norm, ReLU and pooling as separate passes over memory; inductor fuses them. Measured on a
2-core Zen 4 at one thread (docs/benchmarks.md, perf): a DM iteration of ConvNet-3 width 128 and an evaluation epoch
ran faster compiled, and a compile took 20-60 s. Gradient matching differentiates a gradient (double backward),
which inductor's autograd does not support; it stays eager.

``auto`` times the step eagerly and compiled, the compile itself counted, and compiles only where the step is at
least 10% faster and the run's remaining steps repay the compile time; a run too short to repay any compile is not
probed at all. The choice is recorded (like ``--precision auto``) and kept in checkpoints, so a resumed run goes on
as it began. Results of a compiled step equal the eager ones within float tolerance, not bit for bit.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

from . import distributed
from .errors import DistillabError, require

MODES = ("off", "on", "auto")
FASTER = 0.9                  # a compiled step must take at most this share of the eager one
SHORTEST_WORTH_PROBING = 30.0  # seconds of eager work: below this even a quick compile cannot pay for itself
PROBE_STEPS = 3


def check_mode(mode: str, flag: str = "--compile") -> None:
    require(mode in MODES, f"{flag} must be one of {', '.join(MODES)}, got {mode!r}")


@dataclass
class CompileChoice:
    """What a run decided: ``compiled`` or not, and why (``reason``); ``probe`` holds auto's timings."""
    mode: str = "off"
    compiled: bool = False
    reason: str = "off"
    probe: dict | None = None

    def record(self) -> dict:
        return {"mode": self.mode, "compiled": self.compiled, "reason": self.reason,
                **({"probe": self.probe} if self.probe else {})}

    @classmethod
    def from_record(cls, record) -> "CompileChoice":
        """A choice read back from a checkpoint (which may be forged): only its known fields, checked."""
        probe = record.get("probe", {}) if isinstance(record, dict) else None
        ok = isinstance(record, dict) and record.get("mode") in MODES and isinstance(record.get("compiled"), bool) \
            and isinstance(record.get("reason"), str) and not (record["mode"] == "off" and record["compiled"]) \
            and isinstance(probe, dict) and len(probe) <= 8 and all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in probe.items())
        require(ok, "the checkpoint's compile choice is malformed; start the run again with --overwrite")
        return cls(record["mode"], record["compiled"], record["reason"][:200], dict(probe) or None)


def _compile_errors() -> tuple[type, ...]:
    """What torch.compile raises when it cannot compile (a missing C++ compiler, an op inductor cannot lower):
    caught on every call, since a new shape or a no-grad pass compiles anew mid-run. Other errors pass through."""
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import InductorError

    return TorchDynamoException, InductorError


class Compiled:
    """``fn`` compiled by inductor (static shapes); a failure to compile ends in one line, not a traceback from
    deep inside torch."""

    def __init__(self, fn: Callable):
        import torch

        self.fn = fn
        self._compiled = torch.compile(fn, dynamic=False)
        self._errors = _compile_errors()

    def __call__(self, *args, **kwargs):
        try:
            return self._compiled(*args, **kwargs)
        except self._errors as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise DistillabError(f"torch.compile failed ({type(e).__name__}: {first}); run with --compile off (a "
                                 "resumed run keeps the choice it began with: start it again with --overwrite)") \
                from None


def _sync() -> None:
    """Wait for queued GPU work, so a timer reads the work and not its launch."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _median_seconds(step: Callable[[], object], repeats: int, timer) -> float:
    times = []
    for _ in range(repeats):
        _sync()
        t0 = timer()
        step()
        _sync()
        times.append(timer() - t0)
    return statistics.median(times)


def choose(mode: str, eager_step: Callable[[], object], compiled_step: Callable[[], object], *, steps: int,
           timer=time.perf_counter, probe_steps: int = PROBE_STEPS) -> CompileChoice:
    """off and on decide at once; auto times ``eager_step`` (one warm-up, then the median of ``probe_steps``),
    then ``compiled_step`` (its first call compiles, counted apart), and compiles where the compiled step is at
    least 10% faster and the saving over the run's ``steps`` exceeds the compile time. The probe steps must leave
    the run untouched (copies, no optimiser steps on the run's own parameters)."""
    check_mode(mode)
    if mode == "off":
        return CompileChoice("off", False, "off")
    if mode == "on":
        return CompileChoice("on", True, "on")
    if distributed.world() > 1:  # each process would time its own probe and could choose otherwise
        return CompileChoice("auto", False, "under torchrun every process must run alike: give --compile on or off")
    eager_step()
    eager = _median_seconds(eager_step, probe_steps, timer)
    if eager * steps < SHORTEST_WORTH_PROBING:
        return CompileChoice("auto", False, f"the run's eager work (~{eager * steps:.0f} s) cannot repay a compile",
                             {"eager_step_seconds": round(eager, 5), "steps": steps})
    _sync()
    t0 = timer()
    try:
        compiled_step()
    except DistillabError as e:
        return CompileChoice("auto", False, str(e)[:200], {"eager_step_seconds": round(eager, 5), "steps": steps})
    _sync()
    first_call = timer() - t0
    fast = _median_seconds(compiled_step, probe_steps, timer)
    compile_seconds = max(first_call - fast, 0.0)  # the first call compiled, then ran a step
    saving = (eager - fast) * steps
    probe = {"eager_step_seconds": round(eager, 5), "compiled_step_seconds": round(fast, 5),
             "compile_seconds": round(compile_seconds, 2), "steps": steps}
    if fast > FASTER * eager:
        return CompileChoice("auto", False, f"a compiled step took {fast / eager:.2f}x the eager one", probe)
    if saving <= compile_seconds:
        return CompileChoice("auto", False, f"the compile ({compile_seconds:.0f} s) would not be repaid "
                                            f"({saving:.0f} s saved)", probe)
    return CompileChoice("auto", True, f"a compiled step took {fast / eager:.2f}x the eager one", probe)
