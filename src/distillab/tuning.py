"""A small, honest hyper-parameter search (``distillab tune``): a plain grid, every trial scored on the validation
split with the test split sealed (``data.sealed_test_split``: a trial cannot read it, so none is chosen by it); the
best recipe is then run again with several seeds, and only those runs are measured on the test set.

Why a plain grid and not Optuna's TPE with median pruning: the searches this project runs are a few values of two
or three options on a 2-core CPU (tens of trials); a grid covers them in a known order, its table is the whole
record, and it needs no dependency. TPE pays off at hundreds of trials over wide spaces, which this budget never
reaches.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path
from typing import Callable

from .data import sealed_test_split
from .errors import DistillabError, require
from .evaluation import summarise
from .files import to_jsonable
from .reporting import SILENT, Reporter

SCORE = "val_accuracy"
# tune condense: models per spec that score a trial's set (enough to rank recipes; the final runs use the protocol's)
CONDENSE_TRIAL_RUNS = 2


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, the first key varying slowest."""
    require(grid, "a search needs at least one --grid KEY=V1,V2")
    for key, values in grid.items():
        require(isinstance(values, (list, tuple)) and len(values) >= 1, f"--grid {key} has no values")
        require(len(set(map(repr, values))) == len(values), f"--grid {key} repeats a value: {values}")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def search(run: Callable, base: dict, grid: dict[str, list], out: Path, *, seeds=(0, 1, 2),
           budget_minutes: float | None = None, reporter: Reporter = SILENT) -> dict:
    """Run ``run(out=..., **base, **point)`` for each grid point with the test split sealed, rank the trials by
    validation accuracy (ties: the earlier trial), then run the best point once per seed, unsealed, and measure it.
    Writes OUT/trials.jsonl and OUT/trials.md (every trial and its validation score), OUT/trial-NNN/ and
    OUT/final-seed-S/ (the runs). Trials stop starting once ``budget_minutes`` are spent; the rest are listed as
    skipped."""
    points = grid_points(grid)
    clash = sorted(set(grid) & (set(base) | {"out", "seed"}))
    require(not clash, f"--grid {', '.join(clash)} is also given as a fixed option; give it in one place")
    require(seeds and len(set(seeds)) == len(seeds), f"the final seeds must be distinct, got {list(seeds)}")
    require(budget_minutes is None or budget_minutes > 0, f"--budget must be > 0 minutes, got {budget_minutes}")
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    trials = []
    log = (out / "trials.jsonl").open("w")
    try:
        for i, point in enumerate(points):
            spent = (time.time() - started) / 60
            if budget_minutes is not None and trials and spent >= budget_minutes:  # the first always runs
                trials.append({"trial": i, **{"params": point}, "status": "skipped (budget)"})
                continue
            reporter.info(f"tune: trial {i + 1}/{len(points)} {point}")
            t0 = time.time()
            try:
                with sealed_test_split():
                    metrics = run(out=out / f"trial-{i:03d}", **base, **point).metrics
            except DistillabError as e:  # a point that fails (a rate that diverges) is a result, not the search's end
                trial = {"trial": i, "params": point, "status": f"failed: {e}", "seconds": round(time.time() - t0, 1)}
                trials.append(trial)
                log.write(json.dumps(to_jsonable(trial)) + "\n")
                log.flush()
                reporter.info(f"tune: trial {i + 1} failed: {e}")
                continue
            require(metrics.get("test_accuracy") is None, "a trial measured the test split; it must not")
            trial = {"trial": i, "params": point, "status": "done", SCORE: metrics[SCORE],
                     "seconds": round(time.time() - t0, 1)}
            trials.append(trial)
            log.write(json.dumps(to_jsonable(trial)) + "\n")
            log.flush()
    finally:
        log.close()
    done = [t for t in trials if t["status"] == "done"]
    require(done, f"every trial failed (first: {trials[0]['status'][8:] if trials else 'none'}); widen the grid")
    best = max(done, key=lambda t: (t[SCORE], -t["trial"]))
    reporter.info(f"tune: best {best['params']} (validation accuracy {best[SCORE]:.4f}); final runs with seeds "
                  f"{', '.join(map(str, seeds))}")
    finals = [run(out=out / f"final-seed-{s}", **base, **best["params"], seed=s).metrics for s in seeds]
    # a final condense run measures the test split only (its models are not scored on validation again)
    final = {key: summarise([m[key] for m in finals]) for key in ("test_accuracy", "test_errors", SCORE)
             if all(m.get(key) is not None for m in finals)}
    (out / "trials.md").write_text(trials_markdown(trials, best) + "\n")
    return {"search": "grid", "grid": grid, "trials": trials, "trials_run": len(done),
            "trials_skipped": len(trials) - len(done), "best": best["params"], "best_trial": best["trial"],
            "best_val_accuracy": best[SCORE], "final_seeds": list(seeds), "final": final,
            "search_minutes": round((time.time() - started) / 60, 2)}


def trials_markdown(trials: list[dict], best: dict) -> str:
    keys = list(trials[0]["params"])
    lines = ["| trial | " + " | ".join(keys) + " | validation accuracy | seconds |",
             "|---|" + "---|" * len(keys) + "---:|---:|"]
    for t in trials:
        mark = " (best)" if t["trial"] == best["trial"] else ""
        score = f"{100 * t[SCORE]:.2f}%{mark}" if t["status"] == "done" else t["status"]
        lines.append(f"| {t['trial']} | " + " | ".join(str(t['params'][k]) for k in keys) + f" | {score} | "
                     f"{t.get('seconds', '')} |")
    return "\n".join(lines)


def parse_grid_value(text: str) -> object:
    """A grid value typed on the command line without a parser of its own: int, float, else the text."""
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        if kind is float and not math.isfinite(value):
            break
        return value
    return text
