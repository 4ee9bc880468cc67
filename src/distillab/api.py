"""The Python API: one function per command. The CLI only parses flags and calls these.

    import distillab
    teacher = distillab.train(data="digits", model="convnet:width=32", epochs=10)
    student = distillab.distill(data="digits", teacher=teacher.out / "model.safetensors",
                                student="mlp:hidden=32", temperature=4, alpha=0.9)
    print(student.metrics["test_accuracy"])
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import data as data_mod
from .errors import DistillabError, require
from .files import check_compatible, load_model, save_model
from .kd import (TINY, CallableTeacher, Distillation, EnsembleTeacher, ModelTeacher, TableTeacher, cache_teacher,
                 hinton_losses, label_smoothing_warnings, parse_loss)
from .models import build_model, count_parameters
from .outputs import RunOutput, peak_rss_mb
from .training import TrainConfig, accuracy, fit, predict_logits


@dataclass
class Result:
    metrics: dict
    out: Path | None = None
    model: nn.Module | None = None


def log(message: str, quiet: bool = False) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def make_config(options: dict) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    require(not unknown, f"unknown training option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return TrainConfig(**options).check()


def load_splits(data: str, val_size: int | None, split_seed: int, mean=None, std=None) -> data_mod.Splits:
    return data_mod.split(data_mod.load(data), val_size=val_size, seed=split_seed, mean=mean, std=std)


def _final_metrics(model, splits, cfg, fit_result, started) -> dict:
    test_acc, test_err = accuracy(model, splits.test, cfg.device)
    val_acc, _ = accuracy(model, splits.val, cfg.device)
    return {"test_accuracy": test_acc, "test_errors": test_err, "test_size": len(splits.test),
            "val_accuracy": val_acc, "best_val_accuracy": fit_result.best_val_accuracy,
            "best_epoch": fit_result.best_epoch, "epochs": cfg.epochs, "wall_seconds": round(time.time() - started, 2),
            "train_seconds": round(fit_result.seconds, 2), "peak_rss_mb": peak_rss_mb()}


def _save(run: RunOutput, model, spec, splits, recipe, metrics):
    save_model(run.path("model.safetensors"), model, spec=spec, input_shape=splits.input_shape,
               classes=splits.classes, mean=splits.mean, std=splits.std, recipe=recipe, data=splits.describe(),
               metrics={k: metrics[k] for k in ("test_accuracy", "val_accuracy") if k in metrics})


def train(data: str = "digits", model: str = "mlp:hidden=100", *, out=None, overwrite: bool = False,
          val_size: int | None = None, split_seed: int = 0, quiet: bool = False, **options) -> Result:
    """Train ``model`` on ``data`` with cross-entropy; writes model.safetensors and metrics to ``out``."""
    started = time.time()
    cfg = make_config(options)
    splits = load_splits(data, val_size, split_seed)
    net = build_model(model, splits.input_shape, splits.num_classes, torch.Generator().manual_seed(cfg.seed))
    config = {"command": "train", "data": data, "model": model, "val_size": splits.val_size,
              "split_seed": split_seed, **cfg.as_dict()}
    with RunOutput(out, "train", overwrite) as run:
        run.write_config(config)
        log(f"train {model} ({count_parameters(net):,} parameters) on {data}: {len(splits.train)} train / "
            f"{len(splits.val)} val / {len(splits.test)} test", quiet)
        result = fit(net, splits, cfg, on_epoch=run.log, on_step=run.log_step, progress=not quiet, desc="train")
        metrics = _final_metrics(net, splits, cfg, result, started)
        metrics["parameters"] = count_parameters(net)
        _save(run, net, model, splits, {"command": "train", **cfg.as_dict()}, metrics)
        run.write_metrics(metrics)
    log(f"test accuracy {metrics['test_accuracy']:.4f} ({metrics['test_errors']} errors); wrote {run.final}", quiet)
    return Result(metrics, run.final, net)


# --------------------------------------------------------------------------------------------------------------
# Distillation


class _Renormalise(nn.Module):
    """Maps inputs normalised one way to another normalisation (a teacher trained with other statistics)."""

    def __init__(self, mean_from, std_from, mean_to, std_to):
        super().__init__()
        view = lambda v: torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", view(std_from) / view(std_to))
        self.register_buffer("shift", (view(mean_from) - view(mean_to)) / view(std_to))

    def forward(self, x):
        return x * self.scale + self.shift


def load_teacher_model(path, splits, what="teacher") -> tuple[nn.Module, dict]:
    model, meta = load_model(path)
    check_compatible(meta, splits.classes, splits.input_shape, what, path)
    norm = meta["normalisation"]
    if list(norm["mean"]) != list(splits.mean) or list(norm["std"]) != list(splits.std):
        model = nn.Sequential(_Renormalise(splits.mean, splits.std, norm["mean"], norm["std"]), model)
    return model, meta


def load_teacher_outputs(path, splits) -> TableTeacher:
    """A black box's answers (``distillab predict``), one row per example of the dataset's training data."""
    path = Path(path)
    arrays = data_mod.read_npz(path)
    n_total = int(splits.train_index.max()) + 1 if len(splits.train_index) else 0
    rows = splits.train_index
    if "index" in arrays:  # rows may be a subset or reordered: map dataset positions to rows
        index = torch.from_numpy(arrays["index"].astype(np.int64))
        lookup = torch.full((max(n_total, int(index.max()) + 1),), -1, dtype=torch.int64)
        lookup[index] = torch.arange(len(index))
        rows = lookup[splits.train_index]
        require(bool((rows >= 0).all()), f"{path} lacks outputs for some training examples; predict with --split train")
    k = splits.num_classes
    if "logits" in arrays or "probs" in arrays:
        key = "logits" if "logits" in arrays else "probs"
        values = torch.from_numpy(arrays[key].astype(np.float32))
        require(values.ndim == 2 and values.shape[1] == k,
                f"{path}: '{key}' has shape {tuple(values.shape)}, expected (N, {k}) for {splits.spec}")
        require(len(values) > int(rows.max()), f"{path} has {len(values)} rows, fewer than the training data")
        if key == "probs":
            require(bool((values >= 0).all()), f"{path}: probabilities must be >= 0")
            return TableTeacher(rows, logits=values.clamp_min(TINY).log(), kind="logprobs")
        return TableTeacher(rows, logits=values, kind="logits")
    if "topk_index" in arrays and "topk_prob" in arrays:
        index = torch.from_numpy(arrays["topk_index"].astype(np.int64))
        probs = torch.from_numpy(arrays["topk_prob"].astype(np.float32))
        require(index.shape == probs.shape and index.ndim == 2, f"{path}: topk_index and topk_prob must match")
        require(bool((index >= 0).all() and (index < k).all()), f"{path}: topk_index outside 0..{k - 1}")
        return TableTeacher(rows, topk_index=index, topk_logprob=probs.clamp_min(TINY).log(), kind="topk")
    raise DistillabError(f"{path} holds none of 'logits', 'probs' or 'topk_index'+'topk_prob'; "
                         "write it with 'distillab predict'")


def _teacher_from(teacher, teacher_outputs, splits, cfg, tap_paths, cache):
    """Resolve what the user gave as a teacher; returns (teacher, metadata of the first model or None, how)."""
    require((teacher is None) != (teacher_outputs is None), "give either a teacher (model file) or --teacher-outputs")
    if teacher_outputs is not None:
        return load_teacher_outputs(teacher_outputs, splits), None, "outputs"
    if callable(teacher) and not isinstance(teacher, nn.Module):
        return CallableTeacher(teacher), None, "callable"
    paths = teacher if isinstance(teacher, (list, tuple)) else [teacher]
    models, metas = [], []
    for p in paths:
        if isinstance(p, nn.Module):
            models.append(p)
            metas.append({})
        else:
            m, meta = load_teacher_model(p, splits)
            models.append(m)
            metas.append(meta)
    teachers = [ModelTeacher(m, tap_paths, cfg.device) for m in models]
    if cache == "auto":
        cache = cfg.augment in (None, "", "none")
    if cache:
        require(cfg.augment in (None, "", "none"), "cannot cache teacher outputs with --augment: every epoch sees "
                "new inputs, so the cache would be stale; drop --cache-teacher or the augmentation")
        cached = [cache_teacher(t, splits.train.x.to(cfg.device)) for t in teachers]
        for t in cached:  # the cache is in training-split order
            t.rows = torch.arange(len(splits.train))
        how = "cached"
        teachers = cached
    else:
        how = "live"
    if len(teachers) == 1:
        return teachers[0], metas[0], how
    return EnsembleTeacher(teachers), metas[0], f"ensemble of {len(teachers)} ({how})"


def distill(data: str = "digits", teacher=None, student: str = "mlp:hidden=32", *, teacher_outputs=None,
            temperature: float = 4.0, alpha: float = 0.9, losses: list[str] | None = None,
            student_tap: str = "penultimate", teacher_tap: str = "penultimate", cache="auto", out=None,
            overwrite: bool = False, val_size: int | None = None, split_seed: int = 0, quiet: bool = False,
            **options) -> Result:
    """Distill ``teacher`` into a fresh ``student``.

    teacher: a model file, a list of them (an ensemble), an nn.Module, or a function x -> probabilities.
    losses: ``["kd:T=4,w=0.9", "ce:w=0.1"]``; default Hinton's ``alpha * T^2 * KL + (1 - alpha) * CE``.
    cache: "auto" caches the teacher's outputs when there is no augmentation (the teacher then costs nothing).
    """
    started = time.time()
    cfg = make_config(options)
    terms = [parse_loss(t, student_tap, teacher_tap) for t in losses] if losses else hinton_losses(temperature, alpha)
    splits = load_splits(data, val_size, split_seed)
    net = build_model(student, splits.input_shape, splits.num_classes, torch.Generator().manual_seed(cfg.seed))
    tap_paths = [t.teacher_tap for t in terms if t.name in ("rkd", "hint", "at")]
    source, teacher_meta, how = _teacher_from(teacher, teacher_outputs, splits, cfg, tap_paths, cache)
    for message in label_smoothing_warnings(teacher_meta, terms, cfg.label_smoothing):
        warnings.warn(message, stacklevel=2)
    objective = Distillation(source, terms)
    sample = torch.arange(min(8, len(splits.train)))
    extra = objective.attach(net.to(cfg.device), splits.train.x[sample].to(cfg.device), sample,
                             generator=torch.Generator().manual_seed(cfg.seed + 2))
    teacher_desc = str(teacher_outputs) if teacher_outputs is not None else (
        [str(p) for p in teacher] if isinstance(teacher, (list, tuple)) else
        (str(teacher) if isinstance(teacher, (str, Path)) else type(teacher).__name__))
    recipe = {"command": "kd", "teacher": teacher_desc, "teacher_mode": how,
              "losses": [t.describe() for t in terms], **cfg.as_dict()}
    config = {"command": "kd", "data": data, "student": student, "val_size": splits.val_size,
              "split_seed": split_seed, **recipe}
    with RunOutput(out, "kd", overwrite) as run:
        run.write_config(config)
        log(f"kd {student} ({count_parameters(net):,} parameters) from {teacher_desc} [{how}] on {data}; "
            f"losses: {', '.join(str(t.describe()) for t in terms)}", quiet)
        result = fit(net, splits, cfg, objective=objective, extra_modules=extra, on_epoch=run.log,
                     on_step=run.log_step, progress=not quiet, desc="kd")
        metrics = _final_metrics(net, splits, cfg, result, started)
        metrics["parameters"] = count_parameters(net)
        metrics["teacher_mode"] = how
        if teacher_meta:  # a teacher loaded from a file: its own recorded accuracy, for comparison
            metrics["teacher_test_accuracy"] = (teacher_meta.get("metrics") or {}).get("test_accuracy")
        _save(run, net, student, splits, recipe, metrics)
        run.write_metrics(metrics)
    log(f"test accuracy {metrics['test_accuracy']:.4f} ({metrics['test_errors']} errors); wrote {run.final}", quiet)
    return Result(metrics, run.final, net)


# --------------------------------------------------------------------------------------------------------------
# Evaluation and data


def evaluate_model(model_path, data: str | None = None, *, out=None, overwrite: bool = False, device: str = "cpu",
                   quiet: bool = False, write: bool = True) -> Result:
    """Accuracy of a saved model on a dataset's test set and on the validation split it was selected on."""
    started = time.time()
    model, meta = load_model(model_path)
    recorded = meta.get("data") or {}
    data = data or recorded.get("data")
    require(data, f"{model_path} does not record its dataset; pass --data")
    ds = data_mod.load(data)
    check_compatible(meta, ds.classes, ds.input_shape, "model", model_path)
    same = recorded.get("data") == data
    norm = meta["normalisation"]
    splits = data_mod.split(ds, val_size=recorded.get("val_size") if same else None,
                            seed=recorded.get("split_seed", 0) if same else 0, mean=norm["mean"], std=norm["std"])
    test_acc, test_err = accuracy(model, splits.test, device)
    val_acc, _ = accuracy(model, splits.val, device)
    metrics = {"model": str(model_path), "data": data, "test_accuracy": test_acc, "test_errors": test_err,
               "test_size": len(splits.test), "val_accuracy": val_acc, "wall_seconds": round(time.time() - started, 2),
               "peak_rss_mb": peak_rss_mb()}
    if not write:
        return Result(metrics, None, model)
    with RunOutput(out, "evaluate", overwrite) as run:
        run.write_config({"command": "evaluate", "model": str(model_path), "data": data, "device": device})
        run.log(metrics)
        run.write_metrics(metrics)
    log(f"{model_path} on {data}: test accuracy {test_acc:.4f} ({test_err} errors), val {val_acc:.4f}", quiet)
    return Result(metrics, run.final, model)


def data_fetch(name: str) -> dict:
    ds = data_mod.load(name, fetch=True)
    return data_mod.info(ds)


def data_info(name: str) -> dict:
    return data_mod.info(data_mod.load(name, fetch=False))


def predict(model_path, data: str | None = None, *, split: str = "train", output: str = "probs",
            top_k: int | None = None, out=None, device: str = "cpu", quiet: bool = False) -> dict:
    """Write a model's outputs as a black-box API would give them: ``probs`` or ``logits``, optionally only the
    top-k probabilities. Rows follow the dataset's own order (``index``), so any validation split can use them."""
    require(output in ("probs", "logits"), f"--output must be probs or logits, got {output}")
    require(split in ("train", "test"), f"--split must be train or test, got {split}")
    require(top_k is None or output == "probs", "--top-k goes with --output probs")
    model, meta = load_model(model_path)
    data = data or (meta.get("data") or {}).get("data")
    require(data, f"{model_path} does not record its dataset; pass --data")
    ds = data_mod.load(data)
    check_compatible(meta, ds.classes, ds.input_shape, "model", model_path)
    require(top_k is None or 1 <= top_k < ds.num_classes, f"--top-k must be between 1 and {ds.num_classes - 1}")
    norm = meta["normalisation"]
    images = ds.train if split == "train" else ds.test
    logits = predict_logits(model, data_mod.normalise(images.x, norm["mean"], norm["std"]), device=device)
    arrays = {"index": np.arange(len(images), dtype=np.int64)}
    if output == "logits":
        arrays["logits"] = logits.numpy()
    elif top_k is None:
        arrays["probs"] = torch.softmax(logits, 1).numpy()
    else:
        p, i = torch.softmax(logits, 1).topk(top_k, dim=1)
        arrays["topk_prob"], arrays["topk_index"] = p.numpy(), i.numpy().astype(np.int64)
    out = Path(out) if out else Path("runs") / f"predict-{time.strftime('%Y%m%d-%H%M%S')}.npz"
    require(out.suffix == ".npz", f"--out for predict must end in .npz, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)
    info = {"out": str(out), "rows": len(images), "output": output, "top_k": top_k, "split": split, "data": data}
    log(f"wrote {out}: {len(images)} rows of {'top-%d ' % top_k if top_k else ''}{output}", quiet)
    return info


def summarise_runs(values: list[float]) -> dict:
    """{"mean", "std", "runs"}: std is the sample standard deviation (0 for a single run)."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "runs": [float(v) for v in arr]}


def repeat_over_seeds(fn, seeds: list[int], *, out=None, overwrite: bool = False, command: str = "run",
                      **kwargs) -> Result:
    """Run ``fn`` once per seed into OUT/seed-N; OUT/metrics.json gives each figure as {mean, std, runs}."""
    require(len(set(seeds)) == len(seeds), f"--seeds repeats a seed: {seeds}")
    kwargs.pop("seed", None)
    results = []
    with RunOutput(out, command, overwrite) as run:
        run.write_config({"command": command, "seeds": seeds, **{k: v for k, v in kwargs.items()
                                                                  if not callable(v) or isinstance(v, str)}})
        for seed in seeds:
            r = fn(out=run.path(f"seed-{seed}"), seed=seed, **kwargs)
            results.append(r.metrics)
            run.log({"seed": seed, **{k: v for k, v in r.metrics.items() if isinstance(v, (int, float))}})
        metrics = {"seeds": seeds}
        for key, value in results[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[key] = summarise_runs([m[key] for m in results])
        run.write_metrics(metrics)
    return Result(metrics, run.final)


# --------------------------------------------------------------------------------------------------------------
# Teacher-assistant chains


def chain(data: str = "digits", teacher=None, students: list[str] = (), *, from_all: bool = False, out=None,
          overwrite: bool = False, quiet: bool = False, **kd_options) -> Result:
    """Teacher -> assistant -> ... -> student (Mirzadeh et al. 2020): each stage distils from the previous one
    (``from_all``: from the ensemble of the teacher and every earlier stage). Every stage is saved."""
    require(teacher is not None, "a chain needs a teacher model file")
    require(len(students) >= 1, "a chain needs at least one student spec after the teacher")
    kd_options.pop("seeds", None)
    started = time.time()
    with RunOutput(out, "chain", overwrite) as run:
        run.write_config({"command": "kd-chain", "data": data, "teacher": str(teacher), "students": list(students),
                          "from_all": from_all, **{k: v for k, v in kd_options.items() if not callable(v)}})
        sources = [teacher]
        stages = []
        for i, spec in enumerate(students, 1):
            source = list(sources) if from_all and len(sources) > 1 else sources[-1]
            log(f"chain stage {i}/{len(students)}: {spec} from {source}", quiet)
            r = distill(data=data, teacher=source, student=spec, out=run.path(f"stage{i}"), quiet=quiet, **kd_options)
            stages.append({"stage": i, "student": spec, "test_accuracy": r.metrics["test_accuracy"],
                           "test_errors": r.metrics["test_errors"], "val_accuracy": r.metrics["val_accuracy"],
                           "model": f"stage{i}/model.safetensors"})
            run.log(stages[-1])
            sources.append(run.path(f"stage{i}") / "model.safetensors")
        metrics = {"stages": stages, "test_accuracy": stages[-1]["test_accuracy"],
                   "test_errors": stages[-1]["test_errors"], "val_accuracy": stages[-1]["val_accuracy"],
                   "wall_seconds": round(time.time() - started, 2), "peak_rss_mb": peak_rss_mb()}
        run.write_metrics(metrics)
    return Result(metrics, run.final)


# --------------------------------------------------------------------------------------------------------------
# inspect: a dark-knowledge meter


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += float(mask.float().mean()) * abs(float(conf[mask].mean()) - float(correct[mask].mean()))
    return ece


def non_target_entropy(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean entropy (in bits, relative to its maximum log2(K-1)) of the softened distribution over the wrong
    classes: how much relative information the teacher's 'dark knowledge' carries at this temperature."""
    k = logits.shape[1]
    mask = torch.ones_like(logits, dtype=torch.bool)
    mask[torch.arange(len(labels)), labels] = False
    others = logits[mask].view(len(labels), k - 1) / temperature
    p = torch.softmax(others, 1)
    h = -(p * p.clamp_min(TINY).log()).sum(1) / np.log(k - 1)
    return float(h.mean())


def inspect_teacher(model_path, data: str | None = None, *, temperatures=(1, 2, 4, 8, 20), top_pairs: int = 5,
                    quiet: bool = False) -> dict:
    """Accuracy, calibration, dark knowledge per temperature, confused class pairs, label-smoothing signs."""
    model, meta = load_model(model_path)
    data = data or (meta.get("data") or {}).get("data")
    require(data, f"{model_path} does not record its dataset; pass --data")
    ds = data_mod.load(data)
    check_compatible(meta, ds.classes, ds.input_shape, "teacher", model_path)
    norm = meta["normalisation"]
    logits = predict_logits(model, data_mod.normalise(ds.test.x, norm["mean"], norm["std"]))
    labels = ds.test.y
    probs = torch.softmax(logits, 1)
    pred = probs.argmax(1)
    k = ds.num_classes
    confusion = torch.zeros(k, k)
    confusion.index_put_((labels, pred), torch.ones(len(labels)), accumulate=True)
    # soft confusion: mean probability the teacher gives class j on images of class i (dark knowledge, not errors)
    soft = torch.zeros(k, k).index_add_(0, labels, probs) / torch.bincount(labels, minlength=k).clamp_min(1)[:, None]
    pairs = [(i, j) for i in range(k) for j in range(k) if i != j]
    pairs.sort(key=lambda ij: -(float(soft[ij[0], ij[1]]) + float(soft[ij[1], ij[0]])))
    seen, confused = set(), []
    for i, j in pairs:
        if (j, i) in seen:
            continue
        seen.add((i, j))
        confused.append({"classes": [ds.classes[i], ds.classes[j]], "errors": int(confusion[i, j] + confusion[j, i]),
                         "mean_probability": round(float(soft[i, j] + soft[j, i]) / 2, 5)})
        if len(confused) == top_pairs:
            break
    # A label-smoothed teacher squeezes its wrong-class logits together (Mueller et al. 2019): their spread,
    # relative to the gap to the top logit, is small and nearly the same for every image.
    top = logits.max(1).values
    mask = torch.ones_like(logits, dtype=torch.bool)
    mask[torch.arange(len(pred)), pred] = False
    others = logits[mask].view(len(pred), k - 1)
    spread = float((others.std(1) / (top - others.mean(1)).clamp_min(1e-6)).median())
    entropy = {f"T={t:g}": round(non_target_entropy(logits, labels, t), 4) for t in temperatures}
    trained_ls = float((meta.get("recipe") or {}).get("label_smoothing", 0) or 0)
    looks_smoothed = spread < 0.08
    # suggest temperatures where the wrong-class distribution is informative: neither a spike nor uniform
    useful = [t for t in temperatures if 0.5 <= entropy[f"T={t:g}"] <= 0.97]
    suggestion = [min(useful), max(useful)] if useful else [min(temperatures), max(temperatures)]
    acc = float((pred == labels).float().mean())
    report = {"model": str(model_path), "data": data, "test_accuracy": acc, "test_errors": int((pred != labels).sum()),
              "ece": round(expected_calibration_error(probs, labels), 5), "mean_confidence": round(float(probs.max(1).values.mean()), 5),
              "non_target_entropy": entropy, "most_confused_pairs": confused,
              "label_smoothing_in_recipe": trained_ls, "non_target_logit_spread": round(spread, 4),
              "looks_label_smoothed": looks_smoothed, "suggested_temperature_range": suggestion}
    warn = []
    if trained_ls > 0 or looks_smoothed:
        warn.append("this teacher was trained with label smoothing" if trained_ls > 0 else
                    "this teacher's wrong-class logits are unusually uniform: it looks label-smoothed")
        warn.append("label smoothing erases the dark knowledge distillation needs (Mueller et al. 2019)")
    report["warnings"] = warn
    return report


# --------------------------------------------------------------------------------------------------------------
# Dataset distillation


def condense_data(data: str = "digits", method: str = "dm", ipc: int = 10, *, model: str | None = None,
                  iterations: int = 1000, init: str = "real", lr_img: float | None = None, batch_real: int | None = None,
                  dsa: bool = True, init_net: str = "fixed", bptt_steps: int = 10, bptt_epochs: int = 3,
                  seed: int = 0, val_size: int | None = None, split_seed: int = 0, out=None,
                  overwrite: bool = False, quiet: bool = False) -> Result:
    """Condense ``data`` into ``ipc`` images per class; writes synset.safetensors, synset.png and metrics."""
    from tqdm.auto import tqdm

    from .bptt import BPTTConfig
    from .condense import DEFAULT_MODEL, DMConfig, METHODS, condense
    from .dsa import DSA

    require(method in METHODS, f"unknown method '{method}'; choose from {', '.join(METHODS)}")
    require(iterations >= 1, f"--iterations must be at least 1, got {iterations}")
    started = time.time()
    splits = load_splits(data, val_size, split_seed)
    from .condense import check_ipc
    check_ipc(splits, ipc)
    model = model or DEFAULT_MODEL.get(method, "convnet:width=128,depth=3")
    if method in ("dm", "bptt"):
        build_model(model, splits.input_shape, splits.num_classes)  # a bad --model fails before any output
    augment = DSA(allow_flip=splits.input_shape[0] == 3) if (dsa and method == "dm") else None
    cfg = DMConfig(iterations=iterations, lr_img=lr_img or 1.0, batch_real=batch_real or 256, model=model,
                   dsa=bool(augment))
    bptt_cfg = BPTTConfig(iterations=iterations, steps=bptt_steps, epochs=bptt_epochs, lr_img=lr_img or 0.01,
                          batch_real=batch_real or 1024, init_net=init_net, model=model).check()
    with RunOutput(out, "condense", overwrite) as run:
        run.write_config({"command": "condense", "data": data, "method": method, "ipc": ipc, "model": model,
                          "iterations": iterations, "init": init, "lr_img": lr_img, "batch_real": batch_real,
                          "dsa": dsa, "seed": seed, "val_size": splits.val_size, "split_seed": split_seed})
        losses = []
        bar = tqdm(total=iterations if method in ("dm", "bptt") else 0, desc=f"condense {method}", disable=None if not quiet else True)

        def on_iteration(it, loss):
            losses.append(loss)
            run.log({"iteration": it + 1, "loss": loss})
            bar.update(1)

        t0 = time.perf_counter()
        synset = condense(splits, method, ipc, seed=seed, init=init, dm=cfg, bptt=bptt_cfg, augment=augment,
                          on_iteration=on_iteration)
        seconds = time.perf_counter() - t0
        bar.close()
        synset.meta["source"]["data"] = data
        synset.save(run.path("synset.safetensors"))
        synset.save_grid(run.path("synset.png"))
        if losses:
            _plot_loss(losses, run.path("loss.png"), f"{method} on {data}, IPC {ipc}")
        full_bytes = splits.train.x.numel() * 1 + splits.train.y.numel() * 1  # the training images as uint8 pixels
        metrics = {"method": method, "ipc": ipc, "iterations": iterations if method in ("dm", "bptt") else 0,
                   "wall_seconds": round(time.time() - started, 2), "condense_seconds": round(seconds, 2),
                   "iterations_per_second": round(len(losses) / seconds, 3) if losses else None,
                   "peak_rss_mb": peak_rss_mb(), "synset_bytes": synset.nbytes(), "train_set_bytes_uint8": full_bytes,
                   "images": len(synset.labels), "final_loss": losses[-1] if losses else None}
        run.write_metrics(metrics)
    log(f"condensed {data} with {method} to {ipc} images per class in {seconds:.1f} s; wrote {run.final}", quiet)
    return Result(metrics, run.final)


def _plot_loss(values, path, title):
    from .reports import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(values) + 1), values)
    ax.set_xlabel("iteration")
    ax.set_ylabel("matching loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _evaluate_as_made(synset, test, ds, runs: int, seed: int) -> dict | None:
    """A bptt set is tied to its learned schedule: also train the way it was made (from its stored init when
    fixed, else from fresh inits) and report that accuracy."""
    info = synset.meta.get("bptt")
    if not info:
        return None
    from .bptt import train_with_schedule

    fixed = synset.init_state is not None
    accs = []
    for r in range(1 if fixed else runs):
        model = train_with_schedule(info["model"], ds.input_shape, ds.num_classes, synset,
                                    torch.Generator().manual_seed(seed * 1000 + r), init_state=synset.init_state)
        accs.append(float((predict_logits(model, test.x).argmax(1) == test.y).float().mean()))
    return {"model": info["model"], "init_net": "fixed" if fixed else "random", **summarise_runs(accs)}


def evaluate_synset(path, data: str | None = None, *, models: list[str] = ("convnet:width=128,depth=3",),
                    runs: int = 5, epochs: int = 300, dsa: bool = False, seed: int = 0, vectorise: bool = False,
                    out=None, overwrite: bool = False, quiet: bool = False) -> Result:
    """The standard protocol on a synthetic set: fresh models, final-epoch accuracy on the real test set."""
    from .condense import SyntheticSet
    from .dsa import DSA
    from .evaluation import Protocol, evaluate_images

    started = time.time()
    synset = SyntheticSet.load(path)
    data = data or (synset.meta.get("source") or {}).get("data")
    require(data, f"{path} does not record its dataset; pass --data")
    ds = data_mod.load(data)
    require(tuple(ds.input_shape) == synset.input_shape,
            f"{path} holds images of shape {synset.input_shape}, but {data} has {tuple(ds.input_shape)}; "
            "evaluate it on the dataset it was condensed from")
    require(ds.num_classes == len(synset.classes),
            f"{path} has {len(synset.classes)} classes, but {data} has {ds.num_classes}")
    for spec in models:
        build_model(spec, ds.input_shape, ds.num_classes)  # fail on a bad spec before any output
    proto = Protocol(epochs=epochs, dsa=dsa).check()
    test = data_mod.ImageSet(data_mod.normalise(ds.test.x, synset.mean, synset.std), ds.test.y)
    targets = synset.labels if synset.label_logits is None else synset.targets()
    augment = DSA(allow_flip=ds.is_colour) if dsa else None
    with RunOutput(out, "evaluate", overwrite) as run:
        run.write_config({"command": "evaluate", "synset": str(path), "data": data, "models": list(models),
                          "runs": runs, "epochs": epochs, "dsa": dsa, "seed": seed, "vectorise": vectorise,
                          "protocol": proto.__dict__})
        results = evaluate_images(synset.images, targets, test, list(models), runs, proto, seed=seed, dsa=augment,
                                  vectorise=vectorise, num_classes=ds.num_classes)
        for spec, r in results.items():
            run.log({"model": spec, **r})
        as_made = _evaluate_as_made(synset, test, ds, runs, seed)
        metrics = {"synset": str(path), "data": data, "method": synset.meta.get("method"), "ipc": synset.ipc,
                   "models": results, **({"as_made": as_made} if as_made else {}), "epochs": epochs, "dsa": dsa,
                   "wall_seconds": round(time.time() - started, 2),
                   "peak_rss_mb": peak_rss_mb()}
        run.write_metrics(metrics)
    for spec, r in results.items():
        log(f"{spec}: {100 * r['mean']:.2f} +- {100 * r['std']:.2f}% over {runs} runs", quiet)
    return Result(metrics, run.final)
