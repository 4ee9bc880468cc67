"""Omni-supervised benchmarks: omni-mnist (Radosavovic et al. 2018's data distillation, on MNIST digits)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .. import data as data_mod
from .. import seeds as seeds_mod
from ..api import pseudolabel, train
from ..evaluation import summarise
from ..files import to_jsonable
from ..pseudolabel import PseudoLabels
from .common import Bench, benchmark, cells_total_seconds, figures_of, pm, table

ROWS = {"labelled_only": "labelled only", "single": "single-pass pseudo-labels",
        "multi": "multi-transform pseudo-labels"}


def omni_recipe(quick: bool) -> dict:
    """What omni-mnist runs. One model recipe for every row: trained on the labelled images alone it is the first
    row and the teacher that labels the unlabeled images (the paper's setting); a fresh one of the same recipe is
    then trained on labelled + pseudo-labelled rows mixed 6:4 in every batch, once with single-pass labels
    (``identity``) and once with labels averaged over the transformed views. Full: MNIST, 100 labelled images per
    class (1,000; 100 of them the validation split), the other 59,000 training images unlabeled, the 10,000 test
    images. Quick: digits, 10 labelled per class."""
    if quick:
        return {"data": "digits", "labelled_per_class": 10, "model": "lenet5", "seeds": [0, 1],
                "teacher": dict(epochs=100, batch_size=32, lr=0.05, augment="shift:1"),
                "student": dict(epochs=6, batch_size=64, lr=0.05, augment="shift:1"),
                "transforms": "shift,scale,rotate", "subset_seed": 0}
    return {"data": "mnist", "labelled_per_class": 100, "model": "lenet5", "seeds": [0, 1, 2],
            "teacher": dict(epochs=60, batch_size=64, lr=0.05, augment="shift:2"),
            "student": dict(epochs=4, batch_size=128, lr=0.05, augment="shift:2"),
            "transforms": "shift,scale,rotate", "subset_seed": 0}


def _folder(out: Path, quick: bool) -> Path:
    return Path(out) / ("work-quick" if quick else "work") / "omni-mnist"


def _files(out: Path, quick: bool) -> dict:
    folder = _folder(out, quick) / "data"
    return {"labelled": folder / "labelled.npz", "unlabeled": folder / "unlabeled.npz",
            "truth": folder / "unlabeled-truth.npz", "recipe": folder / "recipe.json"}


def labelled_subset(y: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Positions of ``per_class`` images of every class, drawn from the ``subset`` stream, sorted."""
    g = seeds_mod.generator(seed, "subset")
    picks = []
    for c in range(int(y.max()) + 1):
        where = torch.nonzero(y == c, as_tuple=True)[0]
        picks.append(where[torch.randperm(len(where), generator=g)[:per_class]])
    return torch.cat(picks).sort().values


def _as_array(x: torch.Tensor) -> np.ndarray:
    """Images for an npz: uint8 where they are whole 1/255 steps (MNIST: read back to the same floats)."""
    x = x[:, 0] if x.shape[1] == 1 else x
    as_bytes = (x * 255).round()
    if torch.equal(as_bytes / 255.0, x):
        return as_bytes.to(torch.uint8).numpy()
    return x.numpy().astype(np.float32)


def prepare_data(out: Path, quick: bool) -> dict:
    """labelled.npz (x, y and the test split), unlabeled.npz (x only) and the hidden truth of the unlabeled images,
    written once per OUT folder (again when the recipe's data part changes)."""
    r = omni_recipe(quick)
    files = _files(out, quick)
    want = json.dumps({k: r[k] for k in ("data", "labelled_per_class", "subset_seed")}, sort_keys=True)
    if all(p.exists() for p in files.values()) and files["recipe"].read_text() == want:
        return files
    files["recipe"].parent.mkdir(parents=True, exist_ok=True)
    ds = data_mod.load(r["data"])
    chosen = labelled_subset(ds.train.y, r["labelled_per_class"], r["subset_seed"])
    rest = torch.ones(len(ds.train), dtype=torch.bool)
    rest[chosen] = False
    np.savez(files["labelled"], x=_as_array(ds.train.x[chosen]), y=ds.train.y[chosen].numpy(),
             x_test=_as_array(ds.test.x), y_test=ds.test.y.numpy())
    np.savez(files["unlabeled"], x=_as_array(ds.train.x[rest]))
    np.savez(files["truth"], y=ds.train.y[rest].numpy())
    files["recipe"].write_text(want)
    return files


def _omni_cell(out: Path, quick: bool, seed: int) -> dict:
    """One seed: the model on labelled images alone (row 1, and the teacher), then a fresh one on labelled +
    single-pass pseudo-labels and one on labelled + multi-transform pseudo-labels."""
    b = Bench(out, quick)
    r = omni_recipe(quick)
    files = _files(out, quick)
    labelled, unlabeled = f"npz:{files['labelled']}", f"npz:{files['unlabeled']}"
    truth = torch.from_numpy(data_mod.read_npz(files["truth"])["y"])
    work = _folder(out, quick)
    t0 = time.time()
    teacher = train(data=labelled, model=r["model"], out=b.run_dir("omni-mnist", f"labelled-{seed}"), quiet=b.quiet,
                    seed=seed, **r["teacher"])
    result = {"labelled_only": figures_of(teacher.metrics)}
    for name, transforms in (("single", "identity"), ("multi", r["transforms"])):
        path = work / f"pseudo-{name}-{seed}.npz"
        info = pseudolabel(teacher.out / "model.safetensors", unlabeled, transforms=transforms, out=path,
                           overwrite=True, quiet=b.quiet)
        labels = PseudoLabels.load(path)
        student = train(data=labelled, model=r["model"], pseudo=path, out=b.run_dir("omni-mnist", f"{name}-{seed}"),
                        quiet=b.quiet, seed=seed, **r["student"])
        result[name] = {**figures_of(student.metrics), "views": info["views"],
                        "pseudo_label_accuracy": float((labels.labels == truth[labels.index]).float().mean()),
                        "pseudolabel_seconds": info["wall_seconds"]}
    result["wall_seconds"] = round(time.time() - t0, 1)
    return result


@benchmark("omni-mnist")
def bench_omni_mnist(b: Bench) -> dict:
    """Radosavovic et al. 2018 on MNIST: 1,000 labelled + 59,000 unlabeled images; rows: labelled only,
    single-pass pseudo-labels, multi-transform pseudo-labels (each seed's own teacher); target: that order."""
    r = omni_recipe(b.quick)
    files = prepare_data(b.out, b.quick)
    cells = [(seed,) for seed in r["seeds"]]
    done = b.cells("omni-mnist", _omni_cell, cells, recipe_of=lambda cell: {**r, "seed": cell[0]})
    runs = [done[c] for c in cells]
    result = {}
    for key in ROWS:
        result[key] = {"test_accuracy": summarise([run[key]["test_accuracy"] for run in runs]),
                       "test_errors": summarise([run[key]["test_errors"] for run in runs])}
        if key != "labelled_only":
            result[key]["pseudo_label_accuracy"] = summarise([run[key]["pseudo_label_accuracy"] for run in runs])
    means = [result[key]["test_accuracy"]["mean"] for key in ROWS]
    result["order_reproduced"] = means[0] < means[1] < means[2]
    result["seeds_in_order"] = sum(run["labelled_only"]["test_accuracy"] < run["single"]["test_accuracy"]
                                   < run["multi"]["test_accuracy"] for run in runs)
    truth = data_mod.read_npz(files["truth"])["y"]
    labelled = data_mod.read_npz(files["labelled"])
    result["recipe"] = {**r, "labelled_images": int(len(labelled["y"])), "unlabeled_images": int(len(truth)),
                        "test_images": int(len(labelled["y_test"])), "mixing": "6:4 labelled:pseudo rows per batch",
                        "threshold": "0 (every unlabeled image keeps its label)"}
    result["per_seed"] = {str(c[0]): done[c] for c in cells}
    result["cells_seconds"] = cells_total_seconds(done)
    result["target"] = "labelled only < single-pass < multi-transform (the published order)"
    rows = [(label, pm(result[key]["test_accuracy"], 100, "%"),
             pm(result[key]["pseudo_label_accuracy"], 100, "%") if key != "labelled_only" else "-")
            for key, label in ROWS.items()]
    result["markdown"] = table(["training data", "test accuracy (mean +- std)", "pseudo-label accuracy"], rows)
    return to_jsonable(result)
