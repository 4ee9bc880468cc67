"""Cross-architecture benchmark: cross-arch (issue 12).

The IPC-10 sets of dm, dsa and mtt (whichever are registered), condensed as dd-mnist condenses them, each trained
by the protocol on ConvNet-3, ConvNet-3 with batch norm, an MLP, LeNet-5 and a ResNet-18: a matrix whose rows are
the set a model was condensed with and whose columns the model it is evaluated on, as a table and a heatmap.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch

from ..api import matrix_markdown, synset_labels
from ..condense import METHODS, SyntheticSet
from ..condense.synset import SYNSET_FORMAT
from ..data import dataset_hash
from ..errors import DistillabError, require
from ..figures import plot_matrix
from ..files import read_meta, to_jsonable
from ..specs import option_values
from .common import Bench, benchmark, cell_name, cells_total_seconds
from .dd import dd_mnist_experts_cell, experts_dir, dd_eval, dd_mnist_method, dd_splits

CROSS_ARCH_METHODS = ("dm", "dsa", "mtt")

# The protocol's epochs on an IPC-10 MNIST set (100 images: one batch, so one step per epoch), timed on one thread
# of this machine's CPU (2-core AVX2), seconds per model of 300 epochs with DSA plus its test pass:
# convnet 197, convnet:norm=batch 205, mlp 3, lenet5 4, resnet18 (width 64) 951, resnet18:width=32 280,
# resnet18:width=16 82. A full-width ResNet-18 cell of 3 runs takes ~48 min and of 5 runs ~80 min; width 16 keeps
# every cell under ~11 min and the 15 evaluation cells at ~74 min on one thread (~40 min with --workers 2).
# Three runs, not the protocol's five: the differences a cross-architecture table shows (several points between
# architectures) are far above the spread of a mean of three at IPC 10 (runs' std ~1 point), and five runs would
# cost ~2 h on one thread.
def _recipe(quick: bool) -> dict:
    if quick:
        return dict(ipc=2, runs=2, epochs=20, dsa=True,
                    models={"convnet": "convnet:width=4,depth=2", "convnet-bn": "convnet:width=4,depth=2,norm=batch",
                            "mlp": "mlp:hidden=16", "lenet5": "lenet5", "resnet18": "resnet18:width=4"})
    return dict(ipc=10, runs=3, epochs=300, dsa=True,
                models={"convnet": "convnet", "convnet-bn": "convnet:norm=batch", "mlp": "mlp", "lenet5": "lenet5",
                        "resnet18": "resnet18:width=16"})


def cross_arch_methods() -> list[str]:
    """Those of dm, dsa and mtt that are registered (built in) here."""
    return [m for m in CROSS_ARCH_METHODS if m in METHODS.names(builtin_only=True)]


def _method(b: Bench, method: str, ipc: int):
    """dd-mnist's method at this IPC; mtt matches the experts dd-mnist trains (trained here if it has not)."""
    if method == "mtt":
        dd_mnist_experts_cell(b.out, b.quick, method)
    return dd_mnist_method(b.quick, method, ipc, str(experts_dir(b.out, b.quick)))


def _set_recipe(quick: bool, method: str, ipc: int, out: Path | None = None) -> dict:
    """How a set is condensed, as its file records it (``meta["recipe"]``): dd-mnist's options for the method."""
    experts = str(experts_dir(out, quick)) if out is not None else ""
    return {"method": method, "ipc": ipc, "seed": 0, **option_values(dd_mnist_method(quick, method, ipc, experts))}


def _matches(path: Path, recipe: dict, data: str, source_hash: str) -> bool:
    """True when the set file at ``path`` was condensed by ``recipe`` from this very training split, hard labels."""
    if not path.is_file():
        return False
    try:
        meta = read_meta(path)
    except DistillabError:
        return False
    kept = meta.get("recipe") if isinstance(meta.get("recipe"), dict) else {}
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    same = json.dumps(to_jsonable({k: kept.get(k) for k in recipe}), sort_keys=True) == json.dumps(
        to_jsonable(recipe), sort_keys=True)
    return (meta.get("format") == SYNSET_FORMAT and same and meta.get("labels", "hard") == "hard"
            and source.get("data") == data and source.get("hash") == source_hash)


def _candidates(b: Bench, method: str, ipc: int) -> list[tuple[str, Path]]:
    """Where a set may already be: the one dd-mnist made for its cell, then this benchmark's own."""
    return [("dd-mnist", b.work / "dd-mnist" / "cells" / f"{method}-{ipc}.safetensors"),
            ("cross-arch", b.work / "cross-arch" / "sets" / f"{method}-{ipc}.safetensors")]


def _set_file(b: Bench, method: str, source_hash: str) -> tuple[str, Path] | None:
    ipc = _recipe(b.quick)["ipc"]
    recipe = _set_recipe(b.quick, method, ipc, b.out)
    return next(((who, p) for who, p in _candidates(b, method, ipc) if _matches(p, recipe, b.data, source_hash)),
                None)


def _make_sets(b: Bench, methods: list[str], make: list[str]) -> dict:
    """Each method's set: reused when a kept file has the same recipe, else condensed (as dd-mnist does) and kept
    -- condensed only for the methods in ``make``; the others without a kept set are left out."""
    ipc = _recipe(b.quick)["ipc"]
    train = dd_splits(b).train_set()
    source_hash = dataset_hash(train)
    sets = {}
    for method in methods:
        found = _set_file(b, method, source_hash)
        if found is None and method not in make:
            continue
        if found is None:
            b.reporter.info(f"cross-arch: condensing {method} at IPC {ipc}")
            t0 = time.time()
            synset = b.condense(train, _method(b, method, ipc), ipc, seed=0)
            path = _candidates(b, method, ipc)[1][1]
            path.parent.mkdir(parents=True, exist_ok=True)
            synset.save(path)  # written atomically: a killed run never leaves half a set to reuse
            b.reporter.info(f"cross-arch: condensed {method} in {time.time() - t0:.1f} s")
            found = ("condensed", path)
        else:
            b.reporter.info(f"cross-arch: reusing the {method} set {found[0]} made ({found[1]})")
        who, path = found
        meta = read_meta(path)
        sets[method] = {"file": str(path.relative_to(b.out)), "from": who, "content_sha256": _content_sha256(path),
                        "condense_seconds": meta.get("condense_seconds"),
                        "recipe": str(dd_mnist_method(b.quick, method, ipc))}
    return sets


def _content_sha256(path: Path) -> str:
    """sha256 of what a set trains with (images, labels, learned labels and rates): the same set condensed again,
    or kept by dd-mnist instead of here, has other file bytes (its timings) but the same content."""
    synset = SyntheticSet.load(path)
    h = hashlib.sha256()
    for t in (synset.images, synset.labels, synset.label_logits, synset.lrs):
        h.update(b"-" if t is None else t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _cross_arch_cell(out: Path, quick: bool, method: str, arch: str, protocol: str | None = None) -> dict:
    """One (set, architecture) cell: the protocol's fresh models of ``arch`` trained on ``method``'s set."""
    b = Bench(out, quick)
    r = _recipe(quick)
    splits = dd_splits(b)
    found = _set_file(b, method, dataset_hash(splits.train_set()))
    if found is None:
        raise DistillabError(f"cross-arch: the {method} set is gone; run the benchmark again to condense it")
    spec = r["models"][arch]
    t0 = time.time()
    e = dd_eval(splits, SyntheticSet.load(found[1]), [spec], r["runs"], r["epochs"], dsa=r["dsa"], protocol=protocol,
                quick=quick)[spec]
    return {"mean": e["mean"], "std": e["std"], "runs": e["runs"], "wall_seconds": round(time.time() - t0, 1),
            "content_sha256": _content_sha256(found[1]), "torch_threads": torch.get_num_threads()}


@benchmark("cross-arch", protocols=True)
def bench_cross_arch(b: Bench) -> dict:
    """The IPC-10 sets of dm, dsa and mtt, each evaluated on ConvNet-3, ConvNet-3 with batch norm, an MLP, LeNet-5
    and a ResNet-18 (rows: condensed with, columns: evaluated on)."""
    r = _recipe(b.quick)
    methods = cross_arch_methods()
    require(methods, f"cross-arch needs one of {', '.join(CROSS_ARCH_METHODS)} registered")
    missing = [m for m in CROSS_ARCH_METHODS if m not in methods]
    archs = list(r["models"])
    # with --cells (rows spread over several runs) only the sets the selected cells need are condensed here
    sets = _make_sets(b, methods, make=[m for m in methods if any(b.selected((m, a)) for a in archs)])
    cells = [(m, a) for m in methods if m in sets for a in archs]
    protocol = {"runs": r["runs"], "epochs": r["epochs"], "dsa": r["dsa"], "seed": 0}

    def recipe_of(cell):  # the set's bits, the model and the protocol: a set condensed again runs its cells again
        return {"set_content_sha256": sets[cell[0]]["content_sha256"], "model": r["models"][cell[1]], **protocol}

    done = b.cells("cross-arch", _cross_arch_cell, cells, recipe_of=recipe_of, partial_ok=True)
    rows = [m for m in methods if all((m, a) in done for a in archs)]  # a partial run shows its finished rows
    not_run = [cell_name((m, a)) for m in methods for a in archs if (m, a) not in done]
    paths = [b.out / sets[m]["file"] for m in rows]
    columns = [r["models"][a] for a in archs]
    matrix = {"rows": synset_labels(paths, [SyntheticSet.load(p) for p in paths]), "columns": columns,
              "mean": [[done[(m, a)]["mean"] for a in archs] for m in rows],
              "std": [[done[(m, a)]["std"] for a in archs] for m in rows]}
    heatmap = b.out / "cross-arch.png"
    if rows:
        plot_matrix(matrix, heatmap, f"cross-arch{' (quick)' if b.quick else ''}: {b.data}, test accuracy (%), "
                                     f"mean ± std of {r['runs']} runs, {r['epochs']} epochs with DSA")
    note = f"{', '.join(missing)} not registered here: its row is missing" if missing else "every method registered"
    if not_run:
        note += f"; partial run: {len(not_run)} cells not run yet ({', '.join(not_run)}), their rows left out"
    return {"methods": methods, "methods_not_registered": missing, "note": note, "cells_not_run": not_run,
            "ipc": r["ipc"], "data": b.data, "architectures": dict(r["models"]), "protocol": protocol, "sets": sets,
            "cells": {m: {a: done[(m, a)] for a in archs if (m, a) in done} for m in methods if m in sets},
            "matrix": matrix, "heatmap": heatmap.name if rows else None,
            "cells_total_seconds": cells_total_seconds(done), "markdown": matrix_markdown(matrix)}
