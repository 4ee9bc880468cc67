"""``reproduce-mnist``: every dataset-distillation method at its reference recipe, evaluated by its reference
protocol, beside the published figure measured on that basis -- and beside distillab's own protocol on the same set.

Cells (``--cells`` picks some; every cell resumes):

- ``random-1-S``: a random real subset (seed S, IPC 1), by ``vico-dc`` (the DC paper's coreset protocol);
- ``herding-1-pixels``, ``herding-1-features``: herding in pixel space, and in the feature space of a ConvNet-3
  trained on the whole training split (the DC paper's), by ``vico-dc``;
- ``METHOD-IPC-condense``: the method at its reference recipe, checkpointed as it goes (a killed run resumes), its
  images kept after each of the budget points (``REPRODUCE_POINTS``): the budget curve comes from one run;
- ``METHOD-IPC-eval-N``: the set after N iterations by the method's reference protocol (and a few models of
  distillab's protocol beside);
- ``METHOD-IPC-probe``: a few iterations of a recipe too long for this CPU, timed: the seconds per iteration and
  what the reference's budget would cost here;
- ``dsa-residual-V``: one set by the DSA protocols' variants, to trace distillab's DSA evaluation against the
  reference's (whole-pixel crops, draws per image).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .. import seeds
from ..checkpoint import Checkpoints, loop_running
from ..condense import METHODS, SyntheticSet, condense, dataset_hash
from ..condense.method import Progress, RunClock
from ..evaluation import evaluate_set
from ..files import to_jsonable
from ..protocols import parse_protocol
from ..specs import option_values
from .common import Bench, benchmark, cells_total_seconds, table
from .dd import dd_splits

# Each method's reference recipe and protocol, the published MNIST figure measured on that basis (docs/reference.md
# §2) and the Done-when threshold of issue 28 at IPC 1 (published mean minus one published std).
REFERENCE_CELLS = {
    "gm": {"recipe": "vico", "protocol": "vico-dc", "published": {1: (91.7, 0.5), 10: (97.4, 0.2), 50: (98.8, 0.1)},
           "paper": "DC (Zhao et al. 2021), Table 1"},
    "dsa": {"recipe": "vico", "protocol": "vico-dsa", "published": {1: (88.7, 0.6), 10: (97.8, 0.1), 50: (99.2, 0.1)},
            "paper": "DSA (Zhao & Bilen 2021), Table 2"},
    "dm": {"recipe": "vico", "protocol": "vico-dm", "published": {1: (89.7, 0.6), 10: (97.5, 0.1), 50: (98.6, 0.1)},
           "paper": "DM (Zhao & Bilen 2023), as quoted by later papers (secondary)"},
    "mtt": {"recipe": "mtt", "protocol": "mtt", "published": {}, "paper": "MTT (Cazenavette et al. 2022): no MNIST row"},
    "bptt": {"recipe": "wang2018-fixed", "protocol": "wang2018", "published": {1: (93.8, 0.0)},
             "paper": "Wang et al. 2018, fixed known initialisation (10 images)"},
}
CORESETS = {"random": {"published": (64.9, 3.5), "paper": "DC (Zhao et al. 2021), Table 1 (random real subset)"},
            "herding": {"published": (89.2, 1.6), "paper": "DC (Zhao et al. 2021), Table 1 (herding)"}}
THRESHOLDS = {"gm": 91.2, "dsa": 88.1, "dm": 89.1, "herding-features": 87.6}
REFERENCE_ITERATIONS = {"gm": 1000, "dsa": 1000, "dm": 20000, "mtt": 5000, "bptt": 23600}

# Budget points per (method, IPC): the condense cell keeps the set after each; the last one is where it stops.
REPRODUCE_POINTS = {
    "quick": {("gm", 1): [1, 2], ("dsa", 1): [1, 2], ("dm", 1): [2, 4], ("dm", 2): [2, 4], ("bptt", 1): [3]},
    "full": {("gm", 1): [200, 500, 1000], ("dsa", 1): [200, 500, 1000], ("dm", 1): [500, 1000, 2000],
             ("dm", 10): [500, 1000, 2000, 5000], ("bptt", 1): [23600]},
}
# Options that make a quick cell seconds long on digits (the full cells run the recipes as they are).
QUICK_OPTIONS = {"gm": dict(batch_real=16, model="convnet:width=4,depth=2"),
                 "dsa": dict(batch_real=16, model="convnet:width=4,depth=2"),
                 "dm": dict(batch_real=16, model="convnet:width=4,depth=2"),
                 "bptt": dict(batch_real=64, model="convnet:width=4,depth=2", lr_decay_every=0),
                 "mtt": dict(model="convnet:width=4,depth=2", num_experts=1, expert_train_epochs=2, max_start=1,
                             expert_epochs=1, syn_steps=2),
                 "herding": dict(model="convnet:width=4,depth=2", epochs=1)}
# Recipes too long for this CPU: a few iterations timed (mtt trains one short expert first, timed apart).
PROBES = {"quick": {("gm", 2): 1, ("mtt", 1): 1},
          "full": {("gm", 10): 2, ("dsa", 10): 2, ("gm", 50): 0, ("dsa", 50): 0, ("dm", 50): 3, ("mtt", 1): 3,
                   ("bptt", 10): 20}}
PROBE_RECIPES = {("bptt", 10): "wang2018"}  # bptt's random-initialisation setting: 100 images, 10 steps x 3 epochs
MTT_PROBE = dict(num_experts=1, expert_train_epochs=3, max_start=1)  # one expert, its epoch cost measured
# Models per set: the reference protocols train 20 per set (and five sets per method); here one set per method.
RUNS = {"quick": {"final": 1, "point": 1, "distillab": 1, "random_subsets": 2},
        "full": {"final": 10, "point": 3, "distillab": 3, "random_subsets": 5}}
# distillab's own protocol beside each reference figure: DSA, 300 epochs
DISTILLAB_BESIDE = "distillab:dsa=1,epochs=300"
# The DSA residual: one set (dsa at IPC 1) by the variants that separate the reference's DSA evaluation from
# distillab's: whole-pixel vs fractional crops, per-image vs per-batch draws, the reference's schedule.
# Each variant changes one thing from the one before it: the reference's (A), its crop made fractional (B),
# distillab's schedule instead of the reference's (C), DSA drawn per batch instead of per image (D: distillab's
# protocol at 1000 epochs), 300 epochs (E: dd-mnist's protocol).
RESIDUAL_VARIANTS = {"A-reference": "vico-dsa", "B-fractional-crop": "vico-dsa:style=distillab",
                     "C-distillab-schedule": "distillab:dsa=1,epochs=1000,dsa_draw=image",
                     "D-per-batch-draws": "distillab:dsa=1,epochs=1000", "E-300-epochs": "distillab:dsa=1,epochs=300"}
# GPU compute is not measured here (no GPU lent); the estimate assumes this share of an A100's fp32 peak
GPU_ASSUMED_FLOPS = 0.3 * 19.5e12


def _kind(b: Bench) -> str:
    return "quick" if b.quick else "full"


def _method(b: Bench, name: str, ipc: int, iterations: int | None = None, recipe: str | None = None):
    cls = METHODS.get(name)
    recipe = recipe or (REFERENCE_CELLS[name]["recipe"] if name in REFERENCE_CELLS else None)
    options = dict(QUICK_OPTIONS.get(name, {})) if b.quick else {}
    if iterations is not None:
        options["iterations"] = iterations
    return cls.from_recipe(recipe, **options) if recipe else cls(**options)


def _protocol(b: Bench, spec: str, runs: int):
    """The protocol ``spec`` with ``runs`` models (quick: with its class's quick options, seconds on digits)."""
    import dataclasses

    proto = parse_protocol(spec)
    quick = {k: v for k, v in type(proto).quick.items() if k != "runs"} if b.quick else {}
    return dataclasses.replace(proto, **quick, runs=runs)


def _evaluate(b: Bench, splits, synset, spec: str, runs: int) -> dict:
    """The protocol ``spec`` on the set: mean, std, runs, the protocol as it ran, seconds."""
    t0 = time.time()
    results, ran = evaluate_set(synset, splits.test, _protocol(b, spec, runs), data=splits.spec, seed=0,
                                num_classes=splits.num_classes)
    (model, r), = results.items()
    return {"mean": r["mean"], "std": r["std"], "runs": r["runs"], "model": model, "protocol": ran.record(),
            "seconds": round(time.time() - t0, 1)}


def _set_path(b: Bench, name: str, ipc: int, n: int) -> Path:
    return b.work / "reproduce-mnist" / "sets" / f"{name}-{ipc}-{n}.safetensors"


def _made_of(method, ipc: int) -> str:
    """What a kept budget-point set records of the run that made it (its method's options and the IPC), as the
    text it is compared by."""
    return json.dumps(to_jsonable({**option_values(method), "ipc": ipc}), sort_keys=True)


def _point_ready(b: Bench, name: str, ipc: int, n: int) -> bool:
    """Whether the set after ``n`` iterations is kept and was made by today's recipe: a condense cell still
    running (in another process, or stopped at a session's end) has written it, so it can be evaluated before the
    cell ends. A set an earlier recipe left behind is not ready."""
    path = _set_path(b, name, ipc, n)
    if name == "bptt" or not path.exists():  # bptt's one set is written when its cell ends
        return False
    method = _method(b, name, ipc, iterations=max(REPRODUCE_POINTS[_kind(b)][(name, ipc)]))
    return _made_of(method, ipc) == json.dumps(SyntheticSet.load(path).meta.get("recipe"), sort_keys=True)


def _checkpoint_path(b: Bench, name: str, ipc: int) -> Path:
    """Where the condense cell of (name, ipc) keeps its loop while it runs."""
    points = REPRODUCE_POINTS[_kind(b)][(name, ipc)]
    return b.work / "checkpoints" / f"reproduce-{name}-{ipc}-{'-'.join(map(str, points))}.safetensors"


def _progress_of(b: Bench, cell: tuple) -> str:
    """' (N of M iterations, checkpointed)' for a condense cell stopped part-way; '' otherwise."""
    from ..checkpoint import Checkpoints

    if len(cell) < 3 or cell[2] != "condense" or not _checkpoint_path(b, cell[0], cell[1]).exists():
        return ""
    try:
        done = int(Checkpoints(_checkpoint_path(b, cell[0], cell[1])).load()["iteration"])
    except Exception:  # noqa: BLE001 -- a damaged checkpoint is reported when its cell runs; here only progress
        return " (checkpoint unreadable)"
    return f" ({done:,} of {max(REPRODUCE_POINTS[_kind(b)][cell[:2]]):,} iterations, checkpointed)"


def _seconds_path(b: Bench, name: str, ipc: int) -> Path:
    """The condense seconds counted up to each kept budget point of (name, ipc)."""
    return b.work / "reproduce-mnist" / "sets" / f"{name}-{ipc}-seconds.json"


class Snapshots(Progress):
    """Checkpoints the loop as ``condense`` would, and keeps the images after each budget point as a set file
    (a resumed run keeps the files an earlier part wrote), with the seconds counted up to it."""

    def __init__(self, b: Bench, train, name: str, ipc: int, points: list[int], method, checkpoints: Checkpoints):
        super().__init__(None, checkpoints, reads=train.reads, clock=RunClock())
        self.b, self.train, self.name, self.ipc, self.points, self.method = b, train, name, ipc, set(points), method
        self.times = _seconds_path(b, name, ipc)
        self.times.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, iteration: int, loss: float, live: dict | None = None) -> None:
        done = iteration + 1
        if done in self.points and not _set_path(self.b, self.name, self.ipc, done).exists():
            extra = {"lrs": live["syn_lr"].detach().reshape(1).clone()} if "syn_lr" in live else {}
            meta = {"method": self.name, "iterations": done, "recipe": json.loads(_made_of(self.method, self.ipc)),
                    "method_recipe": self.method.recipe_record(),
                    "source": {**self.train.source, "hash": dataset_hash(self.train)}}
            synset = SyntheticSet.class_major(self.train, live["images"].detach().cpu().clone(), self.ipc, meta=meta,
                                              **extra)
            synset.save(_set_path(self.b, self.name, self.ipc, done))
            times = json.loads(self.times.read_text()) if self.times.exists() else {}
            times[str(done)] = round(self.clock(), 1)
            self.times.write_text(json.dumps(times))
        super().__call__(iteration, loss, live)


def _condense_cell(out: Path, quick: bool, name: str, ipc: int) -> dict:
    b = Bench(out, quick)
    points = REPRODUCE_POINTS[_kind(b)][(name, ipc)]
    method = _method(b, name, ipc, iterations=max(points))
    splits = dd_splits(b)
    train = splits.train_set().counted()
    t0 = time.time()
    if name == "bptt":  # bptt sets carry their schedule and initialisation: made whole by condense()
        synset = b.condense(train, method, ipc, seed=0)
        synset.save(_set_path(b, name, ipc, max(points)))
        times = {str(max(points)): synset.meta["condense_seconds"]}
    else:
        path = _checkpoint_path(b, name, ipc)
        b.resumable(path, name, ipc)
        if not path.exists():  # a fresh start: sets an earlier run left (another recipe, another start) must go
            for n in points:
                _set_path(b, name, ipc, n).unlink(missing_ok=True)
            _seconds_path(b, name, ipc).unlink(missing_ok=True)
        progress = Snapshots(b, train, name, ipc, points, method,
                             Checkpoints(path, every=max(1, min(points) // 10)))
        method.check()
        method.check_data(train)
        with loop_running():  # a signal stops the loop at its next iteration, checkpointed
            method.run(train, ipc, seeds.generator(0), progress)
        path.unlink(missing_ok=True)
        times = json.loads(progress.times.read_text())
    return {"points": points, "condense_seconds": times, "recipe": method.recipe_record(),
            "options": option_values(method), "wall_seconds": round(time.time() - t0, 1),
            "seconds_per_iteration": round(times[str(max(points))] / max(points), 3)}


def _eval_cell(out: Path, quick: bool, name: str, ipc: int, stage: str, n: int) -> dict:
    b = Bench(out, quick)
    r = RUNS[_kind(b)]
    splits = dd_splits(b)
    synset = SyntheticSet.load(_set_path(b, name, ipc, n))
    final = n == max(REPRODUCE_POINTS[_kind(b)][(name, ipc)])
    t0 = time.time()
    times = _seconds_path(b, name, ipc)
    counted = json.loads(times.read_text()).get(str(n)) if times.exists() else None
    result = {"condense_seconds": counted} if counted is not None else {}  # the seconds counted to this point
    result["reference"] = _evaluate(b, splits, synset, REFERENCE_CELLS[name]["protocol"],
                                    r["final"] if final else r["point"])
    if name != "bptt":
        result["distillab"] = _evaluate(b, splits, synset, DISTILLAB_BESIDE, r["distillab"])
    result["wall_seconds"] = round(time.time() - t0, 1)
    return result


def _coreset_cell(out: Path, quick: bool, name: str, ipc: int, variant) -> dict:
    """random-IPC-SEED or herding-IPC-pixels/features: selected, then by vico-dc and distillab's protocol."""
    b = Bench(out, quick)
    r = RUNS[_kind(b)]
    splits = dd_splits(b)
    t0 = time.time()
    if name == "random":
        method, seed = METHODS.get("random")(), int(variant)
    else:
        method = _method(b, "herding", ipc, recipe="dc" if variant == "features" else None)
        if variant == "pixels":
            method = METHODS.get("herding")()
        seed = 0
    synset = condense(splits.train_set(), method, ipc, seed=seed)
    made = round(time.time() - t0, 1)
    return {"reference": _evaluate(b, splits, synset, "vico-dc", r["final"]),
            "distillab": _evaluate(b, splits, synset, DISTILLAB_BESIDE, r["distillab"]),
            "select_seconds": made, "method": str(method), "wall_seconds": round(time.time() - t0, 1)}


def _probe_cell(out: Path, quick: bool, name: str, ipc: int, stage: str) -> dict:
    """A few iterations of the reference recipe, timed: the first (set-up) apart, the median of the others."""
    b = Bench(out, quick)
    count = PROBES[_kind(b)][(name, ipc)]
    extra = MTT_PROBE if name == "mtt" else {}
    method = _method(b, name, ipc, iterations=count + 1, recipe=PROBE_RECIPES.get((name, ipc)))
    if extra:
        import dataclasses
        recipe = method.recipe
        method = dataclasses.replace(method, **extra)
        method.recipe = recipe
    splits = dd_splits(b)
    stamps: list[float] = []
    t0 = time.perf_counter()
    condense(splits.train_set(), method, ipc, seed=0, progress=lambda it, loss: stamps.append(time.perf_counter()))
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    # the median of the iterations after the first (set-up); with one iteration timed, that one (set-up included)
    per = sorted(gaps)[len(gaps) // 2] if gaps else stamps[0] - t0
    reference = REFERENCE_ITERATIONS[name]
    flops = _iteration_flops(name, ipc, method, splits)
    return {"iterations_timed": len(stamps), "first_seconds": round(stamps[0] - t0, 1),
            "seconds_per_iteration": round(per, 2), "reference_iterations": reference,
            "reference_budget_hours_here": round(per * reference / 3600, 1),
            "flop_per_iteration_estimate": flops,
            "reference_budget_hours_gpu_estimate": round(flops * reference / GPU_ASSUMED_FLOPS / 3600, 2),
            "recipe": method.recipe_record(), "options": option_values(method)}


def _iteration_flops(name: str, ipc: int, method, splits) -> float:
    """An estimate of one iteration's floating-point operations: the model's forward and training-step FLOPs per
    image (counted by torch's FlopCounterMode on one image) times the images each pass of the recipe touches.
    A double backward (matching through a gradient) is counted as two training steps."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..models import build_model

    net = build_model(method.model, splits.input_shape, splits.num_classes, seeds.generator(0))
    x = torch.zeros(1, *splits.input_shape)
    with FlopCounterMode(display=False) as fwd:
        with torch.no_grad():
            net(x)
    with FlopCounterMode(display=False) as step:
        torch.nn.functional.cross_entropy(net(x), torch.zeros(1, dtype=torch.long)).backward()
    f, t, k = fwd.get_total_flops(), step.get_total_flops(), splits.num_classes
    if name in ("gm", "dsa"):
        from ..condense.methods.gm import loops_for
        outer, inner = method.outer or loops_for(ipc)[0], method.inner or loops_for(ipc)[1]
        return float(outer * k * (method.batch_real * t + ipc * 2 * t) + (outer - 1) * inner * k * ipc * t)
    if name == "dm":
        return float(k * method.batch_real * f + k * ipc * t)
    if name == "mtt":  # each student step is rebuilt once more in the checkpointed backward
        return float(method.syn_steps * k * ipc * (2 * t + f))
    if name == "bptt":
        per_step = k * ipc // max(1, method.steps) if method.steps > 1 else k * ipc
        return float(method.steps * method.epochs * per_step * 3 * t + method.batch_real * t)
    return 0.0


def _residual_set(b: Bench) -> Path:
    """The set the DSA residual is traced on: dsa at IPC 1 after its first budget point (a learned set, there
    early; the question is how each protocol trains on one set, not how good the set is)."""
    return _set_path(b, "dsa", 1, min(REPRODUCE_POINTS[_kind(b)][("dsa", 1)]))


def _residual_cell(out: Path, quick: bool, name: str, variant: str) -> dict:
    b = Bench(out, quick)
    splits = dd_splits(b)
    return _evaluate(b, splits, SyntheticSet.load(_residual_set(b)), RESIDUAL_VARIANTS[variant],
                     RUNS[_kind(b)]["final"])


def _cell(out: Path, quick: bool, *cell) -> dict:
    name = cell[0]
    if name in ("random", "herding"):
        return _coreset_cell(out, quick, *cell)
    if name == "dsa-residual":
        return _residual_cell(out, quick, *cell)
    stage = cell[2]
    if stage == "condense":
        return _condense_cell(out, quick, name, cell[1])
    if stage == "probe":
        return _probe_cell(out, quick, *cell)
    return _eval_cell(out, quick, *cell)


def reproduce_cells(quick: bool) -> tuple[list[tuple], list[tuple], list[tuple]]:
    """(condense and probe cells, evaluation cells, the cells that read a finished set): in the order they run."""
    kind = "quick" if quick else "full"
    points = REPRODUCE_POINTS[kind]
    made = [(m, i, "condense") for (m, i) in points]
    made += [(m, i, "probe") for (m, i) in PROBES[kind]]
    coresets = [("random", 1, s) for s in range(RUNS[kind]["random_subsets"])]
    coresets += [("herding", 1, "pixels"), ("herding", 1, "features")]
    evals = [(m, i, "eval", n) for (m, i), ns in points.items() for n in sorted(ns, reverse=True)]
    residual = [("dsa-residual", v) for v in RESIDUAL_VARIANTS]
    return made, coresets + evals, residual


def _recipe_of(b: Bench):
    """What a cell's result depends on (a kept cell whose recipe changed runs again): a condense or probe cell
    its method's options and budget points, an evaluation also the models it trains."""
    def recipe(cell):
        name = cell[0]
        evaluation = {"runs": RUNS[_kind(b)], "beside": DISTILLAB_BESIDE}
        if name in ("random", "herding", "dsa-residual"):
            return {"cell": list(cell), **evaluation}
        ipc, stage = cell[1], cell[2]
        if stage == "probe":
            return {"cell": list(cell), "count": PROBES[_kind(b)][(name, ipc)],
                    "recipe": PROBE_RECIPES.get((name, ipc))}
        method = _method(b, name, ipc, iterations=max(REPRODUCE_POINTS[_kind(b)][(name, ipc)]))
        made = {"cell": list(cell), "options": option_values(method), "points": REPRODUCE_POINTS[_kind(b)][(name, ipc)]}
        return made if stage == "condense" else {**made, **evaluation, "protocol": REFERENCE_CELLS[name]["protocol"]}
    return recipe


def _pm(r: dict) -> str:
    return f"{100 * r['mean']:.2f} +- {100 * r['std']:.2f} ({len(r['runs'])})"


@benchmark("reproduce-mnist")
def bench_reproduce_mnist(b: Bench) -> dict:
    """Every DD method at its reference recipe and protocol on MNIST, beside the published figure (same basis)
    and beside distillab's protocol on the same set; budget curves where the reference's budget is out of reach,
    timed probes where even a curve is."""
    made, evals, residual = reproduce_cells(b.quick)
    recipe_of = _recipe_of(b)
    done = dict(b.cells("reproduce-mnist", _cell, made, recipe_of=recipe_of, partial_ok=True))
    # a budget point is evaluated once its set is kept, also while its condense cell still runs
    ready = [c for c in evals if c[0] in ("random", "herding") or (c[0], c[1], "condense") in done
             or _point_ready(b, c[0], c[1], c[3])]
    done.update(b.cells("reproduce-mnist", _cell, ready, recipe_of=recipe_of, partial_ok=True))
    if _point_ready(b, "dsa", 1, min(REPRODUCE_POINTS[_kind(b)][("dsa", 1)])):
        done.update(b.cells("reproduce-mnist", _cell, residual, recipe_of=recipe_of, partial_ok=True))
    rows, figures = [], {"cells": {"-".join(map(str, c)): v for c, v in done.items()}}
    kind = _kind(b)

    def verdict(key: str, mean: float, basis: bool, published) -> str:
        if b.quick:
            return "- (quick: digits)"
        if not basis:
            return "not comparable (fewer iterations than the reference)"
        if key == "random":
            lo, hi = published[0] - published[1], published[0] + published[1]
            return "met" if lo <= 100 * mean <= hi else f"NOT met (outside {lo:.1f}-{hi:.1f})"
        if key in THRESHOLDS:
            return "met" if 100 * mean >= THRESHOLDS[key] else f"NOT met (< {THRESHOLDS[key]})"
        return "-"

    subsets = [done[c] for c in evals if c[0] == "random" and c in done]
    if subsets:
        from ..evaluation import summarise
        ref = summarise([a for s in subsets for a in s["reference"]["runs"]])
        own = summarise([a for s in subsets for a in s["distillab"]["runs"]])
        rows.append(("random real subset", 1, f"{len(subsets)} subsets", "vico-dc", "-", "-", _pm(ref),
                     "64.9 +- 3.5", verdict("random", ref["mean"], True, CORESETS["random"]["published"]), _pm(own)))
        figures["random"] = {"reference": ref, "distillab": own, "subsets": len(subsets)}
    for variant, key in (("pixels", "herding-pixels"), ("features", "herding-features")):
        c = ("herding", 1, variant)
        if c in done:
            r = done[c]
            rows.append((f"herding ({variant})", 1, r["method"], "vico-dc", "-", "-", _pm(r["reference"]),
                         "89.2 +- 1.6", verdict(key, r["reference"]["mean"], True, None) if variant == "features"
                         else "- (the DC paper herds in feature space)", _pm(r["distillab"])))
    for (name, ipc), ns in REPRODUCE_POINTS[kind].items():
        info = REFERENCE_CELLS[name]
        cond = done.get((name, ipc, "condense"))
        for n in sorted(ns):
            e = done.get((name, ipc, "eval", n))
            if not e:
                continue
            seconds = e.get("condense_seconds", cond["condense_seconds"][str(n)] if cond else None)
            basis = n >= REFERENCE_ITERATIONS[name] and not b.quick
            pub = info["published"].get(ipc)
            rows.append((name, ipc, f"{info['recipe']}", info["protocol"], f"{n:,} / {REFERENCE_ITERATIONS[name]:,}",
                         f"{seconds / n:.2f}" if seconds is not None else "-", _pm(e["reference"]),
                         f"{pub[0]} +- {pub[1]}" if pub else "-",
                         verdict(name, e["reference"]["mean"], basis, pub) if pub else "-",
                         _pm(e["distillab"]) if "distillab" in e else "-"))
    probes = []
    for (name, ipc) in PROBES[kind]:
        p = done.get((name, ipc, "probe"))
        if p:
            probes.append((name, ipc, p["recipe"]["name"] if p.get("recipe") else "-", f"{p['seconds_per_iteration']:.1f}",
                           f"{p['reference_iterations']:,}", f"{p['reference_budget_hours_here']:,}",
                           p["reference_budget_hours_gpu_estimate"] if p["reference_budget_hours_gpu_estimate"]
                           is not None else "-"))
    residual_rows = [(v, RESIDUAL_VARIANTS[v], _pm(done[("dsa-residual", v)]))
                     for v in RESIDUAL_VARIANTS if ("dsa-residual", v) in done]
    markdown = table(["method", "IPC", "recipe", "protocol", "iterations run / reference", "s / iteration here",
                      "accuracy % (reference protocol; models)", "published", "on the same basis",
                      f"distillab protocol ({DISTILLAB_BESIDE})"], rows)
    if probes:
        markdown += "\n\nRecipes too long for this CPU (a few iterations timed):\n\n" + table(
            ["method", "IPC", "recipe", "s / iteration here", "reference iterations", "hours here",
             "hours on one GPU (estimate: FLOPs / 30% of an A100's fp32 peak)"], probes)
    if residual_rows:
        markdown += (f"\n\nThe DSA evaluation residual (the dsa IPC-1 set after "
                     f"{min(REPRODUCE_POINTS[kind][('dsa', 1)])} iterations):\n\n") + table(
            ["variant", "protocol", "accuracy % (models)"], residual_rows)
    not_run = [c for c in made + evals + residual if c not in done]
    figures.update({"published": {k: {str(i): v for i, v in r["published"].items()} for k, r in REFERENCE_CELLS.items()},
                    "thresholds": THRESHOLDS, "reference_iterations": REFERENCE_ITERATIONS,
                    "points": {f"{m}-{i}": v for (m, i), v in REPRODUCE_POINTS[kind].items()},
                    "runs": RUNS[kind], "not_run": ["-".join(map(str, c)) for c in not_run],
                    "cells_total_seconds": cells_total_seconds({c: v for c, v in done.items() if "wall_seconds" in v})})
    if not_run:
        listed = ", ".join("-".join(map(str, c)) + _progress_of(b, c) for c in not_run)
        markdown += f"\n\nCells not run yet: {listed}."
    figures["markdown"] = markdown
    return figures
