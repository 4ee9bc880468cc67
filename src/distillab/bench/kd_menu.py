"""The KD menu benchmark: kd-menu (every built-in loss term, alone with CE and as its paper combines it, each at its
own validated learning rate, in a setting with headroom: few labels, a small student, a strong teacher)."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np

from .. import data as data_mod
from ..api import tune
from ..errors import DistillabError
from ..files import file_sha256
from ..kd import LOSSES
from .common import Bench, benchmark, cell_name, cells_total_seconds, evaluate_file, pm, table, teacher_recipe
from .omni import _as_array, labelled_subset

NAME = "kd-menu"
BASELINE = "ce"         # the student alone: hard labels only (plain ``train``); every other term is a row
KD_SPEC = "kd:T=4"      # Hinton's term as the feature terms' papers add it: T^2 KL at T=4, weight 1, beside CE
TEACHER = "convnet"     # common.TEACHERS: a ConvNet on the whole training split (full: MNIST, width 32, depth 3)


def menu_recipe(quick: bool) -> dict:
    """The setting. Full: MNIST, 100 labelled images per class (1,000, of which default_val_size keeps 100 as the
    validation split every learning rate is chosen on), the 10,000 MNIST test images; the teacher is a ConvNet
    trained on MNIST's whole training split (55,000 images; common.TEACHERS["convnet"]); the student a ConvNet of
    width 4 and the teacher's depth, so that each term's ``example`` taps (module paths of a depth >= 2 ConvNet) name
    the same stage on both sides. Few labels and a narrow student leave room between the student alone and the
    teacher for the terms to separate. Quick: digits, 20 labelled per class, the quick teacher (width 16, depth 2),
    a width-4 depth-2 student, 3 epochs, 2 grid points, 2 seeds."""
    if quick:
        return {"data": "digits", "labelled_per_class": 20, "subset_seed": 0, "student": "convnet:width=4,depth=2",
                "grid": {"lr": [0.03, 0.1]}, "options": dict(epochs=3, batch_size=32), "seeds": [0, 1],
                "teacher": TEACHER}
    return {"data": "mnist", "labelled_per_class": 100, "subset_seed": 0, "student": "convnet:width=4,depth=3",
            "grid": {"lr": [0.01, 0.03, 0.1]}, "options": dict(epochs=40, batch_size=64), "seeds": [0, 1, 2],
            "teacher": TEACHER}


# --------------------------------------------------------------------------------------------------------------
# The menu: every registered term, its options and how its paper combines it -- the one place that says so


def menu_terms() -> list[str]:
    """The built-in loss terms (kd/losses/), CE aside: a new term file joins the menu by being there. Terms
    registered from outside the package (plug-ins, tests) are left out: the table is the library's own menu."""
    return [n for n in LOSSES.names() if n != BASELINE and LOSSES.get(n).__module__.startswith("distillab.kd.losses.")]


# Where a term's ``example`` does not suit the full form's nets (depth-3 ConvNets on 28x28 MNIST, padded to 32x32;
# the examples are made for depth-2 ones on 8x8 inputs), the options used there instead, and why.
FULL_OVERRIDES = {
    "reviewkd": ({"student": "features.6+features.10+penultimate", "teacher": "features.6+features.10+penultimate"},
                 "the example's first tap (features.2) is the 32x32 map here, where the fusion's 3x3 convolution made "
                 "an epoch cost about 40x CE alone's (6.3 s against 0.15 s on this benchmark's 900 training images, "
                 "one thread); the last two blocks' ReLU maps (16x16, 8x8) and the pre-logit vector keep the "
                 "example's form (two maps and penultimate) at about 10x"),
    "kdsvd": ({"student": "features.5+features.9", "teacher": "features.5+features.9"},
              "the example's first tap (features.1, the first block's 32x32 norm output) has repeated singular values "
              "on MNIST (its blank, padded border makes columns alike), where the SVD's gradient is NaN from the first "
              "step (runs at lr 0.01 and 0.03 stopped with a LinAlgError); the next two blocks' norm outputs "
              "(16x16, 8x8) keep the example's form (two norm outputs) and train"),
    "crd": ({}, "the example's 8-dimensional embedding and 4 negatives are the contract test's toy sizes; the "
                "defaults are the paper's (128 dimensions, 16,384 negatives, capped by the term at the other 899 "
                "training images)"),
}


def term_options(name: str, quick: bool) -> dict:
    """The term's options: its class's ``example`` (the taps under which the contract test runs it between two small
    ConvNets: ``features.N`` module paths of a ConvNet of depth >= 2, else ``penultimate``), or in the full form its
    FULL_OVERRIDES entry; the rest at their defaults (the papers' weights)."""
    if not quick and name in FULL_OVERRIDES:
        return dict(FULL_OVERRIDES[name][0])
    return dict(LOSSES.get(name).example)


def term_spec(name: str, quick: bool) -> str:
    options = term_options(name, quick)
    return name + (":" + ",".join(f"{k}={v}" for k, v in options.items()) if options else "")


def is_feature_term(name: str) -> bool:
    """Whether the term reads intermediate features (taps) rather than only the logits."""
    cls = LOSSES.get(name)
    return bool(cls(**cls.example).student_taps())


def combinations(name: str, quick: bool) -> dict[str, list[str]]:
    """The rows of one term: ``alone`` is CE + the term; ``paper`` is the term over Hinton's KD, CE + KD + the term,
    for the feature terms: the combination their papers report beside the term alone (FitNets trains its second
    stage with KD; AT+KD in Zagoruyko & Komodakis 2017; CRD+KD in Tian et al. 2020). The logit terms (logit-mse,
    dkd, dist, lskd) replace KD, and kd is KD itself: for them the paper's form is the alone row, not run twice."""
    if name == BASELINE:
        return {"alone": [BASELINE]}
    spec = term_spec(name, quick)
    rows = {"alone": [BASELINE, spec]}
    if is_feature_term(name):
        rows["paper"] = [BASELINE, KD_SPEC, spec]
    return rows


def menu_cells(quick: bool) -> list[tuple[str, str]]:
    return [(BASELINE, "alone")] + [(name, combo) for name in menu_terms() for combo in combinations(name, quick)]


def _cell_recipe(quick: bool, term: str, combo: str) -> dict:
    r = menu_recipe(quick)
    return {"losses": combinations(term, quick)[combo], "student": r["student"], "grid": r["grid"],
            "options": r["options"], "seeds": r["seeds"], "teacher": teacher_recipe(r["teacher"], quick),
            "data": {k: r[k] for k in ("data", "labelled_per_class", "subset_seed")}}


# --------------------------------------------------------------------------------------------------------------
# The data: a labelled subset of the training images and the whole test split, as an npz


def data_file(out: Path, quick: bool) -> Path:
    return Path(out) / ("work-quick" if quick else "work") / NAME / "data" / "labelled.npz"


def prepare_data(out: Path, quick: bool) -> Path:
    """``labelled_per_class`` training images of every class (omni-mnist's draw) and the whole test split, written
    once per OUT folder (again when the recipe's data part changes)."""
    r = menu_recipe(quick)
    path = data_file(out, quick)
    stamp = path.with_name("recipe.json")
    want = json.dumps({k: r[k] for k in ("data", "labelled_per_class", "subset_seed")}, sort_keys=True)
    if path.exists() and stamp.exists() and stamp.read_text() == want:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = data_mod.load(r["data"])
    chosen = labelled_subset(ds.train.y, r["labelled_per_class"], r["subset_seed"])
    np.savez(path, x=_as_array(ds.train.x[chosen]), y=ds.train.y[chosen].numpy(), x_test=_as_array(ds.test.x),
             y_test=ds.test.y.numpy(), classes=np.array(ds.classes))
    stamp.write_text(want)
    return path


def teacher_module(path: Path, data: str):
    """The teacher model file as a module that takes the labelled subset's inputs, its module names kept (the terms'
    taps name its layers): ``load_teacher_model`` maps the normalisation in a forward pre-hook."""
    from ..kd.teachers import load_teacher_model

    return load_teacher_model(path, data_mod.split(data_mod.load(data)))[0]


# --------------------------------------------------------------------------------------------------------------
# One cell: a row's learning rate chosen on validation, then its final seeds


def epoch_seconds(run_dir: Path) -> list[float]:
    """The seconds of every epoch of a finished run (its metrics.jsonl: training steps and the validation pass)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r["seconds"] for r in rows if "epoch" in r and "seconds" in r]


def _menu_cell(out: Path, quick: bool, term: str, combo: str) -> dict:
    """One row: ``tune`` picks its learning rate on the validation split (test sealed), then runs it with each seed;
    CE alone is plain ``train``, the others ``distill`` from the cached teacher. A row whose runs fail (every trial
    diverged, or the term itself raised) is a result too: ``failed`` says why, and the table lists it apart."""
    b = Bench(out, quick)
    r = _cell_recipe(quick, term, combo)
    data = f"npz:{data_file(out, quick)}"
    started = time.time()
    folder = b.run_dir(NAME, f"{term}-{combo}")
    common = dict(seeds=r["seeds"], out=folder, quiet=True, data=data, **r["options"])
    try:
        if term == BASELINE:
            result = tune("train", r["grid"], model=r["student"], **common).metrics
        else:
            result = tune("kd", r["grid"], teacher=teacher_module(b.teacher(TEACHER), data), student=r["student"],
                          losses=r["losses"], **common).metrics
    except (DistillabError, RuntimeError) as e:  # torch's errors (a LinAlgError) are RuntimeErrors
        if term == BASELINE:
            raise  # without CE alone there is nothing to compare with
        return {"losses": r["losses"], "failed": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}",
                "wall_seconds": round(time.time() - started, 1)}
    seconds = [s for seed in r["seeds"] for s in epoch_seconds(folder / f"final-seed-{seed}")]
    return {"losses": r["losses"], "test_accuracy": result["final"]["test_accuracy"],
            "test_errors": result["final"]["test_errors"], "val_accuracy": result["final"]["val_accuracy"],
            "chosen": result["best"], "epoch_seconds": seconds, "median_epoch_seconds": statistics.median(seconds),
            "recipe_search": {"search": result["search"], "grid": result["grid"], "trials": result["trials"],
                              "best_val_accuracy": result["best_val_accuracy"], "minutes": result["search_minutes"]},
            "wall_seconds": round(time.time() - started, 1)}


def cell_file(out: Path, quick: bool, cell: tuple) -> Path:
    """Where Bench.cells keeps a cell's result."""
    return Path(out) / ("work-quick" if quick else "work") / NAME / "cells" / (cell_name(cell) + ".json")


# --------------------------------------------------------------------------------------------------------------


@benchmark(NAME)
def bench_kd_menu(b: Bench) -> dict:
    """Every KD loss term of the menu, alone with CE and as its paper combines it, one teacher, each row at the
    learning rate `distillab tune` chose for it on the validation split; few labels and a small student leave
    headroom. Reports mean +- std test accuracy over the seeds, the ranking, and each row's epoch time over CE
    alone's. A failed row is reported and its cell file removed, so the next run tries it again (after a fix)."""
    r = menu_recipe(b.quick)
    path = prepare_data(b.out, b.quick)
    teacher = b.teacher(TEACHER)  # trained once here, before the cells share it
    cells = menu_cells(b.quick)
    done = b.cells(NAME, _menu_cell, cells, recipe_of=lambda cell: _cell_recipe(b.quick, *cell))
    rows = {cell_name(cell): done[cell] for cell in cells if "failed" not in done[cell]}
    failed = {cell_name(cell): done[cell] for cell in cells if "failed" in done[cell]}
    for cell in cells:
        if "failed" in done[cell]:
            cell_file(b.out, b.quick, cell).unlink(missing_ok=True)
    base = rows[cell_name((BASELINE, "alone"))]
    t_eval = evaluate_file(teacher, f"npz:{path}")
    alone = base["test_accuracy"]["mean"]
    for row in rows.values():
        row["epoch_time_over_ce"] = round(row["median_epoch_seconds"] / base["median_epoch_seconds"], 3)
        row["gain_over_ce"] = row["test_accuracy"]["mean"] - alone
    ranking = sorted(rows, key=lambda k: (-rows[k]["test_accuracy"]["mean"], k))
    labelled = data_mod.read_npz(path)
    result = {
        "rows": rows, "failed": failed, "ranking": ranking,
        "teacher": {**t_eval, "model": teacher_recipe(TEACHER, b.quick)["model"], "file": str(teacher),
                    "sha256": file_sha256(teacher)},
        "headroom": {"teacher_test_accuracy": t_eval["test_accuracy"], "student_alone_test_accuracy": alone,
                     "teacher_minus_student_alone": t_eval["test_accuracy"] - alone},
        "terms": {name: {"spec": term_spec(name, b.quick), "feature_term": is_feature_term(name),
                         "combinations": combinations(name, b.quick),
                         **({"why_not_the_example": FULL_OVERRIDES[name][1]}
                            if not b.quick and name in FULL_OVERRIDES else {})} for name in menu_terms()},
        "recipe": {**r, "teacher_recipe": teacher_recipe(TEACHER, b.quick), "kd_spec": KD_SPEC,
                   "labelled_images": int(len(labelled["y"])), "test_images": int(len(labelled["y_test"])),
                   "validation_images": data_mod.default_val_size(int(len(labelled["y"]))),
                   "note": "the teacher learnt from all the training images; the students see only the labelled "
                           "subset (their validation split carved from it), the teacher's outputs cached on it; "
                           "epoch time: median seconds of an epoch (training steps and the validation pass) over "
                           "the final seeds' epochs, over CE alone's"},
        "cells_total_seconds": cells_total_seconds(done),
    }
    head = (f"Teacher `{result['teacher']['model']}` {100 * t_eval['test_accuracy']:.2f}%, student "
            f"`{r['student']}` alone {100 * alone:.2f}%: headroom "
            f"{100 * result['headroom']['teacher_minus_student_alone']:.2f} points (test accuracy, "
            f"{result['recipe']['test_images']} test images); {result['recipe']['labelled_images']} labelled images, "
            f"{len(r['seeds'])} seeds per row.\n\n")
    lines = [(i, k, ", ".join(rows[k]["losses"]), rows[k]["chosen"]["lr"], pm(rows[k]["test_accuracy"], 100, "%"),
              f"{100 * rows[k]['gain_over_ce']:+.2f}", f"{rows[k]['epoch_time_over_ce']:.2f}")
             for i, k in enumerate(ranking, 1)]
    result["markdown"] = head + table(["rank", "row", "losses", "chosen lr", "test accuracy (mean +- std)",
                                       "vs CE alone (points)", "epoch time / CE alone"], lines)
    if failed:
        result["markdown"] += "\n\nFailed rows (tried again on the next run):\n\n" + table(
            ["row", "losses", "why"], [(k, ", ".join(f["losses"]), f["failed"]) for k, f in failed.items()])
    return result
