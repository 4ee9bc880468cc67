"""What a condensation would cost, from a short run that writes nothing (``distillab condense --dry-run``)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .labels import Labels
from .method import Method, condense


def estimate_cost(train, method: Method, labels: Labels, ipc: int, *, data: str, seed: int = 0, probe: int = 5,
                  trust_code: bool = False) -> dict:
    """Time ``probe`` + 1 iterations of the method (and of the label mode) on ``train`` (of the dataset ``data``): the first, which carries
    the set-up, is counted once and the median of the others stands for every remaining iteration. A method without
    iterations is timed whole. Peak memory is the short run's (the loops' memory does not grow with their
    iteration count)."""
    phases = [(method, method.iterations_total), (labels, labels.iterations_total)]
    short = [dataclasses.replace(p, iterations=min(n, probe + 1))
             if n and "iterations" in {f.name for f in dataclasses.fields(p)} else p for p, n in phases]
    stamps: list[float] = []
    t0 = time.perf_counter()
    synset = condense(train, short[0], ipc, seed=seed, labels=short[1],
                      progress=lambda it, loss: stamps.append(time.perf_counter()), trust_code=trust_code)
    total = time.perf_counter() - t0
    estimate, start, previous = 0.0, 0, t0
    for (_, n), cut in zip(phases, short):
        done = cut.iterations_total
        mine = stamps[start:start + done]
        if done:
            gaps = np.diff([previous, *mine])
            per = float(np.median(gaps[1:])) if len(gaps) > 1 else float(gaps[0])
            estimate += float(gaps[0]) + per * (n - 1)
            previous = mine[-1]
        start += done
    estimate += (t0 + total) - previous  # one-shot work and what follows the last iteration
    budget = synset.meta["budget"]
    return {"method": str(method), "labels": str(labels), "ipc": ipc, "data": data,
            "iterations": sum(n for _, n in phases), "probe_iterations": len(stamps),
            "probe_seconds": round(total, 2), "estimated_condense_seconds": round(estimate, 1),
            "estimated_peak_rss_mb": budget["peak_rss_mb"], "estimated_peak_device_mb": budget["peak_device_mb"],
            "synset_bytes": budget["total_bytes"], "real_images_read_per_probe": budget["real_images_read"]}
