"""Training a model on a dataset (``train``), once per seed (``repeat_over_seeds``), and the pieces every run that
trains a model shares: its options, its splits, its final figures and its model file."""

from __future__ import annotations

import dataclasses
import time

from .. import data as data_mod
from .. import seeds
from ..errors import require
from ..evaluation import summarise
from ..models import build_model, check_compatible, count_parameters, load_model, model_name, save_model
from ..outputs import RunOutput, peak_rss_mb
from ..training import TrainConfig, accuracy, fit, resolve_device
from .run import Result, Run, finished, run_function


def make_config(options: dict) -> TrainConfig:
    if "bf16" in options:  # the older switch, kept as a shorthand for precision="bf16"
        bf16 = options.pop("bf16")
        require(not bf16 or options.get("precision") in (None, "bf16"), "--bf16 and --precision disagree; give one")
        if bf16:
            options["precision"] = "bf16"
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    require(not unknown, f"unknown training option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    cfg = TrainConfig(**options).check()
    cfg.device = resolve_device(cfg.device)  # records say where it ran
    return cfg


def load_splits(data: str, val_size: int | None, split_seed: int, mean=None, std=None) -> data_mod.Splits:
    return data_mod.split(data_mod.load(data), val_size=val_size, seed=split_seed, mean=mean, std=std)


def model_and_data(path, data: str | None, what: str, trust_code: bool):
    """A model file and the dataset it is used on (default: the one it records), checked to fit each other."""
    model, meta = load_model(path, trust_code=trust_code)
    data = data or (meta.get("data") or {}).get("data")
    require(data, f"{path} does not record its dataset; pass --data")
    ds = data_mod.load(data)
    check_compatible(meta, ds.classes, ds.input_shape, what, path, ds.spec)
    return model, meta, ds.spec, ds


def final_metrics(model, splits, cfg, fit_result, started) -> dict:
    # inside a search (distillab tune) the test split is sealed: a trial has no test figures at all
    test_acc, test_err = (None, None) if data_mod.is_test_sealed(splits) else accuracy(model, splits.test, cfg.device)
    val_acc, _ = accuracy(model, splits.val, cfg.device)
    return {"test_accuracy": test_acc, "test_errors": test_err, "test_size": len(splits.test),
            "val_accuracy": val_acc, "best_val_accuracy": fit_result.best_val_accuracy,
            "best_epoch": fit_result.best_epoch, "epochs": cfg.epochs, "wall_seconds": round(time.time() - started, 2),
            "train_seconds": round(fit_result.seconds, 2), "peak_rss_mb": peak_rss_mb(),
            "precision": fit_result.precision,
            **({"precision_probe": fit_result.precision_probe} if fit_result.precision_probe else {}),
            "compile": fit_result.compile}


def result_line(metrics: dict) -> str:
    if metrics.get("test_accuracy") is None:
        return f"validation accuracy {metrics['val_accuracy']:.4f} (test split sealed)"
    return f"test accuracy {metrics['test_accuracy']:.4f} ({metrics['test_errors']} errors)"


def save_trained(run: RunOutput, model, spec, splits, recipe, metrics):
    save_model(run.path("model.safetensors"), model, spec=spec, input_shape=splits.input_shape,
               classes=splits.classes, mean=splits.mean, std=splits.std, recipe=recipe, data=splits.describe(),
               metrics={k: metrics[k] for k in ("test_accuracy", "val_accuracy") if k in metrics},
               layout=getattr(splits, "layout", None))


def pseudo_rows(pseudo, pseudo_ratio, splits, reporter):
    """(rows mixed into training, what records say of them), or (None, {}) without a pseudo-label file."""
    if pseudo is None:
        require(pseudo_ratio is None, "--pseudo-ratio goes with --pseudo FILE.npz")
        return None, {}
    from ..pseudolabel import pseudo_rows as rows

    return rows(pseudo, splits, pseudo_ratio, reporter)


@run_function("train")
def train(data: str = "digits", model: str = "mlp:hidden=100", *, pseudo=None, pseudo_ratio: str | None = None,
          out=None, overwrite: bool = False, resume: bool = False, checkpoint_every: int = 1,
          val_size: int | None = None, split_seed: int = 0, quiet: bool = False, log=("jsonl",), **options) -> Result:
    """Train ``model`` on ``data`` with cross-entropy; writes model.safetensors and metrics to ``out``.
    ``options``: the fields of ``TrainConfig`` (epochs, lr, ...). A checkpoint is kept every ``checkpoint_every``
    epochs (0: only when stopped by a signal); ``resume=True`` continues an unfinished run in ``out``.
    ``pseudo``: a pseudo-label file (``pseudolabel``) whose rows are mixed into every batch, ``pseudo_ratio``
    labelled:pseudo rows (default ``pseudolabel.Mixing``'s 6:4)."""
    job = Run("train", locals())
    cfg = make_config(options)
    splits = load_splits(data, val_size, split_seed)
    mix, pseudo_record = pseudo_rows(pseudo, pseudo_ratio, splits, job.reporter)
    net = build_model(model, splits.input_shape, splits.num_classes, seeds.generator(cfg.seed))
    data, model = splits.spec, model_name(model)  # what files record: spec strings (python:... for objects)
    config = {"command": "train", "data": data, "model": model, "val_size": splits.val_size,
              "split_seed": split_seed, **cfg.as_dict(), **pseudo_record}
    with job.output(config) as run:
        job.reporter.info(f"{'resume' if run.resumed else 'train'} {model} ({count_parameters(net):,} parameters) "
                          f"on {data}: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test")
        result = fit(net, splits, cfg, on_epoch=run.log, on_step=run.log_step, reporter=job.reporter, desc="train",
                     checkpoints=run.checkpoints("fit", checkpoint_every), pseudo=mix)
        metrics = final_metrics(net, splits, cfg, result, job.started)
        metrics["parameters"] = count_parameters(net)
        save_trained(run, net, model, splits, {"command": "train", **cfg.as_dict(), **pseudo_record}, metrics)
        job.finish(metrics)
    return job.result(result_line(metrics), net)


@run_function("run")
def repeat_over_seeds(fn, seeds: list[int], *, out=None, overwrite: bool = False, resume: bool = False,
                      command: str = "run", **kwargs) -> Result:
    """Run ``fn`` (``train`` or ``distill``) once per seed into OUT/seed-N; OUT/metrics.json gives each figure as
    {mean, std, runs}. A resumed run keeps the seeds that finished and resumes the one in progress."""
    require(len(set(seeds)) == len(seeds), f"--seeds repeats a seed: {seeds}")
    kwargs.pop("seed", None)
    results = []
    job = Run("repeat_over_seeds", locals(), command=command, fn=fn.__name__, seeds=list(seeds))
    config = {"command": command, "seeds": seeds, **{k: v for k, v in kwargs.items()
                                                     if not callable(v) or isinstance(v, str)}}
    with job.output(config) as run:
        run.path("metrics.jsonl").unlink(missing_ok=True)  # rewritten seed by seed, resumed or not
        for seed in seeds:
            r = finished(run.path(f"seed-{seed}")) if run.resumed else None
            r = r or fn(out=run.path(f"seed-{seed}"), seed=seed, resume=run.resumed, **kwargs)
            results.append(r.metrics)
            run.log({"seed": seed, **{k: v for k, v in r.metrics.items() if isinstance(v, (int, float))}})
        metrics = {"seeds": seeds}
        for key, value in results[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[key] = summarise([m[key] for m in results])
        job.finish(metrics)
    return job.result()
