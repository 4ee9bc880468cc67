"""What every benchmark shares: the Bench (work folder, teachers trained once, resumable cells), the teachers'
recipes (written once here), the registry of benchmarks and the table helpers."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from ..api import evaluate_model, train
from ..checkpoint import Checkpoints
from ..condense import condense
from ..data import dataset_hash
from ..errors import DistillabError, require
from ..evaluation import summarise
from ..files import atomic_path, to_jsonable
from ..reporting import SILENT, Reporter
from ..specs import option_values

BENCHMARKS: dict = {}


def benchmark(name: str, *, protocols: bool = False):
    """Register ``fn(b: Bench) -> dict`` as ``distillab bench NAME``; the dict holds the figures and a
    ``markdown`` table. ``protocols``: the benchmark measures its sets by an evaluation protocol that
    ``bench --protocol`` may replace (its cells then take ``protocol=SPEC``)."""
    def decorate(fn):
        fn.takes_protocol = protocols
        BENCHMARKS[name] = fn
        return fn
    return decorate


def bench_protocol(spec: str, quick: bool, **options):
    """The evaluation protocol ``spec`` with ``options`` (the benchmark's runs and models); in quick form with its
    class's quick settings too (seconds on digits)."""
    import dataclasses

    from ..protocols import parse_protocol

    proto = parse_protocol(spec, trust_code=False)
    quick_options = {k: v for k, v in type(proto).quick.items() if k not in options} if quick else {}
    return dataclasses.replace(proto, **quick_options, **options)


# The teachers the KD benchmarks learn from, by key: {"quick": options on digits, "full": options on MNIST}
# (the keyword arguments of distillab.train). A key's teacher is trained once per OUT folder.
HINTON_TEACHER = {
    "quick": dict(model="mlp:hidden=128-128,dropout=0.3", epochs=15, augment="shift:1", lr=0.05, batch_size=64),
    "full": dict(model="mlp:hidden=1200-1200,dropout=0.5,input_dropout=0.2", epochs=50, augment="shift:2", lr=0.05,
                 max_norm=3.5, batch_size=128, weight_decay=0.0),
}
TEACHERS = {
    "hinton-1200": HINTON_TEACHER,  # Hinton et al. 2015's 1200-1200 MNIST net: hinton-mnist, kd-losses, takd, kd-speed
    "ls-dropout": {"quick": dict(model="mlp:hidden=128-128,dropout=0.3", epochs=15, augment="shift:1", batch_size=64),
                   "full": dict(model="mlp:hidden=1200-1200,dropout=0.5", epochs=30, augment="shift:2",
                                batch_size=128)},
    "ls-smoothed": {"quick": dict(model="mlp:hidden=128-128", label_smoothing=0.1, epochs=15, augment="shift:1",
                                  batch_size=64),
                    "full": dict(model="mlp:hidden=1200-1200", label_smoothing=0.1, epochs=30, augment="shift:2",
                                 batch_size=128)},
    # LeNet-5 teachers of datafree-mnist (DAFL's MNIST teacher; a BatchNorm one for DeepInversion)
    "lenet5": {"quick": dict(model="lenet5", epochs=15, batch_size=64),
               "full": dict(model="lenet5", epochs=10, batch_size=128)},
    "lenet5-bn": {"quick": dict(model="lenet5:norm=batch", epochs=15, batch_size=64),
                  "full": dict(model="lenet5:norm=batch", epochs=10, batch_size=128)},
    "convnet": {"quick": dict(model="convnet:width=16,depth=2", epochs=10, batch_size=64),
                "full": dict(model="convnet:width=32", epochs=3, batch_size=128)},
}


def teacher_recipe(key: str, quick: bool) -> dict:
    return dict(TEACHERS[key]["quick" if quick else "full"])


class Bench:
    """Shared plumbing: a work folder, reusable teachers, resumable cells, quiet runs."""

    def __init__(self, out: Path, quick: bool, workers: int = 1, reporter: Reporter = SILENT, only: tuple = (),
                 protocol: str | None = None):
        require(workers >= 1, f"--workers must be at least 1, got {workers}")
        self.out, self.quick, self.workers, self.reporter = Path(out), quick, workers, reporter
        self.only = tuple(only)  # fnmatch patterns of the cells to run (empty: all)
        # bench --protocol: the evaluation protocol that replaces the benchmark's own (checked now: one line)
        self.protocol = str(bench_protocol(protocol, quick)) if protocol else None
        self.work = self.out / ("work-quick" if quick else "work")
        self.work.mkdir(parents=True, exist_ok=True)

    def cells(self, name: str, fn, cells: list[tuple], recipe_of, partial_ok: bool = False) -> dict:
        """Run ``fn(out, quick, *cell)`` for every cell (independent pieces of one benchmark) and return
        {cell: result}.

        Each finished cell is kept as work/NAME/cells/<cell>.json together with ``recipe_of(cell)``, everything
        its result depends on, so a killed run resumes where it stopped and a cell whose recipe changed runs again
        (only that cell: keep unrelated settings out of its recipe). With ``workers > 1`` the
        missing cells run in that many processes (spawned, ``cpus // workers`` torch threads each), started in the
        given order. With ``only`` (``bench --cells PATTERN``) just the matching missing cells run; the others
        are left out of the result, which only a benchmark that reports partial tables (``partial_ok``) accepts.
        """
        # cells measured by another protocol are kept apart (the sets they measure are shared)
        folder = self.work / name / ("cells" if not self.protocol else f"cells-{protocol_slug(self.protocol)}")
        folder.mkdir(parents=True, exist_ok=True)
        if self.protocol:
            plain = recipe_of
            recipe_of = lambda cell: {**plain(cell), "protocol": self.protocol}  # noqa: E731

        def path(cell):
            return folder / (cell_name(cell) + ".json")

        results = {cell: _kept_result(path(cell), recipe_of(cell)) for cell in cells}
        todo = [cell for cell in cells if results[cell] is None]
        if self.only:
            require(partial_ok, f"bench {name} does not take --cells: its table needs every cell")
            todo = [cell for cell in todo if self.selected(cell)]
        self.reporter.info(f"{name}: {sum(r is not None for r in results.values())} of {len(cells)} cells kept from "
                           f"earlier runs, {len(todo)} to run")
        if todo and self.workers == 1:
            for i, cell in enumerate(todo, 1):
                self.reporter.info(f"{name}: cell {i}/{len(todo)} {'-'.join(map(str, cell))}")
                results[cell] = _run_cell(fn, self.out, self.quick, cell, path(cell), recipe_of(cell), self.protocol)
        elif todo:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            cpus = os.cpu_count() or 1
            workers = min(self.workers, cpus, len(todo))  # never more processes than cores
            threads = max(1, cpus // workers)
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_worker_setup, initargs=(threads,)) as pool:
                futures = {cell: pool.submit(_run_cell, fn, self.out, self.quick, cell, path(cell), recipe_of(cell),
                                             self.protocol) for cell in todo}
                for i, (cell, future) in enumerate(futures.items(), 1):
                    results[cell] = future.result()
                    self.reporter.info(f"{name}: cell {'-'.join(map(str, cell))} done ({i}/{len(todo)} in order)")
        return {cell: r for cell, r in results.items() if r is not None}

    def condense(self, train, method, ipc: int, seed: int = 0):
        """``condense()`` with a checkpoint in work/checkpoints named by all the set depends on (method, options,
        IPC, seed, training data): a cell stopped part-way (a killed process, a session's end) resumes from its
        last checkpoint on the next run, to the same bits at the same thread count, its condense_seconds
        counting both parts. At most ~100 checkpoints a run; the checkpoint goes once the set is made."""
        made_of = {"method": method.name, "ipc": ipc, "seed": seed, **option_values(method),
                   "data": dataset_hash(train)}
        key = hashlib.sha256(json.dumps(to_jsonable(made_of), sort_keys=True).encode()).hexdigest()[:16]
        path = self.work / "checkpoints" / f"{method.name}-{ipc}-{key}.safetensors"
        self.resumable(path, method.name, ipc)
        synset = condense(train, method, ipc, seed=seed,
                          checkpoints=Checkpoints(path, every=max(1, method.iterations_total // 100)))
        path.unlink(missing_ok=True)
        return synset

    def resumable(self, path: Path, name: str, ipc: int) -> None:
        """Make the checkpoint's folder; a checkpoint kept there is read first, and a damaged or forged one is
        refused in one line that names the file to delete to start the set again."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            try:
                Checkpoints(path).load()
            except DistillabError as e:
                raise DistillabError(f"{e}; delete it to condense {name} at IPC {ipc} from the start") from None
            self.reporter.info(f"resuming {name} at IPC {ipc} from {path}")

    def selected(self, cell: tuple) -> bool:
        """Whether ``--cells`` lets this cell run (every cell without it)."""
        return not self.only or any(fnmatch.fnmatchcase(cell_name(cell), p) for p in self.only)

    @property
    def quiet(self) -> bool:
        """Sub-runs talk when the benchmark does (their progress lines and one line per epoch)."""
        return self.reporter.quiet

    @property
    def data(self) -> str:
        return "digits" if self.quick else "mnist"

    def run_dir(self, *parts) -> Path:
        """A fresh output folder for one run of a cell: what an earlier run left there, finished or killed (its
        ``.NAME.partial`` folder), is removed, since a cell that did not finish runs again whole."""
        path = self.work.joinpath(*parts)
        for leftover in (path, path.with_name(f".{path.name}.partial")):
            if leftover.exists():
                shutil.rmtree(leftover)
        return path

    def teacher(self, key: str) -> Path:
        """Train the teacher ``key`` of TEACHERS once per OUT folder; later benchmarks reuse it (while its recipe
        is unchanged)."""
        kwargs = teacher_recipe(key, self.quick)
        folder = self.out / "teachers" / ("quick-" if self.quick else "") / key
        path = folder / "model.safetensors"
        recipe = json.dumps(to_jsonable(kwargs), sort_keys=True)
        if path.exists() and (folder / "recipe.json").exists() and (folder / "recipe.json").read_text() == recipe:
            return path
        self.reporter.info(f"  training teacher {key}: {kwargs.get('model')}")
        train(data=self.data, out=folder, overwrite=True, quiet=self.quiet, **kwargs)
        (folder / "recipe.json").write_text(recipe)
        return path


def _worker_setup(threads: int) -> None:
    """A cell worker: its share of the cores (never more threads than cores in all) and the allocator setting."""
    from ..speed import tune_allocator

    torch.set_num_threads(threads)
    tune_allocator()


def _kept_result(path: Path, recipe: dict) -> dict | None:
    """The result kept at ``path`` if it was made with this recipe, else None."""
    if path.exists():
        saved = json.loads(path.read_text())
        if json.dumps(saved.get("recipe"), sort_keys=True) == json.dumps(to_jsonable(recipe), sort_keys=True):
            return saved["result"]
    return None


def protocol_slug(spec: str) -> str:
    """A protocol spec as a folder name."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in spec)[:120]


def _run_cell(fn, out: Path, quick: bool, cell: tuple, path: Path, recipe: dict, protocol: str | None = None) -> dict:
    """Run one cell and keep its result at once (in the worker), whole or not at all.

    A cell that another process (a second run on the same OUT) finished meanwhile is not run again.
    """
    kept = _kept_result(path, recipe)
    if kept is not None:
        return kept
    result = fn(out, quick, *cell, **({"protocol": protocol} if protocol else {}))
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable({"recipe": recipe, "result": result}), indent=2) + "\n")
    return result


def cell_name(cell: tuple) -> str:
    """A cell's name, of its file and of ``bench --cells``: its parts joined by dashes (dm-10-hard-dsa)."""
    return "-".join(str(c) for c in cell)


def cells_total_seconds(done: dict) -> float:
    """What a benchmark made of kept cells cost: a resumed run's own wall time is only its last part."""
    return round(sum(result["wall_seconds"] for result in done.values()), 1)


def figures_of(metrics: dict) -> dict:
    return {"test_errors": metrics["test_errors"], "test_accuracy": metrics["test_accuracy"],
            "val_accuracy": metrics["val_accuracy"], "wall_seconds": metrics["wall_seconds"]}


def summary_of(runs: list[dict], key: str = "test_accuracy") -> dict:
    return summarise([r[key] for r in runs])


# --------------------------------------------------------------------------------------------------------------


def difference_and_power(a: list[float], b: list[float], alpha: float = 0.05, power: float = 0.8) -> dict:
    """b minus a (two sets of runs, one per seed): the difference, Welch's t and its two-sided p, and the smallest
    difference these seeds would detect with ``power`` at level ``alpha`` (pooled spread, t quantiles): what a null
    result can and cannot rule out."""
    from scipy import stats

    a, b = [float(v) for v in a], [float(v) for v in b]
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((v - ma) ** 2 for v in a) / (na - 1)
    vb = sum((v - mb) ** 2 for v in b) / (nb - 1)
    df = na + nb - 2
    welch = stats.ttest_ind(b, a, equal_var=False)
    pooled = (((na - 1) * va + (nb - 1) * vb) / df) ** 0.5
    detectable = (stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * pooled * (1 / na + 1 / nb) ** 0.5
    return {"difference": mb - ma, "t": float(welch.statistic), "p": float(welch.pvalue), "seeds": [na, nb],
            f"detectable_at_power_{power:g}": float(detectable)}


def evaluate_file(model_path: Path, data: str) -> dict:
    m = evaluate_model(model_path, data, write=False).metrics
    return {"test_errors": m["test_errors"], "test_accuracy": m["test_accuracy"], "val_accuracy": m["val_accuracy"]}


@contextmanager
def quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def pm(summary: dict, scale: float = 1.0, suffix: str = "", digits: int = 2) -> str:
    return f"{summary['mean'] * scale:.{digits}f} +- {summary['std'] * scale:.{digits}f}{suffix}"


def table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
