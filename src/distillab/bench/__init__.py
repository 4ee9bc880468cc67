"""Benchmarks: the papers' tables as runnable code (``distillab bench NAME [--quick]``).

Each benchmark writes OUT/NAME.json (figures) and OUT/NAME.md (a Markdown table), and records the command,
the machine and the wall time. ``--quick`` runs the same code path on digits in seconds (the test suite runs it);
the full version is the one whose results go in docs/benchmarks.md. Teachers are trained once per OUT folder and
reused by later benchmarks (OUT/teachers/). A new benchmark is a function registered with ``@benchmark(NAME)`` in
the module of its family: ``kd.py`` (model distillation), ``kd_menu.py`` (every KD loss term), ``dd.py`` (dataset
distillation), ``crossarch.py`` (sets across architectures), ``mtt.py`` (trajectory matching), ``reproduce.py``
(the reference implementations' recipes and protocols), ``datafree.py`` (teaching without the data), ``omni.py``
(pseudo-labelling), ``audits.py`` (poisoning, privacy), ``service.py`` (a teacher behind HTTP) or ``perf.py`` (speed
against the hardware's peak).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..errors import require
from ..files import to_jsonable
from ..outputs import environment, peak_rss_mb
from ..reporting import Reporter
from . import audits, crossarch, datafree, dd, kd, kd_menu, mtt, omni, perf, reproduce, service  # noqa: F401  (register their benchmarks)
from .common import BENCHMARKS, Bench

__all__ = ["BENCHMARKS", "Bench", "run_benchmark"]


def run_benchmark(name: str, quick: bool = False, out=None, quiet: bool = False, workers: int = 1,
                  cells: tuple = (), protocol: str | None = None) -> dict:
    """Run one benchmark; writes OUT/NAME.json (figures, command, machine, wall time) and OUT/NAME.md.
    ``cells``: patterns of the cells to run this time (benchmarks made of cells that report partial tables).
    ``protocol``: an evaluation protocol (``vico-dsa``, ...) to measure the benchmark's sets by instead of its own
    (dd-mnist, cross-arch, dm-budget); its cells are kept apart from those of the benchmark's own protocol."""
    require(name in BENCHMARKS, f"unknown benchmark '{name}'; choose from {', '.join(BENCHMARKS)}")
    require(workers >= 1, f"--workers must be at least 1, got {workers}")
    takes = [n for n, fn in BENCHMARKS.items() if getattr(fn, "takes_protocol", False)]
    require(protocol is None or name in takes, f"bench {name} has no evaluation protocol to replace; --protocol "
                                               f"applies to {', '.join(takes)}")
    reporter = Reporter(quiet)
    out = Path(out) if out else Path("runs") / "bench"
    out.mkdir(parents=True, exist_ok=True)
    b = Bench(out, quick, workers, reporter, only=tuple(cells), protocol=protocol)
    started = time.time()
    reporter.info(f"bench {name}{' --quick' if quick else ''} -> {out}")
    result = BENCHMARKS[name](b)
    markdown = result.pop("markdown")
    result = {"benchmark": name, "quick": quick, **({"protocol": b.protocol} if protocol else {}), **result, "wall_seconds": round(time.time() - started, 1),
              "peak_rss_mb": peak_rss_mb(), "machine": environment(),
              "command": "distillab bench " + name + (" --quick" if quick else "")
              + (f" --workers {workers}" if workers > 1 else "")
              + (" --cells " + " ".join(f"'{c}'" for c in cells) if cells else "")
              + (f" --protocol '{protocol}'" if protocol else "") + f" --out {out}"}
    (out / f"{name}.json").write_text(json.dumps(to_jsonable(result), indent=2) + "\n")
    (out / f"{name}.md").write_text(f"## {name}{' (quick)' if quick else ''}\n\n{markdown}\n\n"
                                            f"Command: `{result['command']}`; {result['wall_seconds']:.0f} s on "
                                            f"{result['machine']['cpus']} CPUs, torch {torch.__version__}.\n")
    reporter.info(markdown)
    return result
