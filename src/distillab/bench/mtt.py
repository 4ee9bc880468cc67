"""Trajectory-matching benchmarks: mtt-memory (peak memory and time per iteration against the unrolled steps)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from .. import data as data_mod
from ..api import experts as train_experts
from ..condense import condense
from ..condense.methods.mtt import MTT
from ..memory import PeakMemory, rss_now_mb
from ..specs import option_values
from .common import Bench, benchmark, table

STEPS = (10, 20, 40)
UNROLLS = ("checkpointed", "full")


def mtt_memory_settings(quick: bool) -> dict:
    """What mtt-memory runs: the data, the experts, and the method's options apart from syn_steps and unroll.
    Quick: digits, a 16-wide ConvNet-2 (big enough that a step's graph, ~6 MB, stands out of the noise of the
    process's resident memory). Full: MNIST, ConvNet-3 at IPC 10, every synthetic image in every step (the
    reference's batch_syn), experts of 2 epochs (the matching reads epochs 0..2)."""
    if quick:
        return {"data": "digits", "ipc": 5, "iterations": 2,
                "experts": dict(model="convnet:width=16,depth=2", experts=1, epochs=2, batch_size=64),
                "method": dict(model="convnet:width=16,depth=2", expert_epochs=1, max_start=2, lr_img=100.0)}
    return {"data": "mnist", "ipc": 10, "iterations": 3,
            "experts": dict(model="convnet:width=128,depth=3", experts=1, epochs=2),
            "method": dict(model="convnet:width=128,depth=3", expert_epochs=1, max_start=2)}


def measure(train, folder: Path, settings: dict, steps: int, unroll: str) -> dict:
    """Seconds per iteration (the median of those after the first, which pays one-off allocations) and the peak
    resident memory of one condensation, in all and above the memory the process held when it started."""
    cfg = MTT(experts=str(folder), syn_steps=steps, unroll=unroll, iterations=settings["iterations"],
              **settings["method"])
    with PeakMemory(train.device) as peak:  # hands freed heap pages back first: "before" is what is in use
        before = rss_now_mb()
        stamps = [time.perf_counter()]
        condense(train, cfg, settings["ipc"], seed=0, progress=lambda it, loss: stamps.append(time.perf_counter()))
    per_iteration = [b - a for a, b in zip(stamps, stamps[1:])]
    timed = per_iteration[1:] or per_iteration
    return {"seconds_per_iteration": round(statistics.median(timed), 4), "peak_rss_mb": peak.rss_mb,
            "peak_above_start_mb": round(peak.rss_mb - before, 1) if before is not None else None,
            "peak_measured": peak.describe()["peak_measured"]}


@benchmark("mtt-memory")
def bench_mtt_memory(b: Bench) -> dict:
    """Peak memory and seconds per iteration of trajectory matching at syn_steps 10, 20 and 40, for the checkpointed
    unroll (the default) and the full one (every step's graph kept, as the reference does)."""
    settings = mtt_memory_settings(b.quick)
    folder = b.run_dir("mtt-memory", "experts")
    parameters = train_experts(settings["data"], out=folder, quiet=True, **settings["experts"]).metrics["parameters"]
    train = data_mod.split(data_mod.load(settings["data"])).train_set()
    rows, figures = [], {}
    measure(train, folder, {**settings, "iterations": 1}, 1, UNROLLS[0])  # one-off allocations, not measured
    # smallest first: memory freed by one setting stays in the process (distillab's allocator setting), and a later
    # setting that needs no more than that would be credited with it
    for unroll in UNROLLS:
        figures[unroll] = {}
        for steps in STEPS:
            b.reporter.info(f"mtt-memory: {unroll} unroll, syn_steps {steps}")
            r = figures[unroll][str(steps)] = measure(train, folder, settings, steps, unroll)
            rows.append([unroll, steps, f"{r['seconds_per_iteration']:.3f}", r["peak_rss_mb"],
                         r["peak_above_start_mb"]])
    slopes = {}
    for unroll in UNROLLS:
        low, high = figures[unroll][str(STEPS[0])], figures[unroll][str(STEPS[-1])]
        if low["peak_above_start_mb"] is not None and high["peak_above_start_mb"] is not None:
            slopes[unroll] = round((high["peak_above_start_mb"] - low["peak_above_start_mb"]) / (STEPS[-1] - STEPS[0]), 3)
    markdown = table(["unroll", "syn_steps", "s / iteration", "peak RSS (MB)", "peak above start (MB)"], rows)
    if slopes:
        markdown += ("\n\nMemory per added step (MB, from 10 to 40 steps): " + ", ".join(
            f"{u} {s}" for u, s in slopes.items()) + f"; one parameter vector is {parameters * 4 / 2**20:.3f} MB.")
    return {"settings": {**settings, "method": option_values(MTT(**settings["method"]))}, "steps": list(STEPS),
            **figures, "mb_per_step": slopes, "parameters": parameters,
            "parameter_vector_mb": round(parameters * 4 / 2**20, 3), "markdown": markdown}
