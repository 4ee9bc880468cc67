"""Teaching without the data: recording a teacher's metadata (``metadata``) and distilling it into a student on a
transfer set made from the teacher alone (``distill_datafree``)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .. import data as data_mod
from .. import seeds
from ..errors import require
from ..files import file_sha256, final_path
from ..condense import SyntheticSet
from ..kd import Distillation
from ..models import build_model, count_parameters, model_name
from ..specs import option_values
from ..reporting import Reporter
from ..training import accuracy, fit
from .condensing import with_shorthands
from .distilling import loss_terms
from .run import Result, Run, run_function
from .training import final_metrics, make_config, model_and_data, save_trained


def teacher_for(teacher, data: str | None, trust_code: bool, val_size=None, split_seed: int = 0):
    """A teacher model file and the splits of its dataset (default: the one it records), normalised as the teacher
    saw its inputs."""
    require(isinstance(teacher, (str, Path)), "the teacher must be a model file (.safetensors)")
    model, meta, _, ds = model_and_data(teacher, data, "teacher", trust_code)
    norm = meta["normalisation"]
    splits = data_mod.split(ds, val_size=val_size, seed=split_seed, mean=norm["mean"], std=norm["std"])
    return model, meta, splits


def metadata(teacher, *, data: str | None = None, records: str = "top", temperature: float = 1.0, out=None,
             overwrite: bool = False, val_size: int | None = None, split_seed: int = 0, max_full: int = 1536,
             modes: int = 32, quiet: bool = False, trust_code: bool = False) -> Result:
    """Teacher metadata (Lopes et al. 2017): per-class activation records (``top``, ``all`` or ``spectral``) of
    ``teacher`` on the training split of ``data`` (default: the teacher's dataset), written to the file ``out``,
    which says its size next to the training set's. ``max_full``: the widest layer recorded with a full covariance;
    ``modes``: eigen-pairs kept per layer (spectral)."""
    from ..datafree import KINDS, TeacherRecords, model_digest, record

    reporter = Reporter(quiet)
    require(records in KINDS, f"--records must be one of {', '.join(KINDS)}, got '{records}'")
    require(isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0,
            f"--temperature must be a finite number > 0, got {temperature}")
    require(type(max_full) is int and 1 <= max_full <= 1 << 16, f"--max-full must be 1..65536, got {max_full}")
    require(type(modes) is int and 1 <= modes <= 4096, f"--modes must be 1..4096 (modes kept per layer), got {modes}")
    target = Path(out) if out else Path(f"metadata-{records}.safetensors")
    require(target.suffix == ".safetensors", f"--out must name a .safetensors file, got {target}")
    require(not target.is_dir(), f"--out {target} is a folder; name a .safetensors file")
    require(not target.exists() or overwrite, f"{target} exists; choose another --out or pass --overwrite")
    require(target.parent.exists(), f"folder {target.parent} does not exist")
    model, meta, splits = teacher_for(teacher, data, trust_code, val_size, split_seed)
    started = time.time()
    passes = 2 if records == "spectral" else 1  # spectral: the graph's modes first, then coordinates on them
    bar = reporter.bar(passes * math.ceil(len(splits.train) / 512), f"metadata {records}", unit="batches")
    stats = record(model, splits.train.x, splits.train.y, splits.num_classes, records, temperature,
                   max_full=max_full, modes=modes, progress=lambda i: bar.update(1))
    bar.close()
    rec = TeacherRecords(kind=records, temperature=float(temperature), classes=list(splits.classes),
                         input_shape=tuple(splits.input_shape), mean_px=tuple(splits.mean), std_px=tuple(splits.std),
                         teacher=model_digest(model), stats=stats,
                         meta={"teacher_file": final_path(teacher), "teacher_sha256": file_sha256(teacher),
                               "data": splits.describe(), "options": {"max_full": max_full, "modes": modes}})
    saved = rec.save(target, train_images=len(splits.train))
    metrics = {"records": records, "temperature": temperature, "size_bytes": saved["size_bytes"],
               "training_set": saved["training_set"], "wall_seconds": round(time.time() - started, 2),
               "layers": {p: {"width": int(s["mean"].shape[1]),
                              "form": "spectral" if "basis" in s else ("full" if "chol" in s else "diagonal")}
                          for p, s in stats.items()}}
    reporter.info(f"recorded {records} metadata of {final_path(teacher)} ({metrics['size_bytes']:,} bytes; the "
                  f"training set is {saved['training_set']['bytes_uint8']:,} bytes as 8-bit pixels); wrote {target}")
    return Result(metrics, target)


DATAFREE_SHORTHANDS = {"samples": "samples", "iterations": "iterations"}


def datafree_method(method, shorthands: dict | None = None, *, trust_code: bool = True):
    """A DataFreeMethod from a spec string (or one), with --samples/--iterations applied as its options."""
    from ..datafree import DATAFREE

    return with_shorthands(DATAFREE, method, shorthands, DATAFREE_SHORTHANDS, "data-free", trust_code)


@run_function("datafree")
def distill_datafree(teacher, *, method="noise", student: str = "mlp:hidden=32", data: str | None = None,
             losses: list | None = None, temperature: float | None = None, samples: int | None = None,
             iterations: int | None = None, out=None, overwrite: bool = False, resume: bool = False,
             checkpoint_every: int = 1, quiet: bool = False, trust_code: bool = False, log=("jsonl",),
             **options) -> Result:
    """Distill ``teacher`` into ``student`` without its training data: ``method`` (``noise``, ``lopes:metadata=F``,
    ``deepinversion``, ``dafl``; see ``DATAFREE.help()``) makes a transfer set from the teacher alone, then the
    student learns from the teacher on it (``losses``, default ``kd`` at ``temperature``, weight 1). ``samples`` and
    ``iterations`` set the method's options of those names (the transfer set's size and the synthesis budget);
    ``options``: the student's training (TrainConfig: epochs, lr, seed, ...). The data's test split is only measured,
    at the end; the validation figure is the student's agreement with the teacher on held-out transfer images.
    Writes transfer.safetensors (a synthetic set: teacher labels and logits), transfer.png, model.safetensors and
    metrics.json."""
    from ..datafree import FrozenTeacher, synthesize, transfer_set, transfer_splits
    from ..kd.losses.kd import KD
    from ..kd.teachers import ModelTeacher, cache_teacher

    method = datafree_method(method, {"samples": samples, "iterations": iterations})
    if losses is None:
        terms = [KD(T=temperature if temperature is not None else KD.T, w=1.0)]
    else:
        terms = loss_terms(losses, temperature, None)
    cfg = make_config(options)
    job = Run("distill_datafree", locals(), omit=("samples", "iterations", "temperature"), method=str(method),
              losses=[str(t) for t in terms])
    reporter = job.reporter
    model, meta, splits = teacher_for(teacher, data, trust_code)
    frozen = FrozenTeacher(model, splits.input_shape, splits.classes, splits.mean, splits.std, device=cfg.device)
    method.check_teacher(frozen)  # a teacher the method cannot use fails before any output
    net = build_model(student, splits.input_shape, splits.num_classes, seeds.generator(cfg.seed))
    student_name = model_name(student)
    teacher_accuracy, _ = accuracy(model, splits.test, cfg.device)
    config = {"command": "datafree", "teacher": final_path(teacher), "data": splits.spec,
              "method": method.describe(), "student": student_name, "losses": [t.describe() for t in terms],
              **cfg.as_dict()}
    with job.output(config) as run:
        kept = run.path("transfer.safetensors")
        if kept.exists():  # a resumed run: the transfer set was finished before the stop
            transfer = SyntheticSet.load(kept)
        else:
            bar = reporter.bar(method.steps(method.samples), f"datafree {method.name}", unit="iterations")

            def on_iteration(it, loss):
                run.log({"iteration": it + 1, "loss": loss})
                bar.update(1)

            made = synthesize(frozen, method, seed=cfg.seed, progress=on_iteration)
            bar.close()
            transfer = transfer_set(made, method, cfg.seed, splits, final_path(teacher))
            transfer.save(kept)
        transfer.save_grid(run.path("transfer.png"))
        student_splits = transfer_splits(splits, transfer, cfg.seed)
        source = ModelTeacher(model, [p for t in terms for p in t.teacher_taps()], device=cfg.device)
        if cfg.augment == "none":  # the transfer images never change: the teacher answers each of them once
            source = cache_teacher(source, student_splits.train.x.to(cfg.device))
        objective = Distillation(source, terms, examples=len(student_splits.train))
        extra = objective.attach(net.to(cfg.device), student_splits.train.x[:8].to(cfg.device), torch.arange(8),
                                 generator=seeds.generator(cfg.seed, "connectors"))
        reporter.info(f"datafree {method.name}: {len(transfer.labels):,} transfer images from "
                      f"{final_path(teacher)}; {student_name} learns with {', '.join(str(t) for t in terms)}")
        result = fit(net, student_splits, cfg, objective=objective, extra_modules=extra, on_epoch=run.log,
                     on_step=run.log_step, reporter=reporter, desc="datafree",
                     checkpoints=run.checkpoints("fit", checkpoint_every))
        metrics = final_metrics(net, student_splits, cfg, result, job.started)
        metrics["teacher_agreement_held_out"] = metrics.pop("val_accuracy")
        metrics.update(method=method.name, method_options=option_values(method), student=student_name,
                       teacher_mode="cached" if cfg.augment == "none" else "live",
                       teacher_test_accuracy=teacher_accuracy, transfer_images=len(transfer.labels),
                       transfer_class_counts=torch.bincount(transfer.labels, minlength=splits.num_classes).tolist(),
                       synthesis_seconds=transfer.meta.get("budget", {}).get("synthesis_seconds"),
                       parameters=count_parameters(net))
        recipe = {"command": "datafree", "teacher": final_path(teacher), "teacher_sha256": file_sha256(teacher),
                  "method": method.describe(), "losses": [t.describe() for t in terms], **cfg.as_dict()}
        save_trained(run, net, student_name, splits, recipe, metrics)
        job.finish(metrics)
    return job.result(f"student test accuracy {metrics['test_accuracy']:.4f} (teacher {teacher_accuracy:.4f})", net)
