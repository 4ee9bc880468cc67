"""The demo: a ConvNet teacher, a small MLP student distilled from it and trained alone, the dark-knowledge
picture, then MNIST condensed by distribution matching beside a random real subset; all in one report.md."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from . import data as data_mod
from .api import Result, distill, train
from .condense import DM, condense
from .evaluation import evaluate_images
from .protocols import Protocol
from .figures import pick_dark_knowledge_examples, plot_curves, plot_dark_knowledge, read_history
from .models import load_model
from .outputs import RunOutput, peak_rss_mb
from .reporting import Reporter
from .runs.run import Run, run_function
from .training import predict_logits


@dataclass
class DemoPlan:
    data: str
    teacher: str
    student: str
    teacher_options: dict
    student_options: dict
    temperature: float
    alpha: float
    dd: dict = field(default_factory=dict)  # the dataset-distillation step
    temperatures_shown: tuple = (1, 4, 20)


QUICK = DemoPlan(data="digits", teacher="convnet:width=32,depth=2", student="mlp:hidden=32",
                 teacher_options=dict(epochs=30, lr=0.05, batch_size=64),
                 student_options=dict(epochs=40, lr=0.05, batch_size=64), temperature=4.0, alpha=0.9,
                 dd=dict(ipc=5, model="convnet:width=16,depth=2", iterations=100, batch_real=32,
                         eval_model="convnet:width=16,depth=2", runs=3, epochs=100))
FULL = DemoPlan(data="mnist", teacher="convnet:width=32", student="mlp:hidden=100",
                teacher_options=dict(epochs=4, lr=0.05, batch_size=128),
                student_options=dict(epochs=20, lr=0.05, batch_size=128), temperature=4.0, alpha=0.9,
                dd=dict(ipc=10, model="convnet:width=32,depth=3", iterations=150, batch_real=64,
                        eval_model="convnet:width=32,depth=3", runs=3, epochs=300))


@run_function("demo", resumable=False)
def demo(quick: bool = False, out=None, overwrite: bool = False, quiet: bool = False) -> Result:
    """Train a ConvNet teacher, distill a small MLP student, train the same student alone; write report.md."""
    plan = QUICK if quick else FULL
    job = Run("demo", locals(), record=False)
    reporter = job.reporter
    data_mod.load(plan.data)  # fetch first, so a missing dataset fails before any output exists
    with job.output({"command": "demo", "quick": quick, **plan.__dict__}) as run:
        common = dict(data=plan.data, quiet=quiet)
        reporter.info(f"[1/4] teacher {plan.teacher} on {plan.data}")
        teacher = train(model=plan.teacher, out=run.path("teacher"), **common, **plan.teacher_options)
        reporter.info(f"[2/4] student {plan.student} alone")
        alone = train(model=plan.student, out=run.path("student_alone"), **common, **plan.student_options)
        reporter.info(f"[3/4] student {plan.student} distilled (T={plan.temperature:g}, alpha={plan.alpha:g})")
        kd = distill(teacher=run.path("teacher") / "model.safetensors", student=plan.student,
                     temperature=plan.temperature, alpha=plan.alpha, out=run.path("student_kd"), **common,
                     **plan.student_options)
        results = {"teacher": teacher, "student_alone": alone, "student_kd": kd}
        histories = {name: read_history(run.path(name)) for name in results}
        plot_curves({f"{k.replace('_', ' ')}": v for k, v in histories.items()}, run.path("curves.png"),
                    f"{plan.data}: validation accuracy per epoch")
        examples = _dark_knowledge(run, plan)
        metrics = {name: {k: r.metrics[k] for k in ("test_accuracy", "test_errors", "val_accuracy", "parameters",
                                                    "wall_seconds")} for name, r in results.items()}
        reporter.info(f"[4/4] dataset distillation: DM, {plan.dd['ipc']} images per class, beside a random real subset")
        metrics["dataset_distillation"] = _dataset_distillation(run, plan, reporter)
        metrics.update(data=plan.data, quick=quick, wall_seconds=round(time.time() - job.started, 1),
                       peak_rss_mb=peak_rss_mb(), kd_gain_errors=alone.metrics["test_errors"] - kd.metrics["test_errors"])
        job.finish(metrics)
        (run.path("report.md")).write_text(_demo_report(plan, metrics, examples, quick))
    reporter.info(f"teacher {metrics['teacher']['test_accuracy']:.4f}, student alone "
                  f"{metrics['student_alone']['test_accuracy']:.4f}, student distilled "
                  f"{metrics['student_kd']['test_accuracy']:.4f}; report: {run.final / 'report.md'}")
    return job.result()


def _dataset_distillation(run: RunOutput, plan: DemoPlan, reporter: Reporter) -> dict:
    """DM condenses the training set; the synthetic set and a random real subset of the same size are evaluated by
    one protocol (fresh models, final-epoch test accuracy, DSA)."""
    d = plan.dd
    splits = data_mod.split(data_mod.load(plan.data))
    train_set = splits.train_set()
    t0 = time.time()
    bar = reporter.bar(d["iterations"], "condense dm", unit="iterations")
    synset = condense(train_set, DM(iterations=d["iterations"], batch_real=d["batch_real"], model=d["model"]),
                      d["ipc"], seed=0, progress=lambda it, loss: bar.update(1))
    bar.close()
    condense_seconds = time.time() - t0
    synset.meta["source"]["data"] = plan.data
    synset.save(run.path("synset.safetensors"))
    synset.save_grid(run.path("synset.png"))
    baseline = condense(train_set, "random", d["ipc"], seed=0)
    proto = Protocol(epochs=d["epochs"], dsa=True, runs=d["runs"], models=(d["eval_model"],))
    out = {"ipc": d["ipc"], "images": len(synset.labels), "condense_seconds": round(condense_seconds, 1),
           "recipe": dict(d), "synset_bytes": synset.nbytes()}
    for name, s in (("dm", synset), ("random_real", baseline)):
        reporter.info(f"the {name.replace('_', ' ')} set:")
        r = evaluate_images(s.images, s.labels, splits.test, proto, seed=0, num_classes=splits.num_classes,
                            reporter=reporter)[d["eval_model"]]
        out[name] = {"test_accuracy": r["mean"], "std": r["std"], "runs": r["runs"]}
    return out


def _dark_knowledge(run: RunOutput, plan: DemoPlan) -> list[dict]:
    model, meta = load_model(run.path("teacher") / "model.safetensors")
    ds = data_mod.load(plan.data)
    norm = meta["normalisation"]
    x = data_mod.normalise(ds.test.x, norm["mean"], norm["std"])
    logits = predict_logits(model, x)
    chosen = pick_dark_knowledge_examples(torch.softmax(logits, 1), ds.test.y)
    return plot_dark_knowledge(x, logits, ds.test.y, ds.classes, chosen, plan.temperatures_shown,
                               run.path("dark_knowledge.png"), norm["mean"], norm["std"])


def _demo_report(plan: DemoPlan, m: dict, examples: list[dict], quick: bool) -> str:
    rows = [("teacher", plan.teacher, m["teacher"]), ("student alone", plan.student, m["student_alone"]),
            (f"student distilled (T={plan.temperature:g}, alpha={plan.alpha:g})", plan.student, m["student_kd"])]
    lines = [f"# distillab demo: {plan.data}{' (--quick)' if quick else ''}", "", "## Model distillation", "",
             "A ConvNet teacher is trained, then a small MLP student learns from its softened outputs "
             "(knowledge distillation); the same student trained alone on the labels is the baseline. "
             "All figures below come from this run.", "",
             "| model | spec | parameters | test accuracy | test errors | val accuracy |",
             "|---|---|---:|---:|---:|---:|"]
    for name, spec, r in rows:
        lines.append(f"| {name} | `{spec}` | {r['parameters']:,} | {100 * r['test_accuracy']:.2f}% | "
                     f"{r['test_errors']} | {100 * r['val_accuracy']:.2f}% |")
    gain = m["kd_gain_errors"]
    verdict = (f"Distillation removed {gain} test errors." if gain > 0 else
               "Distillation did not beat the student trained alone in this run." if gain < 0 else
               "Distillation matched the student trained alone.")
    lines += ["", verdict, "",
              f"Recipes: teacher {plan.teacher_options}; students {plan.student_options}; "
              "SGD momentum 0.9, weight decay 5e-4, cosine schedule, last epoch kept (validation split "
              "for monitoring only; the test set is never used for selection).", "",
              "## Training curves", "", "![validation accuracy per epoch](curves.png)", "",
              "## Dark knowledge", "",
              "For test images the teacher classifies correctly, its probabilities at temperature 1 hide how "
              "similar the image is to other classes; a higher temperature reveals it. That relative information "
              "is what the student learns from.", "", "![teacher probabilities at several temperatures]"
              "(dark_knowledge.png)", "",
              "| test image | label | runner-up at T=1 | its probability at T=1 | at T=4 |", "|---:|---|---|---:|---:|"]
    for e in examples:
        p1, p4 = e["probabilities"]["T=1"], e["probabilities"].get("T=4", e["probabilities"]["T=1"])
        runner = sorted(range(len(p1)), key=lambda k: -p1[k])[1]
        lines.append(f"| {e['test_index']} | {e['label']} | {runner} | {p1[runner]:.4f} | {p4[runner]:.4f} |")
    dd = m["dataset_distillation"]
    d = plan.dd
    lines += ["", "## Dataset distillation", "",
              f"Distribution matching (DM) condensed the {plan.data} training set into {dd['images']} synthetic images "
              f"({d['ipc']} per class, {d['iterations']} iterations, random `{d['model']}` embeddings, "
              f"{d['batch_real']} real images per class per iteration, {dd['condense_seconds']:.0f} s). "
              f"A random subset of real images of the same size is the baseline; both were evaluated by one protocol: "
              f"{d['runs']} fresh `{d['eval_model']}` models, SGD lr 0.01, {d['epochs']} epochs with DSA, "
              "accuracy on the real test set at the final epoch.", "",
              "| training set | images | test accuracy (mean +- std) |", "|---|---:|---:|",
              f"| DM synthetic set | {dd['images']} | {100 * dd['dm']['test_accuracy']:.2f} +- {100 * dd['dm']['std']:.2f}% |",
              f"| random real subset | {dd['images']} | {100 * dd['random_real']['test_accuracy']:.2f} +- "
              f"{100 * dd['random_real']['std']:.2f}% |", "",
              "![the synthetic images, one row per class](synset.png)", "",
              f"Wall time {m['wall_seconds']:.0f} s, peak memory {m['peak_rss_mb']:.0f} MB.", ""]
    return "\n".join(lines)
