"""Benchmarks: the papers' tables as runnable code (``distillab bench NAME [--quick]``).

Each benchmark writes OUT/NAME.json (figures) and OUT/NAME.md (a Markdown table), and records the command,
the machine and the wall time. ``--quick`` runs the same code path on digits in seconds (the test suite runs it);
the full version is the one whose results go in docs/benchmarks.md.
Teachers are trained once per OUT folder and reused by later benchmarks (OUT/teachers/).
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from . import __version__
from .api import distill, log, predict, summarise_runs, train
from .errors import require
from .outputs import peak_rss_mb, to_jsonable

HINTON_PAPER = {"teacher": 67, "student_alone": 146, "student_kd": 74}


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "distillab": __version__}


class Bench:
    """Shared plumbing: a work folder, reusable teachers, resumable cells, quiet runs."""

    def __init__(self, out: Path, quick: bool, workers: int = 1):
        require(workers >= 1, f"--workers must be at least 1, got {workers}")
        self.out, self.quick, self.workers = Path(out), quick, workers
        self.work = self.out / ("work-quick" if quick else "work")
        self.work.mkdir(parents=True, exist_ok=True)

    def cells(self, name: str, fn, cells: list[tuple], recipe_of) -> dict:
        """Run ``fn(out, quick, *cell)`` for every cell (independent pieces of one benchmark) and return
        {cell: result}.

        Each finished cell is kept as work/NAME/cells/<cell>.json together with ``recipe_of(cell)``, everything
        its result depends on, so a killed run resumes where it stopped and a cell whose recipe changed runs again
        (only that cell: keep unrelated settings out of its recipe). With ``workers > 1`` the
        missing cells run in that many processes (spawned, ``cpus // workers`` torch threads each), started in the
        given order.
        """
        folder = self.work / name / "cells"
        folder.mkdir(parents=True, exist_ok=True)

        def path(cell):
            return folder / ("-".join(str(c) for c in cell) + ".json")

        results = {cell: _kept_result(path(cell), recipe_of(cell)) for cell in cells}
        todo = [cell for cell in cells if results[cell] is None]
        if todo and self.workers == 1:
            for cell in todo:
                results[cell] = _run_cell(fn, self.out, self.quick, cell, path(cell), recipe_of(cell))
        elif todo:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=torch.set_num_threads, initargs=(threads,)) as pool:
                futures = {cell: pool.submit(_run_cell, fn, self.out, self.quick, cell, path(cell), recipe_of(cell))
                           for cell in todo}
                for cell, future in futures.items():
                    results[cell] = future.result()
        return results

    @property
    def data(self) -> str:
        return "digits" if self.quick else "mnist"

    def run_dir(self, *parts) -> Path:
        path = self.work.joinpath(*parts)
        if path.exists():
            import shutil
            shutil.rmtree(path)
        return path

    def teacher(self, key: str, **kwargs) -> Path:
        """Train a teacher once per OUT folder (keyed by name and recipe); later benchmarks reuse it."""
        folder = self.out / "teachers" / ("quick-" if self.quick else "") / key
        path = folder / "model.safetensors"
        recipe = json.dumps(to_jsonable(kwargs), sort_keys=True)
        if path.exists() and (folder / "recipe.json").exists() and (folder / "recipe.json").read_text() == recipe:
            return path
        log(f"  training teacher {key}: {kwargs.get('model')}", False)
        train(data=self.data, out=folder, overwrite=True, quiet=True, **kwargs)
        (folder / "recipe.json").write_text(recipe)
        return path


def _kept_result(path: Path, recipe: dict) -> dict | None:
    """The result kept at ``path`` if it was made with this recipe, else None."""
    if path.exists():
        saved = json.loads(path.read_text())
        if json.dumps(saved.get("recipe"), sort_keys=True) == json.dumps(to_jsonable(recipe), sort_keys=True):
            return saved["result"]
    return None


def _run_cell(fn, out: Path, quick: bool, cell: tuple, path: Path, recipe: dict) -> dict:
    """Run one cell and keep its result at once (in the worker), whole or not at all.

    A cell that another process (a second run on the same OUT) finished meanwhile is not run again.
    """
    kept = _kept_result(path, recipe)
    if kept is not None:
        return kept
    result = fn(out, quick, *cell)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(to_jsonable({"recipe": recipe, "result": result}), indent=2) + "\n")
    tmp.replace(path)
    return result


def _cells_total_seconds(done: dict) -> float:
    """What a benchmark made of kept cells cost: a resumed run's own wall time is only its last part."""
    return round(sum(result["wall_seconds"] for result in done.values()), 1)


def _figures(metrics: dict) -> dict:
    return {"test_errors": metrics["test_errors"], "test_accuracy": metrics["test_accuracy"],
            "val_accuracy": metrics["val_accuracy"], "wall_seconds": metrics["wall_seconds"]}


def _summary(runs: list[dict], key: str = "test_accuracy") -> dict:
    return summarise_runs([r[key] for r in runs])


# --------------------------------------------------------------------------------------------------------------
# hinton-mnist


def bench_hinton_mnist(b: Bench) -> dict:
    """Hinton et al. 2015, MNIST: 1200-1200 teacher, 800-800 student alone and distilled at T=20."""
    if b.quick:
        teacher_model, student = "mlp:hidden=128-128,dropout=0.3", "mlp:hidden=32-32"
        t_opts = dict(epochs=15, augment="shift:1", lr=0.05, batch_size=64)
        s_opts = dict(epochs=15, lr=0.05, batch_size=64)
    else:
        teacher_model, student = "mlp:hidden=1200-1200,dropout=0.5,input_dropout=0.2", "mlp:hidden=800-800"
        t_opts = dict(epochs=50, augment="shift:2", lr=0.05, max_norm=3.5, batch_size=128, weight_decay=0.0)
        s_opts = dict(epochs=40, lr=0.05, batch_size=128, weight_decay=0.0)
    teacher = b.teacher("hinton-1200", model=teacher_model, **t_opts)
    from .files import read_meta
    t_meta = read_meta(teacher)
    t_eval = _evaluate(teacher, b.data)
    alone = train(data=b.data, model=student, out=b.run_dir("hinton", "alone"), quiet=True, **s_opts)
    # T^2 * KL at T=20 has gradients up to ~(z_s - z_t)/C, larger than CE's: at lr 0.05 with momentum 0.9 the
    # 800-800 student diverged in its first epoch here, so distillation runs use lr 0.03 (as in REFERENCE.md's run)
    kd_opts = dict(s_opts, epochs=s_opts["epochs"] + (0 if b.quick else 20), lr=0.03)
    kd = distill(data=b.data, teacher=teacher, student=student, temperature=20.0, alpha=0.9,
                 out=b.run_dir("hinton", "kd"), quiet=True, **kd_opts)
    kd_jitter = distill(data=b.data, teacher=teacher, student=student, temperature=20.0, alpha=0.9,
                        out=b.run_dir("hinton", "kd-jitter"), quiet=True, augment="shift:2" if not b.quick else "shift:1",
                        **{k: v for k, v in kd_opts.items() if k != "augment"})
    result = {
        "teacher": t_eval, "student_alone": _figures(alone.metrics), "student_kd": _figures(kd.metrics),
        "student_kd_jitter_transfer": _figures(kd_jitter.metrics),
        "paper_test_errors": HINTON_PAPER, "target_student_kd_errors": 74, "stretch_student_kd_errors": 65,
        "recipe": {"teacher": teacher_model, "teacher_options": t_opts, "teacher_recipe": t_meta.get("recipe"),
                   "student": student, "student_options": s_opts, "kd": "0.9 * T^2 KL(T=20) + 0.1 CE", "kd_options": kd_opts,
                   "student_kd": "transfer set = training set without jitter (cached teacher outputs), as in the paper",
                   "student_kd_jitter_transfer": "same, but the transfer set is jittered +-2 px (live teacher)"},
    }
    if not b.quick:
        best = min(kd.metrics["test_errors"], kd_jitter.metrics["test_errors"])
        result["target_met"] = best <= 74
    rows = [(f"teacher `{teacher_model}`", t_eval["test_errors"], HINTON_PAPER["teacher"]),
            (f"student `{student}` alone", alone.metrics["test_errors"], HINTON_PAPER["student_alone"]),
            ("student distilled, T=20", kd.metrics["test_errors"], HINTON_PAPER["student_kd"]),
            ("student distilled, T=20, jittered transfer set", kd_jitter.metrics["test_errors"], "-")]
    result["markdown"] = _table(["model", "test errors (ours)", "test errors (paper)"], rows)
    return result


def _evaluate(model_path: Path, data: str) -> dict:
    from .api import evaluate_model
    m = evaluate_model(model_path, data, write=False).metrics
    return {"test_errors": m["test_errors"], "test_accuracy": m["test_accuracy"], "val_accuracy": m["val_accuracy"]}


# --------------------------------------------------------------------------------------------------------------
# ls-teacher


def bench_ls_teacher(b: Bench) -> dict:
    """Mueller et al. 2019: a label-smoothed teacher is better alone but teaches worse (logit matching)."""
    seeds = [0, 1] if b.quick else [0, 1, 2]
    if b.quick:
        teacher_model, student = "mlp:hidden=128-128", "mlp:hidden=32-32"
        t_opts = dict(epochs=15, augment="shift:1", batch_size=64)
        s_opts = dict(epochs=12, batch_size=64, lr=0.01)
    else:
        teacher_model, student = "mlp:hidden=1200-1200", "mlp:hidden=800-800"
        t_opts = dict(epochs=30, augment="shift:2", batch_size=128)
        s_opts = dict(epochs=25, batch_size=128, lr=0.005)
    teachers = {
        "dropout": b.teacher("ls-dropout", model=teacher_model + (",dropout=0.5" if not b.quick else ",dropout=0.3"),
                             **t_opts),
        "label_smoothing": b.teacher("ls-smoothed", model=teacher_model, label_smoothing=0.1, **t_opts),
    }
    result, rows = {}, []
    for name, path in teachers.items():
        t_eval = _evaluate(path, b.data)
        runs = []
        for seed in seeds:
            with _quiet_warnings():
                r = distill(data=b.data, teacher=path, student=student, losses=["ce:w=0.4", "logit-mse:w=0.6"],
                            out=b.run_dir("ls", f"{name}-{seed}"), quiet=True, seed=seed, **s_opts)
            runs.append(r.metrics)
        summary = {"teacher": t_eval, "student_test_accuracy": _summary(runs),
                   "student_test_error_percent": summarise_runs([100 * (1 - r["test_accuracy"]) for r in runs])}
        result[name] = summary
        rows.append((name, f"{100 * (1 - t_eval['test_accuracy']):.2f}%",
                     _pm(summary["student_test_error_percent"], suffix="%")))
    result["paper_error_percent"] = {"dropout": {"teacher": 0.67, "student": 0.74},
                                     "label_smoothing": {"teacher": 0.59, "student": 0.91}}
    result["direction_reproduced"] = {
        "ls_teacher_better_alone": result["label_smoothing"]["teacher"]["test_accuracy"] >= result["dropout"]["teacher"]["test_accuracy"],
        "ls_student_worse": result["label_smoothing"]["student_test_accuracy"]["mean"] < result["dropout"]["student_test_accuracy"]["mean"]}
    result["recipe"] = {"teacher": teacher_model, "teacher_options": t_opts, "student": student, "student_options": s_opts,
                        "loss": "0.4 CE + 0.6 * 1/2 ||z_s - z_t||^2", "seeds": seeds}
    result["markdown"] = _table(["teacher", "teacher test error", "student test error (mean +- std)"], rows)
    return result


class _quiet_warnings:
    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _pm(summary: dict, scale: float = 1.0, suffix: str = "", digits: int = 2) -> str:
    return f"{summary['mean'] * scale:.{digits}f} +- {summary['std'] * scale:.{digits}f}{suffix}"


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# kd-losses


def bench_kd_losses(b: Bench) -> dict:
    """Kim et al. 2021: CE, KL at several T, logit MSE, and black-box variants, one cached teacher, equal epochs."""
    seeds = [0, 1] if b.quick else [0, 1, 2]
    if b.quick:
        teacher = b.teacher("hinton-1200", model="mlp:hidden=128-128,dropout=0.3", epochs=15, augment="shift:1",
                            lr=0.05, batch_size=64)
        student, s_opts = "mlp:hidden=32-32", dict(epochs=10, batch_size=64, lr=0.05)
        temps = [1, 4, 20]
    else:
        teacher = b.teacher("hinton-1200", model="mlp:hidden=1200-1200,dropout=0.5,input_dropout=0.2", epochs=50,
                            augment="shift:2", lr=0.05, max_norm=3.5, batch_size=128, weight_decay=0.0)
        student, s_opts = "mlp:hidden=300-300", dict(epochs=20, batch_size=128, lr=0.03)  # lr 0.05 diverged at T=20
        temps = [1, 2, 4, 8, 20]
    probs = b.work / "kd-losses-probs.npz"
    top5 = b.work / "kd-losses-top5.npz"
    predict(teacher, b.data, split="train", output="probs", out=probs, quiet=True)
    predict(teacher, b.data, split="train", output="probs", top_k=5, out=top5, quiet=True)
    configs = {"ce": dict(losses=["ce"])}
    for t in temps:
        configs[f"kl_T{t}"] = dict(losses=[f"kd:T={t}"])
    configs["logit_mse"] = dict(losses=["logit-mse:reduce=mean"])
    configs["blackbox_centred_logprob"] = dict(losses=["logit-mse:center=1,reduce=mean"], teacher_outputs=probs)
    configs["blackbox_top5_kl_T4"] = dict(losses=["kd:T=4"], teacher_outputs=top5)
    result, rows = {}, []
    for name, cfg in configs.items():
        runs = []
        for seed in seeds:
            kwargs = dict(cfg)
            if name == "ce":
                r = train(data=b.data, model=student, out=b.run_dir("kd-losses", f"{name}-{seed}"), quiet=True,
                          seed=seed, **s_opts)
            else:
                if "teacher_outputs" not in kwargs:
                    kwargs["teacher"] = teacher
                r = distill(data=b.data, student=student, out=b.run_dir("kd-losses", f"{name}-{seed}"), quiet=True,
                            seed=seed, **kwargs, **s_opts)
            runs.append(r.metrics)
        result[name] = _summary(runs)
        rows.append((name, ", ".join(cfg["losses"]), _pm(result[name], 100, "%")))
    result["teacher"] = _evaluate(teacher, b.data)
    result["recipe"] = {"student": student, "student_options": s_opts, "seeds": seeds,
                        "note": "no hard-label CE in the distillation runs (alpha = 1), as in Kim et al.'s main runs"}
    kl_large = max(result[f"kl_T{t}"]["mean"] for t in temps if t >= 4)
    result["direction"] = {"logit_mse_ge_kl_large_T": result["logit_mse"]["mean"] >= kl_large,
                           "kl_large_T_gt_kl_T1": kl_large > result["kl_T1"]["mean"],
                           "blackbox_equals_logit_mse_within_noise":
                               abs(result["blackbox_centred_logprob"]["mean"] - result["logit_mse"]["mean"])
                               <= 2 * max(result["logit_mse"]["std"], result["blackbox_centred_logprob"]["std"], 1e-3)}
    result["markdown"] = _table(["configuration", "losses", "test accuracy (mean +- std)"], rows)
    return result


# --------------------------------------------------------------------------------------------------------------
# takd


def bench_takd(b: Bench) -> dict:
    """Mirzadeh et al. 2020: a teacher assistant bridges a large capacity gap (MLP widths on MNIST)."""
    seeds = [0, 1] if b.quick else [0, 1, 2]
    if b.quick:
        teacher = b.teacher("hinton-1200", model="mlp:hidden=128-128,dropout=0.3", epochs=15, augment="shift:1",
                            lr=0.05, batch_size=64)
        ta, widths, s_opts = "mlp:hidden=64-64", [8, 4], dict(epochs=10, batch_size=64, lr=0.05)
    else:
        teacher = b.teacher("hinton-1200", model="mlp:hidden=1200-1200,dropout=0.5,input_dropout=0.2", epochs=50,
                            augment="shift:2", lr=0.05, max_norm=3.5, batch_size=128, weight_decay=0.0)
        ta, widths, s_opts = "mlp:hidden=300-300", [30, 10], dict(epochs=20, batch_size=128, lr=0.05)
    kd_opts = dict(temperature=4.0, alpha=0.9)
    result, rows = {"teacher": _evaluate(teacher, b.data)}, []
    per = {f"{kind}_{w}": [] for w in widths for kind in ("alone", "direct", "via_ta")}
    for seed in seeds:
        ta_run = distill(data=b.data, teacher=teacher, student=ta, out=b.run_dir("takd", f"ta-{seed}"), quiet=True,
                         seed=seed, **kd_opts, **s_opts)
        ta_path = ta_run.out / "model.safetensors"
        for w in widths:
            spec = f"mlp:hidden={w}-{w}"
            per[f"alone_{w}"].append(train(data=b.data, model=spec, out=b.run_dir("takd", f"alone-{w}-{seed}"),
                                           quiet=True, seed=seed, **s_opts).metrics)
            per[f"direct_{w}"].append(distill(data=b.data, teacher=teacher, student=spec, quiet=True, seed=seed,
                                              out=b.run_dir("takd", f"direct-{w}-{seed}"), **kd_opts, **s_opts).metrics)
            per[f"via_ta_{w}"].append(distill(data=b.data, teacher=ta_path, student=spec, quiet=True, seed=seed,
                                              out=b.run_dir("takd", f"ta-{w}-{seed}"), **kd_opts, **s_opts).metrics)
    for key, runs in per.items():
        result[key] = _summary(runs)
    for w in widths:
        rows.append((f"{w}-{w}", _pm(result[f"alone_{w}"], 100, "%"), _pm(result[f"direct_{w}"], 100, "%"),
                     _pm(result[f"via_ta_{w}"], 100, "%")))
    result["recipe"] = {"teacher": str(teacher), "assistant": ta, "students": [f"mlp:hidden={w}-{w}" for w in widths],
                        "kd": kd_opts, "student_options": s_opts, "seeds": seeds}
    result["markdown"] = _table(["student", "alone (NOKD)", "KD from teacher", f"KD via assistant {ta}"], rows)
    return result


# --------------------------------------------------------------------------------------------------------------
# rkd


def bench_rkd(b: Bench) -> dict:
    """Park et al. 2019: relational KD on the penultimate features, ConvNet teacher -> small ConvNet student."""
    seeds = [0, 1] if b.quick else [0, 1, 2]
    if b.quick:
        teacher = b.teacher("convnet", model="convnet:width=16,depth=2", epochs=10, batch_size=64)
        student, s_opts = "convnet:width=4,depth=2", dict(epochs=5, batch_size=64)
    else:
        teacher = b.teacher("convnet", model="convnet:width=32", epochs=3, batch_size=128)
        student, s_opts = "convnet:width=8,depth=2", dict(epochs=3, batch_size=128)
    configs = {"ce": ["ce"], "ce+rkd": ["ce", "rkd:distance=25,angle=50"], "ce+kd": ["ce:w=0.1", "kd:T=4,w=0.9"],
               "ce+kd+rkd": ["ce:w=0.1", "kd:T=4,w=0.9", "rkd:distance=25,angle=50"]}
    result, rows = {"teacher": _evaluate(teacher, b.data)}, []
    for name, losses in configs.items():
        runs = [distill(data=b.data, teacher=teacher, student=student, losses=losses, quiet=True, seed=seed,
                        out=b.run_dir("rkd", f"{name}-{seed}"), **s_opts).metrics for seed in seeds]
        result[name] = _summary(runs)
        rows.append((name, ", ".join(losses), _pm(result[name], 100, "%")))
    result["recipe"] = {"teacher": str(teacher), "student": student, "student_options": s_opts, "seeds": seeds,
                        "taps": "penultimate (input of the final linear layer) on both sides"}
    result["markdown"] = _table(["losses", "terms", "test accuracy (mean +- std)"], rows)
    return result


# --------------------------------------------------------------------------------------------------------------
# kd-speed


def bench_kd_speed(b: Bench) -> dict:
    """Epoch time of KD with a cached teacher vs the student alone (target <= 1.15), and with a live teacher."""
    from . import data as data_mod
    from .api import load_teacher_model
    from .kd import Distillation, ModelTeacher, cache_teacher, hinton_losses
    from .models import build_model
    from .training import TrainConfig, fit

    if b.quick:
        teacher_path = b.teacher("hinton-1200", model="mlp:hidden=128-128,dropout=0.3", epochs=15,
                                 augment="shift:1", lr=0.05, batch_size=64)
        student, epochs = "mlp:hidden=32-32", 2
    else:
        teacher_path = b.teacher("hinton-1200", model="mlp:hidden=1200-1200,dropout=0.5,input_dropout=0.2", epochs=50,
                                 augment="shift:2", lr=0.05, max_norm=3.5, batch_size=128, weight_decay=0.0)
        student, epochs = "mlp:hidden=800-800", 2
    splits = data_mod.split(data_mod.load(b.data))
    teacher_model, _ = load_teacher_model(teacher_path, splits)
    live = ModelTeacher(teacher_model)
    t0 = time.perf_counter()
    cached = cache_teacher(live, splits.train.x)
    cache_seconds = time.perf_counter() - t0
    cfg = TrainConfig(epochs=epochs, batch_size=128, lr=0.05)

    def epoch_seconds(objective):
        net = build_model(student, splits.input_shape, splits.num_classes)
        res = fit(net, splits, cfg, objective=objective, progress=False)
        return min(h["seconds"] for h in res.history)  # best epoch: least disturbed by other work

    timings = {"alone": [], "cached": [], "live": []}
    for _ in range(2 if b.quick else 3):  # interleaved, so drift in machine load hits all three alike
        timings["alone"].append(epoch_seconds(None))
        timings["cached"].append(epoch_seconds(Distillation(cached, hinton_losses(4.0, 0.9))))
        timings["live"].append(epoch_seconds(Distillation(live, hinton_losses(4.0, 0.9))))
    best = {k: min(v) for k, v in timings.items()}
    n = len(splits.train)
    result = {"epoch_seconds": best, "all_epoch_seconds": timings,
              "images_per_second": {k: round(n / v, 1) for k, v in best.items()},
              "cached_over_alone": round(best["cached"] / best["alone"], 3),
              "live_over_alone": round(best["live"] / best["alone"], 3), "target_cached_over_alone": 1.15,
              "cache_build_seconds": round(cache_seconds, 2), "student": student, "teacher": str(teacher_path),
              "train_images": n, "note": "epoch time includes the validation pass; best of the interleaved repeats"}
    result["target_met"] = result["cached_over_alone"] <= 1.15
    rows = [(k, f"{best[k]:.2f}", f"{n / best[k]:.0f}", f"{best[k] / best['alone']:.3f}") for k in best]
    result["markdown"] = _table(["student training", "epoch seconds", "images / s", "time / alone"], rows)
    return result


# --------------------------------------------------------------------------------------------------------------
# Dataset distillation


def _dd_splits(b: Bench):
    from . import data as data_mod
    return data_mod.split(data_mod.load(b.data))


def _dd_eval(b: Bench, splits, synset, specs, runs, epochs, dsa: bool, vectorise=False):
    from .dsa import DSA
    from .evaluation import Protocol, evaluate_images

    augment = DSA(allow_flip=splits.input_shape[0] == 3) if dsa else None
    targets = synset.labels if synset.label_logits is None else synset.targets()
    return evaluate_images(synset.images, targets, splits.test, specs, runs, Protocol(epochs=epochs, dsa=dsa),
                           seed=0, dsa=augment, vectorise=vectorise, num_classes=splits.num_classes)


def _dd_mnist_recipe(quick: bool):
    from .bptt import BPTTConfig
    from .condense import DMConfig
    if quick:
        return dict(ipcs=[1, 2], eval_spec="convnet:width=16,depth=2", runs=2, epochs=20,
                    dm=DMConfig(iterations=10, batch_real=32, model="convnet:width=16,depth=2"),
                    bptt=BPTTConfig(iterations=10, steps=5, epochs=1, batch_real=256, model="convnet:width=16,depth=2",
                                    init_net="random"))
    return dict(ipcs=[1, 10], eval_spec="convnet:width=128,depth=3", runs=5, epochs=300,
                # 64 real images per class (not the paper's 256) and 600 iterations keep a DM cell, condensing (~3 s per
                # iteration on one AVX2 core) plus evaluating, within one CPU hour
                dm=DMConfig(iterations=600, batch_real=64, model="convnet:width=128,depth=3"),
                # the protocol trains fresh models, so the set must work from any initialisation: init_net random
                bptt=BPTTConfig(iterations=300, steps=10, epochs=3, batch_real=1024, model="convnet:width=32,depth=3",
                                init_net="random"))


def _dd_mnist_cell_recipe(r: dict, method: str, ipc: int) -> dict:
    """What one cell's result depends on: the protocol, and the method's own settings."""
    return {"method": method, "ipc": ipc, "seed": 0, "config": r.get(method),
            "protocol": {k: r[k] for k in ("eval_spec", "runs", "epochs")} | {"dsa": True}}


def _dd_mnist_cell(out: Path, quick: bool, method: str, ipc: int) -> dict:
    """One (method, IPC) cell of dd-mnist: condense, keep the set, evaluate it by the protocol."""
    from .condense import condense
    from .dsa import DSA

    b = Bench(out, quick)
    r = _dd_mnist_recipe(quick)
    splits = _dd_splits(b)
    t0 = time.time()
    synset = condense(splits, method, ipc, seed=0, dm=r["dm"], bptt=r["bptt"],
                      augment=DSA(allow_flip=False) if method == "dm" else None)
    condense_seconds = time.time() - t0
    synset.save(b.work / "dd-mnist" / "cells" / f"{method}-{ipc}.safetensors")
    e = _dd_eval(b, splits, synset, [r["eval_spec"]], r["runs"], r["epochs"], dsa=True)[r["eval_spec"]]
    return {"mean": e["mean"], "std": e["std"], "runs": e["runs"], "wall_seconds": round(time.time() - t0, 1),
            "condense_seconds": round(condense_seconds, 1), "torch_threads": torch.get_num_threads()}


DD_METHODS = ("random", "herding", "kmeans", "mean", "dm", "bptt")


def bench_dd_mnist(b: Bench) -> dict:
    """MNIST, IPC 1 and 10: baselines, DM and BPTT, all evaluated by one protocol (ConvNet-3, final epoch)."""
    r = _dd_mnist_recipe(b.quick)
    ipcs = r["ipcs"]
    published = {"random": {"1": 64.9, "10": 95.1}, "herding": {"1": 89.2, "10": 93.7}, "dm": {"1": 89.7, "10": 97.5}}
    # the most telling cells first (the target, its baseline, the learned methods, the published coreset), then
    # the rest: a run stopped part-way has kept the cells that matter most, and the next run resumes from them
    first = [("dm", ipcs[-1]), ("random", ipcs[-1]), ("dm", ipcs[0]), ("bptt", ipcs[-1]), ("bptt", ipcs[0]),
             ("herding", ipcs[-1])]
    cells = first + [(m, i) for i in ipcs for m in DD_METHODS if (m, i) not in first]
    done = b.cells("dd-mnist", _dd_mnist_cell, cells, recipe_of=lambda cell: _dd_mnist_cell_recipe(r, *cell))
    result, rows = {}, []
    for method in DD_METHODS:
        result[method] = {str(i): done[(method, i)] for i in ipcs}
        rows.append((method, *[f"{100 * result[method][str(i)]['mean']:.1f} +- {100 * result[method][str(i)]['std']:.1f}"
                               + (f" ({published[method][str(i)]})" if not b.quick and str(i) in published.get(method, {}) else "")
                               for i in ipcs]))
    result["protocol"] = {"model": r["eval_spec"], "runs": r["runs"], "epochs": r["epochs"], "dsa": True,
                          "dsa_draw": "one op and parameter draw per training batch, shared by its images",
                          "note": "accuracy on the real test set at the final epoch; no selection"}
    result["recipes"] = {"dm": r["dm"].__dict__, "bptt": r["bptt"].__dict__, "herding": "greedy, pixel space",
                         "kmeans": "per class, pixel space", "mean": "means of ipc random groups per class"}
    result["published"] = published
    result["cells_total_seconds"] = _cells_total_seconds(done)
    if not b.quick:
        result["target_dm_ipc10"] = 0.97
        result["target_met"] = result["dm"]["10"]["mean"] >= 0.97
    result["markdown"] = _table(["method", *[f"IPC {i}" + ("" if b.quick else " (published)") for i in ipcs]], rows)
    return result


def _wang2018_recipe(quick: bool, setting: str) -> dict:
    """The paper's two MNIST settings (reference defaults: Xavier LeNet, Adam 0.01, real batch 1,024).

    fixed: one known initialisation, 10 images (1 per class) used by every step, 1 step x 3 epochs (the reference's
    ``--distill_steps 1`` run); random: a fresh initialisation per iteration, 100 images, 10 steps x 3 epochs with
    each step its own 10 images. The reference trains for 400 passes over MNIST (~23,000 iterations), halving the
    rate every 40; our CPU budget is a fraction of that, halved every fifth of the run.
    """
    from .bptt import BPTTConfig
    fixed = setting == "fixed"
    if quick:
        cfg = BPTTConfig(iterations=20, steps=1 if fixed else 5, epochs=3, batch_real=256, init_net=setting,
                         model="lenet5")
        return {"ipc": 1 if fixed else 5, "init": "real", "runs": 2, "bptt": cfg}
    iterations = 5000 if fixed else 3000
    cfg = BPTTConfig(iterations=iterations, steps=1 if fixed else 10, epochs=3, batch_real=1024, init_net=setting,
                     model="lenet5:init=xavier", lr_decay_every=iterations // 5, lr_decay=0.5)
    return {"ipc": 1 if fixed else 10, "init": "noise", "runs": 1 if fixed else 50, "bptt": cfg}


def _wang2018_cell(out: Path, quick: bool, setting: str) -> dict:
    """Distil one setting, keep the set, and train fresh LeNets (or the known one) with its learned schedule."""
    from .bptt import train_with_schedule
    from .condense import condense
    from .models import build_model
    from .training import predict_logits

    b = Bench(out, quick)
    r = _wang2018_recipe(quick, setting)
    cfg = r["bptt"]
    splits = _dd_splits(b)

    def accuracy_of(net):
        return float((predict_logits(net, splits.test.x).argmax(1) == splits.test.y).float().mean())

    t0 = time.time()
    synset = condense(splits, "bptt", r["ipc"], seed=0, init=r["init"], bptt=cfg)
    condense_seconds = time.time() - t0
    synset.save(b.work / "wang2018" / "cells" / f"{setting}.safetensors")
    result = {"images": len(synset.labels), "condense_seconds": round(condense_seconds, 1)}
    if setting == "fixed":
        untrained = build_model(cfg.model, splits.input_shape, splits.num_classes)
        untrained.load_state_dict({**untrained.state_dict(), **synset.init_state})
        result["init_accuracy"] = accuracy_of(untrained.eval())
        result["test_accuracy"] = accuracy_of(train_with_schedule(cfg.model, splits.input_shape, splits.num_classes,
                                                                  synset, init_state=synset.init_state))
    else:  # fresh LeNets the set never saw: their seeds differ from the distillation generator's draws
        result.update(summarise_runs([accuracy_of(train_with_schedule(
            cfg.model, splits.input_shape, splits.num_classes, synset, torch.Generator().manual_seed(100 + run)))
            for run in range(r["runs"])]))
    result["wall_seconds"] = round(time.time() - t0, 1)
    return result


def bench_wang2018(b: Bench) -> dict:
    """Wang et al. 2018 on MNIST with LeNet: fixed init 10 images; random init 100 images (learned schedules)."""
    settings = [("fixed",), ("random",)]
    done = b.cells("wang2018", _wang2018_cell, settings, recipe_of=lambda cell: _wang2018_recipe(b.quick, *cell))
    fixed, rand = done[("fixed",)], done[("random",)]
    result = {"fixed_init": {**fixed, "paper": 0.938},
              "random_init": {**rand, "paper": {"mean": 0.795, "std": 0.081}},
              "recipe": {s: _wang2018_recipe(b.quick, s) for s in ("fixed", "random")},
              "cells_total_seconds": _cells_total_seconds(done)}
    if not b.quick:
        result["target_met"] = {"fixed_init": fixed["test_accuracy"] >= 0.938, "random_init": rand["mean"] >= 0.795}
    rows = [("fixed init, 10 images", f"{100 * fixed['init_accuracy']:.1f}% -> {100 * fixed['test_accuracy']:.1f}%",
             "12.9% -> 93.8%"),
            (f"random init, {rand['images']} images ({len(rand['runs'])} fresh LeNets)", _pm(rand, 100, "%", 1),
             "79.5 +- 8.1% (200 nets)")]
    result["markdown"] = _table(["setting", "ours", "paper"], rows)
    return result


def bench_eval_speed(b: Bench) -> dict:
    """5 ConvNet-3 models x 300 epochs with DSA on an IPC-10 set: vectorised vs one at a time, same run."""
    from .condense import condense

    splits = _dd_splits(b)
    spec = "convnet:width=16,depth=2" if b.quick else "convnet:width=128,depth=3"
    epochs = 10 if b.quick else 300
    synset = condense(splits, "random", 10 if not b.quick else 5, seed=0)
    for vectorise in (True, False):  # one-off costs (vmap set-up, allocator) stay out of the timings
        _dd_eval(b, splits, synset, [spec], 2, 1, dsa=True, vectorise=vectorise)
    t0 = time.time()
    vec = _dd_eval(b, splits, synset, [spec], 5, epochs, dsa=True, vectorise=True)[spec]
    vec_s = time.time() - t0
    t0 = time.time()
    seq = _dd_eval(b, splits, synset, [spec], 5, epochs, dsa=True, vectorise=False)[spec]
    seq_s = time.time() - t0
    result = {"vectorised_seconds": round(vec_s, 1), "sequential_seconds": round(seq_s, 1),
              "speedup": round(seq_s / vec_s, 3), "vectorised_accuracy": {k: vec[k] for k in ("mean", "std", "runs")},
              "sequential_accuracy": {k: seq[k] for k in ("mean", "std", "runs")}, "model": spec, "epochs": epochs,
              "targets": {"speedup": 3, "vectorised_seconds": 120}}
    if not b.quick:
        result["target_met"] = {"speedup": result["speedup"] >= 3, "vectorised_seconds": vec_s <= 120}
    result["markdown"] = _table(["mode", "seconds (5 models)", "accuracy"], [
        ("vectorised (torch.func)", f"{vec_s:.1f}", _pm(vec, 100, "%")),
        ("one at a time", f"{seq_s:.1f}", _pm(seq, 100, "%"))])
    return result


def bench_dm_speed(b: Bench) -> dict:
    """DM iterations per second and peak memory at IPC 10, 256 real images per class, ConvNet-3 width 128."""
    from .condense import DMConfig, condense
    from .dsa import DSA

    splits = _dd_splits(b)
    cfg = (DMConfig(iterations=3, batch_real=32, model="convnet:width=16,depth=2") if b.quick else
           DMConfig(iterations=20, batch_real=256, model="convnet:width=128,depth=3"))
    times = []
    last = [time.perf_counter()]

    def tick(it, loss):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    condense(splits, "dm", 10 if not b.quick else 2, dm=cfg, augment=DSA(allow_flip=False), on_iteration=tick)
    steady = times[1:] or times  # the first iteration pays one-off allocation costs
    result = {"iterations_per_second": round(len(steady) / sum(steady), 4), "seconds_per_iteration": round(
        sum(steady) / len(steady), 3), "peak_rss_mb": peak_rss_mb(), "config": cfg.__dict__,
        "reference_seconds_per_iteration": 2.4}
    result["markdown"] = _table(["model", "real per class", "s / iteration", "iterations / s", "peak RSS MB"], [
        (cfg.model, cfg.batch_real, result["seconds_per_iteration"], result["iterations_per_second"], result["peak_rss_mb"])])
    return result


BENCHMARKS = {"hinton-mnist": bench_hinton_mnist, "ls-teacher": bench_ls_teacher, "kd-losses": bench_kd_losses,
              "takd": bench_takd, "rkd": bench_rkd, "kd-speed": bench_kd_speed, "dd-mnist": bench_dd_mnist,
              "wang2018": bench_wang2018, "eval-speed": bench_eval_speed, "dm-speed": bench_dm_speed}


def run_benchmark(name: str, quick: bool = False, out=None, quiet: bool = False, workers: int = 1) -> dict:
    require(name in BENCHMARKS, f"unknown benchmark '{name}'; choose from {', '.join(BENCHMARKS)}")
    require(workers >= 1, f"--workers must be at least 1, got {workers}")
    out = Path(out) if out else Path("runs") / "bench"
    out.mkdir(parents=True, exist_ok=True)
    b = Bench(out, quick, workers)
    started = time.time()
    log(f"bench {name}{' --quick' if quick else ''} -> {out}", quiet)
    result = BENCHMARKS[name](b)
    markdown = result.pop("markdown")
    result = {"benchmark": name, "quick": quick, **result, "wall_seconds": round(time.time() - started, 1),
              "peak_rss_mb": peak_rss_mb(), "machine": machine(),
              "command": "distillab bench " + name + (" --quick" if quick else "")
              + (f" --workers {workers}" if workers > 1 else "") + f" --out {out}"}
    suffix = ""
    (out / f"{name}{suffix}.json").write_text(json.dumps(to_jsonable(result), indent=2) + "\n")
    (out / f"{name}{suffix}.md").write_text(f"## {name}{' (quick)' if quick else ''}\n\n{markdown}\n\n"
                                            f"Command: `{result['command']}`; {result['wall_seconds']:.0f} s on "
                                            f"{result['machine']['cpus']} CPUs, torch {torch.__version__}.\n")
    log(markdown, quiet)
    return result
