"""Audit benchmarks: poison-mnist (Wang et al. 2018's poisoning by distilled images, and whether the audits flag
it) and privacy-mnist (memorisation and membership inference on condensed sets against random real subsets)."""

from __future__ import annotations

import json
import time
from pathlib import Path


from ..api import audit
from ..condense import BPTT, condense
from ..condense.methods.bptt import train_with_schedule
from ..training import predict_logits
from .common import Bench, benchmark, cells_total_seconds, table
from .dd import dd_splits

POISON_SOURCE, POISON_TARGET = 3, 8  # real 3s to be taken for 8s
POISON_REFERENCE = "lenet5"          # the trusted model of the labels and class-stats audits (bench/common.py TEACHERS)


def _poison_recipe(quick: bool, init: str, kind: str) -> dict:
    """The clean and the poisoned set share every option but the attack. Full: Wang et al.'s fixed-init MNIST
    setting (the attacker knows the victim's initialisation): a Xavier LeNet-5, 10 images taken by one step
    repeated for 3 epochs, as bench wang2018 makes it, on a smaller budget (2,000 outer iterations); the images
    start from noise (as Wang et al.'s) or from real images (which a trusted model can still read)."""
    attack = f"source:{POISON_SOURCE},target:{POISON_TARGET}" if kind == "poisoned" else ""
    if quick:
        cfg = BPTT(iterations=200, steps=1, epochs=3, batch_real=256, init_net="fixed", model="mlp:hidden=64",
                   init=init, lr_img=0.05, lr_init=0.1, attack=attack)
    else:
        cfg = BPTT(iterations=2000, steps=1, epochs=3, batch_real=1024, init_net="fixed", model="lenet5:init=xavier",
                   lr_decay_every=400, lr_decay=0.5, init=init, attack=attack)
    return {"ipc": 1, "bptt": cfg, "reference": POISON_REFERENCE, "audits": ["labels", "class-stats", "confusion"]}


def _poison_cell(out: Path, quick: bool, init: str, kind: str) -> dict:
    b = Bench(out, quick)
    r = _poison_recipe(quick, init, kind)
    cfg = r["bptt"]
    splits = dd_splits(b)
    started = time.time()
    synset = condense(splits.train_set(), cfg, r["ipc"], seed=0)
    condense_seconds = time.time() - started
    path = b.work / "poison-mnist" / "cells" / f"{init}-{kind}.safetensors"
    synset.save(path)
    victim = train_with_schedule(cfg.model, splits.input_shape, splits.num_classes, synset, init_state=synset.init_state)
    pred = predict_logits(victim, splits.test.x).argmax(1)
    y = splits.test.y
    source, others = y == POISON_SOURCE, y != POISON_SOURCE
    report = audit(path, reference=b.teacher(r["reference"]), audits=r["audits"],
                   out=b.run_dir("poison-mnist", f"audit-{init}-{kind}"), quiet=True)
    findings = json.loads((report.out / "audit.json").read_text())["audits"]
    return {"images": len(synset.labels), "condense_seconds": round(condense_seconds, 1),
            "test_accuracy": float((pred == y).float().mean()),
            "attack_success": float((pred[source] == POISON_TARGET).float().mean()),
            "source_recall": float((pred[source] == POISON_SOURCE).float().mean()),
            "other_classes_accuracy": float((pred[others] == y[others]).float().mean()),
            "flagged_by": [n for n, f in findings.items() if f["flagged"]],
            "audits": {n: {"flagged": f["flagged"], "summary": f["summary"]} for n, f in findings.items()},
            "wall_seconds": round(time.time() - started, 1)}


POISON_CELLS = [(init, kind) for init in ("noise", "real") for kind in ("clean", "poisoned")]


@benchmark("poison-mnist")
def bench_poison_mnist(b: Bench) -> dict:
    """Clean and poisoned BPTT sets (real 3 -> 8) from noise and from real images, the victim network each trains,
    and each audit's verdict: an audit separates when it flags the poisoned set and not the clean one."""
    b.teacher(POISON_REFERENCE)  # trained once here, before the cells share it
    done = b.cells("poison-mnist", _poison_cell, POISON_CELLS, recipe_of=lambda cell: _poison_recipe(b.quick, *cell))
    result = {"sets": {f"{init}-{kind}": done[(init, kind)] for init, kind in POISON_CELLS},
              "source": POISON_SOURCE, "target": POISON_TARGET,
              "recipe": {f"{i}-{k}": _poison_recipe(b.quick, i, k) for i, k in POISON_CELLS},
              "cells_total_seconds": cells_total_seconds(done)}
    names = list(done[POISON_CELLS[0]]["audits"])
    result["separates"] = {init: {n: done[(init, "poisoned")]["audits"][n]["flagged"]
                                  and not done[(init, "clean")]["audits"][n]["flagged"] for n in names}
                           for init in ("noise", "real")}
    rows = [(f"{kind}, from {init}", f"{100 * r['test_accuracy']:.1f}", f"{100 * r['attack_success']:.1f}",
             f"{100 * r['other_classes_accuracy']:.1f}", ", ".join(r["flagged_by"]) or "nothing")
            for (init, kind), r in ((c, done[c]) for c in POISON_CELLS)]
    result["markdown"] = table(["set", "victim test accuracy %", f"real {POISON_SOURCE} taken for {POISON_TARGET} %",
                                f"accuracy on classes other than {POISON_SOURCE} %", "flagged by"], rows)
    return result


# --------------------------------------------------------------------------------------------------------------
# privacy-mnist

PRIVACY_RECIPES = {
    # the audited DM set: a smaller condensing model and budget than dd-mnist's, since every shadow reruns it
    "quick": {"dm": "dm:model=[convnet:width=4,depth=2],iterations=5,batch_real=16",
              "membership": "membership:shadows=2,model=[convnet:width=4,depth=2],epochs=20,bootstrap=50",
              "fpr": [0.05, 0.1], "ipcs": [2, 5]},
    "full": {"dm": "dm:model=[convnet:width=32,depth=3],iterations=200,batch_real=64",
             "membership": "membership:shadows=8,model=[convnet:width=16,depth=3],epochs=300,bootstrap=200",
             "fpr": [0.001, 0.01], "ipcs": [10, 50]},
}


def _privacy_recipe(quick: bool, ipc: int) -> dict:
    r = PRIVACY_RECIPES["quick" if quick else "full"]
    return {"ipc": ipc, "dm": r["dm"], "membership": r["membership"], "fpr": r["fpr"], "seed": 0}


def _privacy_cell(out: Path, quick: bool, ipc: int) -> dict:
    """A DM set and a random real subset of the same size, saved; membership inference on the DM set beside a
    random subset (the audit plays both games: its own random subset is the control)."""
    b = Bench(out, quick)
    r = _privacy_recipe(quick, ipc)
    splits = dd_splits(b)
    started = time.time()
    seconds = {}
    for name, method in (("dm", r["dm"]), ("random", "random")):
        synset = condense(splits.train_set(), method, ipc, seed=r["seed"])
        synset.save(_privacy_set(b, name, ipc))
        seconds[name] = synset.meta["budget"]["condense_seconds"]
    report = audit(_privacy_set(b, "dm", ipc), audits=[r["membership"]], fpr=r["fpr"],
                   out=b.run_dir("privacy-mnist", f"audit-dm-{ipc}"), quiet=True)
    membership = json.loads((report.out / "audit.json").read_text())["audits"]["membership"]
    return {"ipc": ipc, "membership": membership, "condense_seconds": seconds,
            "wall_seconds": round(time.time() - started, 1)}


def _privacy_set(b: Bench, name: str, ipc: int) -> Path:
    return b.work / "privacy-mnist" / "cells" / f"{name}-{ipc}.safetensors"


def _memorisation(b: Bench, name: str, ipc: int) -> dict:
    """The memorisation audit of a cell's saved set (seconds: it runs here, not in the cell)."""
    report = audit(_privacy_set(b, name, ipc), audits=["memorisation"],
                   out=b.run_dir("privacy-mnist", f"memorisation-{name}-{ipc}"), quiet=True)
    return json.loads((report.out / "audit.json").read_text())["audits"]["memorisation"]


@benchmark("privacy-mnist")
def bench_privacy_mnist(b: Bench) -> dict:
    """DM and a random real subset at two IPCs: near copies of training images, and membership inference (loss
    attack, LiRA with shadow sets re-made by each producer) read as AUC and TPR at low FPR with 95% intervals."""
    ipcs = PRIVACY_RECIPES["quick" if b.quick else "full"]["ipcs"]
    done = b.cells("privacy-mnist", _privacy_cell, [(ipc,) for ipc in ipcs],
                   recipe_of=lambda cell: _privacy_recipe(b.quick, *cell), partial_ok=True)
    for (ipc,), r in done.items():
        r["memorisation"] = {name: _memorisation(b, name, ipc) for name in ("dm", "random")}
    result = {"cells": {str(cell[0]): r for cell, r in done.items()},
              "recipe": {str(ipc): _privacy_recipe(b.quick, ipc) for ipc in ipcs},
              "cells_total_seconds": cells_total_seconds(done)}
    rows = []
    for (ipc,), r in sorted(done.items()):
        m = r["membership"]
        low, high = (f"{f:g}" for f in m["fpr"][:2]) if len(m["fpr"]) > 1 else (f"{m['fpr'][0]:g}",) * 2
        for name, producer in (("dm", "synset"), ("random", "random_subset")):
            mem = r["memorisation"][name]
            cells = [f"{name}", str(ipc), f"{100 * m[producer]['test_accuracy']:.1f}",
                     f"{len(mem['copies'])} / {mem['images']}",
                     f"{100 * mem['nearer_training_sample']['fraction']:.0f}"]
            for attack in ("loss", "lira"):
                a = m[producer][attack]
                cells += (["not run"] * 3 if a is None else
                          [f"{a['auc']:.3f} [{a['auc_ci'][0]:.3f}, {a['auc_ci'][1]:.3f}]",
                           f"{100 * a['tpr_at'][low]:.2f} [{100 * a['tpr_ci'][low][0]:.2f}, "
                           f"{100 * a['tpr_ci'][low][1]:.2f}]",
                           f"{100 * a['tpr_at'][high]:.2f}"])
            rows.append(cells)
    fprs = PRIVACY_RECIPES["quick" if b.quick else "full"]["fpr"]
    result["markdown"] = table(["set", "IPC", "target test acc %", "near copies", "nearer training sample %",
                                "loss AUC [95% CI]", f"loss TPR % at {100 * fprs[0]:g}% FPR [CI]",
                                f"at {100 * fprs[-1]:g}%", "LiRA AUC [95% CI]",
                                f"LiRA TPR % at {100 * fprs[0]:g}% FPR [CI]", f"at {100 * fprs[-1]:g}%"], rows)
    return result
