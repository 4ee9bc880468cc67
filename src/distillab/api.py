"""The Python API: one function per command. The CLI only parses flags and calls these.

    import distillab
    teacher = distillab.train(data="digits", model="convnet:width=32", epochs=10)
    student = distillab.distill(data="digits", teacher=teacher.out / "model.safetensors",
                                student="mlp:hidden=32", temperature=4, alpha=0.9)
    print(student.metrics["test_accuracy"])

Each function wires the concepts together (data, models, kd, condense, evaluation), writes its output folder
all-or-nothing and reports through one Reporter (``quiet=True`` silences it). Options not given take the defaults
of their options dataclass (``TrainConfig``, ``Protocol``, a loss term's or a method's fields).
Files from elsewhere never make distillab import code unless ``trust_code=True`` (``--trust-code``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import data as data_mod
from . import distributed, seeds
from .checkpoint import Interrupted, signals_stop_loops, stop_signal
from .condense import LABELS, METHODS, Method, SyntheticSet, check_ipc, condense, parse_labels, register_method
from .condense.synset import SYNSET_FORMAT
from .errors import DistillabError, require
from .evaluation import EvalProtocol, evaluate_set, summarise
from .checkpoint import loop_running
from .trajectories import ExpertConfig, expert_model, expert_path, parameter_layout
from .figures import plot_loss, plot_matrix
from .files import atomic_path, file_sha256, final_path, load_tensors, read_meta, to_jsonable
from .kd import (LOSSES, Distillation, Hinton, LossTerm, label_smoothing_warnings, parse_loss, register_loss,
                 resolve_teacher)
from .kd.meter import dark_knowledge_report
from .models import (MODEL_FORMAT, Renormalise, build_model, check_compatible, count_parameters, load_model, model_name,
                     save_model)
from .outputs import RunOutput, default_out, peak_rss_mb
from .protocols import PROTOCOLS, Protocol, parse_protocol, register_protocol
from .pseudolabel import Mixing, PseudoLabelConfig
from .registry import IMPORT_PREFIX
from .reporting import Reporter, log_to_stderr
from .specs import option_fields, option_values, options_help
from .speed import tune_allocator
from .training import TrainConfig, accuracy, fit, predict_logits, resolve_device

__all__ = ["Result", "train", "distill", "chain", "repeat_over_seeds", "evaluate", "evaluate_model", "evaluate_synset",
           "predict", "pseudolabel", "inspect_teacher", "condense_data", "export", "export_synset", "import_synset",
           "load", "resume",
           "data_fetch", "data_info", "register_loss", "register_method",
           "metadata", "distill_datafree", "audit", "serve", "tune",
           "method_options_of", "method_grid_specs", "protocol_from", "register_protocol",
           # what the CLI uses besides the commands: options dataclasses, checks, the reporter's and signals' set-up
           "TrainConfig", "Protocol", "EvalProtocol", "Hinton", "PseudoLabelConfig", "Mixing", "IMPORT_PREFIX", "code_named_in", "to_jsonable", "log_to_stderr",
           "signals_stop_loops", "stop_signal", "Interrupted", "tune_allocator", "distributed_setup",
           "distributed_teardown", "is_main_process"]

distributed_setup, distributed_teardown, is_main_process = distributed.setup, distributed.teardown, distributed.is_main


@dataclass
class Result:
    metrics: dict
    out: Path | None = None
    model: nn.Module | None = None


def _call(function: str, **kwargs) -> dict | None:
    """The call that makes a run, as ``api.resume`` makes it again; None when an argument is not plain data (a
    Python teacher object): such a run resumes only by calling the function again with ``resume=True``."""
    kwargs = {k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()}
    kwargs = {k: [str(x) if isinstance(x, Path) else x for x in v] if isinstance(v, (list, tuple)) else v
              for k, v in kwargs.items()}
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError):
        return None
    return {"function": function, "kwargs": kwargs}


# Where a run is written and how it reports: not part of the call (a resumed run may change them); every other
# argument is, so that no option that changes a result can be left out of the record.
RUN_PLUMBING = frozenset({"out", "overwrite", "resume", "quiet", "log", "checkpoint_every"})


def _call_of(function: str, arguments: dict, omit: tuple[str, ...] = (), **recorded) -> dict | None:
    """The call that makes a run, read off the signature of ``function`` (a run function of this module, by name:
    a parameter may shadow it): each of its arguments (``arguments``: the function's ``locals()``; ``**options``
    spread out) but ``RUN_PLUMBING``, ``omit`` (arguments folded into another one) and those left at None;
    ``recorded`` gives an argument's recorded form (a spec string for an object)."""
    kwargs = {}
    for name, param in inspect.signature(globals()[function]).parameters.items():
        if name in RUN_PLUMBING or name in omit:
            continue
        if param.kind is param.VAR_KEYWORD:
            kwargs.update({k: v for k, v in arguments[name].items() if k not in RUN_PLUMBING})
        else:
            kwargs[name] = arguments[name]
    kwargs.update(recorded)
    return _call(function, **{k: v for k, v in kwargs.items() if v is not None})


def _finished(folder: Path) -> Result | None:
    """A nested run (a chain stage, a seed) that finished before the run was stopped."""
    path = Path(folder) / "metrics.json"
    return Result(json.loads(path.read_text()), Path(folder)) if path.exists() else None


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


def _model_and_data(path, data: str | None, what: str, trust_code: bool):
    """A model file and the dataset it is used on (default: the one it records), checked to fit each other."""
    model, meta = load_model(path, trust_code=trust_code)
    data = data or (meta.get("data") or {}).get("data")
    require(data, f"{path} does not record its dataset; pass --data")
    ds = data_mod.load(data)
    check_compatible(meta, ds.classes, ds.input_shape, what, path)
    return model, meta, ds.spec, ds


def _final_metrics(model, splits, cfg, fit_result, started) -> dict:
    # inside a search (distillab tune) the test split is sealed: a trial has no test figures at all
    test_acc, test_err = (None, None) if data_mod.is_test_sealed(splits) else accuracy(model, splits.test, cfg.device)
    val_acc, _ = accuracy(model, splits.val, cfg.device)
    return {"test_accuracy": test_acc, "test_errors": test_err, "test_size": len(splits.test),
            "val_accuracy": val_acc, "best_val_accuracy": fit_result.best_val_accuracy,
            "best_epoch": fit_result.best_epoch, "epochs": cfg.epochs, "wall_seconds": round(time.time() - started, 2),
            "train_seconds": round(fit_result.seconds, 2), "peak_rss_mb": peak_rss_mb(),
            "precision": fit_result.precision,
            **({"precision_probe": fit_result.precision_probe} if fit_result.precision_probe else {})}


def _test_line(metrics: dict) -> str:
    if metrics.get("test_accuracy") is None:
        return f"validation accuracy {metrics['val_accuracy']:.4f} (test split sealed)"
    return f"test accuracy {metrics['test_accuracy']:.4f} ({metrics['test_errors']} errors)"


def _save(run: RunOutput, model, spec, splits, recipe, metrics):
    save_model(run.path("model.safetensors"), model, spec=spec, input_shape=splits.input_shape,
               classes=splits.classes, mean=splits.mean, std=splits.std, recipe=recipe, data=splits.describe(),
               metrics={k: metrics[k] for k in ("test_accuracy", "val_accuracy") if k in metrics})


def train(data: str = "digits", model: str = "mlp:hidden=100", *, pseudo=None, pseudo_ratio: str | None = None,
          out=None, overwrite: bool = False, resume: bool = False, checkpoint_every: int = 1,
          val_size: int | None = None, split_seed: int = 0, quiet: bool = False, log=("jsonl",), **options) -> Result:
    """Train ``model`` on ``data`` with cross-entropy; writes model.safetensors and metrics to ``out``.
    ``options``: the fields of ``TrainConfig`` (epochs, lr, ...). A checkpoint is kept every ``checkpoint_every``
    epochs (0: only when stopped by a signal); ``resume=True`` continues an unfinished run in ``out``.
    ``pseudo``: a pseudo-label file (``pseudolabel``) whose rows are mixed into every batch, ``pseudo_ratio``
    labelled:pseudo rows (default ``pseudolabel.Mixing``'s 6:4)."""
    started = time.time()
    call = _call_of("train", locals())
    reporter = Reporter(quiet)
    cfg = make_config(options)
    splits = load_splits(data, val_size, split_seed)
    mix, pseudo_record = _pseudo_rows(pseudo, pseudo_ratio, splits, reporter)
    net = build_model(model, splits.input_shape, splits.num_classes, seeds.generator(cfg.seed))
    data, model = splits.spec, model_name(model)  # what files record: spec strings (python:... for objects)
    config = {"command": "train", "data": data, "model": model, "val_size": splits.val_size,
              "split_seed": split_seed, **cfg.as_dict(), **pseudo_record}
    with RunOutput(out, "train", overwrite, resume, call, log) as run:
        run.write_config(config)
        reporter.info(f"{'resume' if run.resumed else 'train'} {model} ({count_parameters(net):,} parameters) on "
                      f"{data}: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test")
        result = fit(net, splits, cfg, on_epoch=run.log, on_step=run.log_step, reporter=reporter, desc="train",
                     checkpoints=run.checkpoints("fit", checkpoint_every), pseudo=mix)
        metrics = _final_metrics(net, splits, cfg, result, started)
        metrics["parameters"] = count_parameters(net)
        _save(run, net, model, splits, {"command": "train", **cfg.as_dict(), **pseudo_record}, metrics)
        run.write_metrics(metrics)
    reporter.info(f"{_test_line(metrics)}; "
                  f"wrote {final_path(run.final)}")
    return Result(metrics, run.final, net)


def _pseudo_rows(pseudo, pseudo_ratio, splits, reporter):
    """(rows mixed into training, what records say of them), or (None, {}) without a pseudo-label file."""
    if pseudo is None:
        require(pseudo_ratio is None, "--pseudo-ratio goes with --pseudo FILE.npz")
        return None, {}
    from .pseudolabel import pseudo_rows

    return pseudo_rows(pseudo, splits, pseudo_ratio, reporter)


# --------------------------------------------------------------------------------------------------------------
# Distillation


def loss_terms(losses, temperature: float | None, alpha: float | None, student_tap: str = "penultimate",
               teacher_tap: str = "penultimate") -> list[LossTerm]:
    """The objective's terms: ``losses`` (spec strings or LossTerm objects), or the Hinton shorthand."""
    if losses:
        require(temperature is None and alpha is None,
                "--temperature/--alpha are a shorthand for '--loss kd:T=..,w=.. --loss ce:w=..'; with --loss, "
                "give the temperature and weights in the loss terms instead")
        return [t if isinstance(t, LossTerm) else parse_loss(t, student_tap, teacher_tap) for t in losses]
    return Hinton(**{k: v for k, v in (("temperature", temperature), ("alpha", alpha)) if v is not None}).terms()


def _service_teacher(url: str, token_file, query: dict, cache_path: Path, splits, cfg, extra_x, reporter):
    """A teacher behind a URL and its answer cache; without augmentation every training input is asked once, up
    front (the cache first). Returns (teacher, how, answers) -- ``answers`` counts what was paid for."""
    from .kd.teachers import ServiceTeacher, table_of_service
    from .service.client import AnswerCache, QueryOptions, ServiceAnswers, ServiceClient
    from .service.tokens import read_token_file

    require(extra_x is None, "--teacher-url with --pseudo is not supported; pseudo-label first, then distill")
    options = QueryOptions(**{k: v for k, v in query.items() if v is not None}).check()
    client = ServiceClient(url, read_token_file(token_file) if token_file else None, options)
    info = client.info
    require(tuple(info["input_shape"]) == tuple(splits.input_shape),
            f"the teacher service at {url} takes inputs of shape {tuple(info['input_shape'])}, but {splits.spec} has "
            f"{tuple(splits.input_shape)}")
    require(len(info["classes"]) == splits.num_classes,
            f"the teacher service at {url} predicts {len(info['classes'])} classes, but {splits.spec} has "
            f"{splits.num_classes}")
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    answers = ServiceAnswers(client, AnswerCache(cache_path, info))
    teacher = ServiceTeacher(answers, splits.mean, splits.std)
    if cfg.augment in (None, "", "none"):
        return table_of_service(teacher, splits.train.x, reporter), f"service {info['output']} (cached)", answers
    return teacher, f"service {info['output']} (live: every augmented view is a query)", answers


def distill(data: str = "digits", teacher=None, student: str = "mlp:hidden=32", *, teacher_outputs=None,
            teacher_url: str | None = None, token_file=None, concurrency: int | None = None,
            query_batch: int | None = None, query_cache=None, retries: int | None = None,
            query_rate: float | None = None, follow_redirects: bool | None = None, cache_checks: int | None = None,
            temperature: float | None = None, alpha: float | None = None, losses: list | None = None,
            student_tap: str = "penultimate", teacher_tap: str = "penultimate", cache="auto", out=None,
            overwrite: bool = False, resume: bool = False, checkpoint_every: int = 1, val_size: int | None = None,
            split_seed: int = 0, quiet: bool = False, trust_code: bool = False, log=("jsonl",), pseudo=None,
            pseudo_ratio: str | None = None, **options) -> Result:
    """Distill ``teacher`` into a fresh ``student``.

    teacher: a model file, a list of them (an ensemble), an nn.Module, or a function x -> probabilities.
    teacher_url: a teacher service (``distillab serve``) instead: ``token_file`` holds its bearer token;
    ``concurrency`` requests in flight, ``query_batch`` rows each, at most ``query_rate`` requests per second,
    ``retries`` attempts after a failed one (5xx, 429, time-out, refused; exponential back-off from 0.5 s, or the
    service's Retry-After); a redirect is refused unless ``follow_redirects`` (then the token goes only to the
    URL's own scheme, host and port); answers are cached by input hash in
    ``query_cache`` (default: OUT.queries.sqlite beside the run), so a repeated or resumed run asks nothing twice
    but ``cache_checks`` rows per batch found there (default 16, 0: none), asked again to refuse a forged cache.
    losses: ``["kd:T=4,w=0.9", "ce:w=0.1"]`` (or LossTerm objects); default Hinton's
    ``alpha * T^2 * KL + (1 - alpha) * CE`` with ``temperature``/``alpha`` (``kd.Hinton``'s defaults).
    cache: "auto" caches the teacher's outputs when there is no augmentation (the teacher then costs nothing).
    checkpoint_every, resume, pseudo, pseudo_ratio: as for ``train``; the teacher sees the pseudo-labelled rows
    too (a live or cached model, or a function; not a black box's table).
    """
    started = time.time()
    reporter = Reporter(quiet)
    out = Path(out) if out else default_out("kd")
    call = _call_of("distill", locals())
    cfg = make_config(options)
    terms = loss_terms(losses, temperature, alpha, student_tap, teacher_tap)
    splits = load_splits(data, val_size, split_seed)
    net = build_model(student, splits.input_shape, splits.num_classes, seeds.generator(cfg.seed))
    data, student = splits.spec, model_name(student)
    tap_paths = [p for t in terms for p in t.teacher_taps()]
    mix, pseudo_record = _pseudo_rows(pseudo, pseudo_ratio, splits, reporter)
    answers = None
    if teacher_url is not None:
        require(teacher is None and teacher_outputs is None,
                "give one teacher: --teacher, --teacher-outputs or --teacher-url")
        require(not tap_paths, "a teacher service gives only its outputs; feature losses need --teacher MODEL")
        query_cache = Path(query_cache) if query_cache else out.with_name(out.name + ".queries.sqlite")
        query = {"concurrency": concurrency, "query_batch": query_batch, "retries": retries, "rate": query_rate,
                 "follow_redirects": follow_redirects, "cache_checks": cache_checks}
        source, how, answers = _service_teacher(teacher_url, token_file, query, query_cache,
                                                splits, cfg, mix.rows.x if mix else None, reporter)
        teacher_meta = None
    else:
        source, teacher_meta, how = resolve_teacher(teacher, teacher_outputs, splits, cfg, tap_paths, cache,
                                                    trust_code, reporter, extra_x=mix.rows.x if mix else None)
    for message in label_smoothing_warnings(teacher_meta, terms, cfg.label_smoothing):
        reporter.warn(message)
    objective = Distillation(source, terms)
    sample = torch.arange(min(8, len(splits.train)))
    extra = objective.attach(net.to(cfg.device), splits.train.x[sample].to(cfg.device), sample,
                             generator=seeds.generator(cfg.seed, "connectors"))
    files = [teacher_outputs] if teacher_outputs is not None else (
        list(teacher) if isinstance(teacher, (list, tuple)) else [teacher])
    files = [f for f in files if isinstance(f, (str, Path))]
    teacher_desc = [final_path(f) for f in files] if len(files) > 1 else (
        final_path(files[0]) if files else teacher_url or type(teacher).__name__)
    recipe = {"command": "kd", "teacher": teacher_desc, "teacher_mode": how,
              "teacher_sha256": {final_path(f): file_sha256(f) for f in files},
              "losses": [t.describe() for t in terms], **cfg.as_dict(), **pseudo_record}
    config = {"command": "kd", "data": data, "student": student, "val_size": splits.val_size,
              "split_seed": split_seed, **recipe}
    with RunOutput(out, "kd", overwrite, resume, call, log) as run:
        run.write_config(config)
        reporter.info(f"kd {student} ({count_parameters(net):,} parameters) from {teacher_desc} [{how}] on {data}; "
                      f"losses: {', '.join(str(t) for t in terms)}")
        result = fit(net, splits, cfg, objective=objective, extra_modules=extra, on_epoch=run.log,
                     on_step=run.log_step, reporter=reporter, desc="kd",
                     checkpoints=run.checkpoints("fit", checkpoint_every), pseudo=mix)
        metrics = _final_metrics(net, splits, cfg, result, started)
        metrics["parameters"] = count_parameters(net)
        metrics["teacher_mode"] = how
        if answers is not None:  # what the service cost: rows paid for, and what the cache saved
            metrics.update(teacher_queries=answers.queried, teacher_requests=answers.client.requests,
                           cache_hits=answers.hits, cache_rows_checked=answers.checked, query_retries=answers.client.retried,
                           query_seconds=round(answers.client.seconds, 2), query_cache=str(answers.cache.path))
            if "live" in how:  # every augmented view is a query: the bill grows with the epochs
                metrics["queries_per_epoch"] = round(answers.queried / max(1, cfg.epochs), 1)
            answers.cache.close()
        if teacher_meta and len(files) > 1:  # an ensemble: each member's recorded accuracy (not the average's)
            metrics["teacher_members_test_accuracy"] = [(read_meta(f).get("metrics") or {}).get("test_accuracy")
                                                        for f in files]
        elif teacher_meta:  # a teacher loaded from a file: its own recorded accuracy, for comparison
            metrics["teacher_test_accuracy"] = (teacher_meta.get("metrics") or {}).get("test_accuracy")
        _save(run, net, student, splits, recipe, metrics)
        run.write_metrics(metrics)
    reporter.info(f"{_test_line(metrics)}; "
                  f"wrote {final_path(run.final)}")
    return Result(metrics, run.final, net)


def chain(data: str = "digits", teacher=None, students: list[str] = (), *, from_all: bool = False, out=None,
          overwrite: bool = False, resume: bool = False, quiet: bool = False, **kd_options) -> Result:
    """Teacher -> assistant -> ... -> student (Mirzadeh et al. 2020): each stage distils from the previous one
    (``from_all``: from the ensemble of the teacher and every earlier stage). Every stage is saved; a resumed
    chain keeps its finished stages and resumes the one in progress."""
    require(teacher is not None, "a chain needs a teacher model file")
    require(len(students) >= 1, "a chain needs at least one student spec after the teacher")
    require("seeds" not in kd_options, "--seeds with --chain: run the chain once per seed instead")
    reporter = Reporter(quiet)
    loss_terms(kd_options.get("losses"), kd_options.get("temperature"), kd_options.get("alpha"))  # fail early
    started = time.time()
    call = _call_of("chain", locals(), students=list(students))
    with RunOutput(out, "chain", overwrite, resume, call) as run:
        run.write_config({"command": "kd-chain", "data": data, "teacher": final_path(teacher)
                          if isinstance(teacher, (str, Path)) else type(teacher).__name__, "students": list(students),
                          "from_all": from_all, **{k: v for k, v in kd_options.items() if not callable(v)}})
        sources = [teacher]
        stages = []
        run.path("metrics.jsonl").unlink(missing_ok=True)  # rewritten stage by stage, resumed or not
        for i, spec in enumerate(students, 1):
            source = list(sources) if from_all and len(sources) > 1 else sources[-1]
            reporter.info(f"chain stage {i}/{len(students)}: {spec} from "
                          f"{[final_path(p) for p in source] if isinstance(source, list) else final_path(source)}")
            r = _finished(run.path(f"stage{i}")) if run.resumed else None
            r = r or distill(data=data, teacher=source, student=spec, out=run.path(f"stage{i}"), quiet=quiet,
                             resume=run.resumed, **kd_options)
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


def repeat_over_seeds(fn, seeds: list[int], *, out=None, overwrite: bool = False, resume: bool = False,
                      command: str = "run", **kwargs) -> Result:
    """Run ``fn`` (``train`` or ``distill``) once per seed into OUT/seed-N; OUT/metrics.json gives each figure as
    {mean, std, runs}. A resumed run keeps the seeds that finished and resumes the one in progress."""
    require(len(set(seeds)) == len(seeds), f"--seeds repeats a seed: {seeds}")
    kwargs.pop("seed", None)
    results = []
    call = _call_of("repeat_over_seeds", locals(), fn=fn.__name__, seeds=list(seeds))
    with RunOutput(out, command, overwrite, resume, call) as run:
        run.write_config({"command": command, "seeds": seeds, **{k: v for k, v in kwargs.items()
                                                                  if not callable(v) or isinstance(v, str)}})
        run.path("metrics.jsonl").unlink(missing_ok=True)  # rewritten seed by seed, resumed or not
        for seed in seeds:
            r = _finished(run.path(f"seed-{seed}")) if run.resumed else None
            r = r or fn(out=run.path(f"seed-{seed}"), seed=seed, resume=run.resumed, **kwargs)
            results.append(r.metrics)
            run.log({"seed": seed, **{k: v for k, v in r.metrics.items() if isinstance(v, (int, float))}})
        metrics = {"seeds": seeds}
        for key, value in results[0].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[key] = summarise([m[key] for m in results])
        run.write_metrics(metrics)
    return Result(metrics, run.final)


def tune(command: str, grid: dict, *, seeds=(0, 1, 2), budget: float | None = None, out=None,
         overwrite: bool = False, quiet: bool = False, **options) -> Result:
    """A grid search for ``command`` (``train``, ``kd`` or ``condense``, i.e. ``train()`` / ``distill()`` /
    ``condense_scored()``): ``grid`` maps option names to the values to try (``{"lr": [0.01, 0.05],
    "temperature": [2, 4, 8]}``, for condense the method's shorthands such as ``lr_img``), ``options`` are the fixed
    ones (for condense also ``protocol``, the models that score a set -- a Protocol, or a dict of its options with
    ``runs`` defaulting to ``tuning.CONDENSE_TRIAL_RUNS`` -- ``final_runs`` and ``as_made``).
    Every trial is scored on the validation split with the test split sealed; the best point is re-run with each
    of ``seeds`` and only then measured on the test set. ``budget``: minutes after which no new trial starts.
    Writes OUT/trials.jsonl, OUT/trials.md, the runs, and metrics.json (best point, trials, final test figures)."""
    from .tuning import search

    functions = {"train": train, "kd": distill, "condense": condense_scored}
    require(command in functions, f"tune runs train, kd or condense, got '{command}'")
    if command == "condense":  # the scoring options fail before any trial runs, not after the search
        if isinstance(options.get("protocol"), (dict, str)):  # from the CLI: a spec, or {"name": spec, flag: ...}
            from .tuning import CONDENSE_TRIAL_RUNS

            given = options["protocol"]
            given = dict(given) if isinstance(given, dict) else {"name": given}
            name = given.pop("name", None)
            if "runs" not in given and "runs" not in PROTOCOLS.split(name or "distillab")[1]:
                given["runs"] = CONDENSE_TRIAL_RUNS
            options["protocol"] = protocol_from(name, given)
        scorer = options.get("protocol", Protocol())
        if options.get("final_runs") is not None:
            dataclasses.replace(scorer, runs=options["final_runs"])
        ds = data_mod.load(options.get("data", "digits"))
        for spec in scorer.models:
            build_model(spec, ds.input_shape, ds.num_classes)
        if options.get("as_made"):
            made_by = type(method_from(options.get("method", "dm"), trust_code=options.get("trust_code", False)))
            require(made_by.models_as_made.__func__ is not Method.models_as_made.__func__,
                    f"--eval-as-made: a {made_by.name} set is not made by training a model in a known way; score it "
                    "by the protocol instead")
    if command in ("train", "kd"):  # every grid point's training options are checked before the first trial
        from .training import TrainConfig
        from .tuning import grid_points

        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        for point in grid_points(grid):
            given = {**options, **point}
            try:
                TrainConfig(**{k: v for k, v in given.items() if k in fields and v is not None}).check()
            except (DistillabError, TypeError) as e:
                raise DistillabError(f"tune {command}: the grid point {point} cannot run: {e}") from None
    reporter = Reporter(quiet)
    options = {**options, "quiet": True}
    with RunOutput(out, "tune", overwrite) as run:
        run.write_config({"command": "tune", "tuned": command, "grid": grid, "seeds": list(seeds),
                          "budget_minutes": budget, "options": {k: v for k, v in options.items()
                                                                if not callable(v) or isinstance(v, str)}})
        result = search(functions[command], options, grid, run.dir, seeds=tuple(seeds), budget_minutes=budget,
                        reporter=reporter)
        run.write_metrics({"command": command, **result})
    final = result["final"]["test_accuracy"]
    reporter.info(f"tune {command}: best {result['best']} of {result['trials_run']} trials; test accuracy "
                  f"{100 * final['mean']:.2f} +- {100 * final['std']:.2f}% over {len(seeds)} seeds")
    return Result({"command": command, **result}, run.final)


def inspect_teacher(model_path, data: str | None = None, *, temperatures=(1, 2, 4, 8, 20), top_pairs: int = 5,
                    quiet: bool = False, trust_code: bool = False) -> dict:
    """Accuracy, calibration, dark knowledge per temperature, confused class pairs, label-smoothing signs."""
    model, meta, data, ds = _model_and_data(model_path, data, "teacher", trust_code)
    norm = meta["normalisation"]
    logits = predict_logits(model, data_mod.normalise(ds.test.x, norm["mean"], norm["std"]))
    report = {"model": str(model_path), "data": data,
              **dark_knowledge_report(logits, ds.test.y, ds.classes, meta, temperatures=temperatures,
                                      top_pairs=top_pairs)}
    reporter = Reporter(quiet)
    for message in report["warnings"]:
        reporter.warn(message)
    return report


# --------------------------------------------------------------------------------------------------------------
# Evaluation, prediction and data


def evaluate(path, data: str | None = None, *, protocol=None, device: str | None = None, out=None,
             overwrite: bool = False, quiet: bool = False, trust_code: bool = False, **options) -> Result:
    """Evaluate a model file on a dataset, or a synthetic set by a protocol (``protocol``: a name such as
    ``vico-dc``, a spec ``vico-dsa:runs=5`` or an EvalProtocol; default ``distillab``; ``options``: models, runs,
    epochs, dsa, seed, vectorise, ...), whichever ``path`` holds; a list of synthetic sets gives a matrix
    (``evaluate_synset``)."""
    options = {k: v for k, v in options.items() if v is not None}
    device = resolve_device(device or "cpu")
    paths = synset_paths(path)
    if len(paths) > 1:
        models = [p for p in paths if read_meta(p).get("format") != SYNSET_FORMAT]
        require(not models, f"{models[0] if models else ''} is not a synthetic set; several files are evaluated "
                            "together only when all are synthetic sets: evaluate a model file on its own")
        return evaluate_synset(paths, data, protocol=protocol, out=out, overwrite=overwrite, quiet=quiet,
                               trust_code=trust_code, device=device, **options)
    path = paths[0]
    if read_meta(path).get("format") == SYNSET_FORMAT:
        return evaluate_synset(path, data, protocol=protocol, out=out, overwrite=overwrite, quiet=quiet,
                               trust_code=trust_code, device=device, **options)
    given = [*(["protocol"] if protocol is not None else []), *options]
    require(not given, f"{', '.join('--' + k for k in given)} apply to synthetic sets; {path} holds a model")
    return evaluate_model(path, data, out=out, overwrite=overwrite, device=device, quiet=quiet,
                          trust_code=trust_code)


def evaluate_model(model_path, data: str | None = None, *, out=None, overwrite: bool = False, device: str = "cpu",
                   quiet: bool = False, write: bool = True, trust_code: bool = False) -> Result:
    """Accuracy of a saved model on a dataset's test set and on the validation split it was selected on."""
    started = time.time()
    model, meta, data, ds = _model_and_data(model_path, data, "model", trust_code)
    recorded = meta.get("data") or {}
    same = recorded.get("data") == data
    norm = meta["normalisation"]
    splits = data_mod.split(ds, val_size=recorded.get("val_size") if same else None,
                            seed=recorded.get("split_seed", 0) if same else 0, mean=norm["mean"], std=norm["std"])
    test_acc, test_err = accuracy(model, splits.test, device)
    val_acc, _ = accuracy(model, splits.val, device)
    metrics = {"model": final_path(model_path), "model_sha256": file_sha256(model_path), "data": data,
               "test_accuracy": test_acc, "test_errors": test_err,
               "test_size": len(splits.test), "val_accuracy": val_acc, "wall_seconds": round(time.time() - started, 2),
               "peak_rss_mb": peak_rss_mb()}
    if not write:
        return Result(metrics, None, model)
    with RunOutput(out, "evaluate", overwrite) as run:
        run.write_config({"command": "evaluate", "model": final_path(model_path), "data": data, "device": device})
        run.log(metrics)
        run.write_metrics(metrics)
    Reporter(quiet).info(f"{model_path} on {data}: test accuracy {test_acc:.4f} ({test_err} errors), val {val_acc:.4f}")
    return Result(metrics, run.final, model)


def protocol_from(protocol=None, options: dict | None = None, *, trust_code: bool = True) -> EvalProtocol:
    """An evaluation protocol from its spec (``vico-dc``, ``vico-dsa:runs=5``; None: ``distillab``) or an
    EvalProtocol, with ``options`` (the flags --models, --runs, --epochs, --dsa, --augment, ... as keywords) set as
    its options. An option the protocol does not have, or one that its spec sets as well, is a one-line error."""
    given = {k: (tuple(v) if k == "models" else v) for k, v in (options or {}).items() if v is not None}
    if isinstance(protocol, EvalProtocol):
        require(not given, "give the options of an EvalProtocol object as its fields, not as keywords")
        return protocol
    text = protocol or "distillab"
    require(isinstance(text, str), f"--protocol takes a protocol name or spec, got {text!r}"[:200])
    _, explicit = PROTOCOLS.split(text)
    proto = parse_protocol(text, trust_code=trust_code)
    fields = option_fields(type(proto))
    for key in given:
        flag = "--" + key.replace("_", "-")
        require(key in fields, f"{flag} does not apply to the {proto.name} protocol (its options: "
                               f"{options_help(type(proto))}); choose a protocol that has it, or drop it")
        require(key not in explicit, f"{flag} and --protocol {text} both set {key}; give it once")
    return dataclasses.replace(proto, **given) if given else proto


def evaluate_synset(path, data: str | None = None, *, protocol=None, seed: int = 0, vectorise: bool = False,
                    out=None, overwrite: bool = False, resume: bool = False, quiet: bool = False,
                    trust_code: bool = False, log=("jsonl",), device: str = "cpu", **options) -> Result:
    """A protocol on a synthetic set: fresh models, final-epoch accuracy on the real test set. ``protocol``: its
    name or spec (default ``distillab``; ``vico-dc``, ``vico-dsa``, ``vico-dm``, ``mtt``, ``wang2018``: the
    reference implementations' own) or an EvalProtocol; ``options``: its options (models, runs, epochs, dsa, ...),
    as the CLI's flags give them. Settings that depend on the dataset or the set (the reference's augmentation per
    dataset, a learned learning rate) are filled in per set, and metrics.json records the protocol as it ran.
    Each finished model is checkpointed; ``resume=True`` continues an unfinished run in ``out``.

    ``path`` may be a list of sets of one dataset: each is evaluated on every model (the same seeds, so a set's
    figures are those it gets alone), and metrics.json holds one entry per set under ``synsets``. Whenever there is
    more than one cell (several sets or several models) the run also writes the matrix -- rows: the set a model
    was condensed with, columns: the model evaluated on -- as ``matrix`` in metrics.json, matrix.md and matrix.png."""
    started = time.time()
    reporter = Reporter(quiet)
    paths = synset_paths(path)
    call = _call_of("evaluate_synset", locals(), path=str(paths[0]) if len(paths) == 1 else [str(p) for p in paths],
                    protocol=protocol if protocol is None or isinstance(protocol, str) else str(protocol))
    proto = protocol_from(protocol, options)
    synsets = [SyntheticSet.load(p) for p in paths]
    recorded = {p: (s.meta.get("source") or {}).get("data") for p, s in zip(paths, synsets)}
    datasets = sorted({str(d) for d in recorded.values() if d})
    require(len(datasets) <= 1, f"the sets were condensed from different datasets ({', '.join(datasets)}); "
                                "evaluate the sets of one dataset together")
    data = data or (datasets[0] if datasets else None)
    require(data, f"{paths[0]} does not record its dataset; pass --data")
    shapes = sorted({s.input_shape for s in synsets})
    require(len(shapes) == 1, f"the sets hold images of different shapes ({', '.join(map(str, shapes))}); "
                              "evaluate the sets of one dataset together")
    ds = data_mod.load(data)
    data = ds.spec
    for p, synset in zip(paths, synsets):
        require(tuple(ds.input_shape) == synset.input_shape,
                f"{p} holds images of shape {synset.input_shape}, but {data} has {tuple(ds.input_shape)}; "
                "evaluate it on the dataset it was condensed from")
        require(ds.num_classes == len(synset.classes),
                f"{p} has {len(synset.classes)} classes, but {data} has {ds.num_classes}")
        proto.for_data(data, synset)  # a setting the set cannot give (wang2018 without a schedule) fails now
    for spec in proto.models:
        build_model(spec, ds.input_shape, ds.num_classes)  # fail on a bad spec before any output
    labels = synset_labels(paths, synsets)
    several = len(paths) > 1
    with RunOutput(out, "evaluate", overwrite, resume, call, log) as run:
        run.write_config({"command": "evaluate", "synset": [final_path(p) for p in paths] if several else
                          final_path(paths[0]), "data": data, "seed": seed, "vectorise": vectorise,
                          "protocol": proto.for_data(data, synsets[0]).record()})
        rows = []
        for i, (p, synset) in enumerate(zip(paths, synsets)):
            if several:
                reporter.info(f"evaluate set {i + 1}/{len(paths)}: {labels[i]}")
            test = data_mod.ImageSet(data_mod.normalise(ds.test.x, synset.mean, synset.std), ds.test.y)
            method = METHODS.get(synset.meta.get("method", ""))  # a registered name only: nothing is imported
            # first the way the set was made (quick, and it may refuse code named by the file), then the protocol
            as_made = method.as_made(synset, test, runs=proto.runs, seed=seed, trust_code=trust_code) \
                if method and proto.name != "wang2018" else None
            results, ran = evaluate_set(synset, test, proto, data=data, seed=seed, vectorise=vectorise,
                                        num_classes=ds.num_classes, reporter=reporter, device=resolve_device(device),
                                        checkpoints=run.checkpoints("protocol" if i == 0 else f"protocol-{i + 1}", 1),
                                        trust_code=trust_code)
            rows.append({"synset": final_path(p), "synset_sha256": file_sha256(p), "data": data,
                         "method": synset.meta.get("method"), "ipc": synset.ipc, "protocol": ran.record(),
                         "models": results, **({"as_made": as_made} if as_made else {})})
        # logged once every set is done: a set's checkpoint then never cuts back another set's lines on resume
        for label, row in zip(labels, rows):
            for spec, r in row["models"].items():
                run.log({**({"synset": label} if several else {}), "model": spec, **r})
        if several:
            metrics = {"synsets": [{k: v for k, v in row.items() if k != "data"} for row in rows], "data": data}
        else:
            metrics = dict(rows[0])
        ran = proto.for_data(data, synsets[0])
        metrics.update({"protocol": ran.record(), "epochs": ran.epochs_for(ran.models[0]) if ran.name != "wang2018"
                        else None})
        if isinstance(ran, Protocol):  # the default protocol's own switches, as before protocols were named
            metrics.update({"dsa": ran.dsa, "augment": ran.augment})
        if several or len(rows[0]["models"]) > 1:
            columns = list(rows[0]["models"])
            matrix = {"rows": labels, "columns": columns,
                      "mean": [[row["models"][c]["mean"] for c in columns] for row in rows],
                      "std": [[row["models"][c]["std"] for c in columns] for row in rows]}
            metrics["matrix"] = matrix
            run.path("matrix.md").write_text(matrix_markdown(matrix) + "\n")
            plot_matrix(matrix, run.path("matrix.png"), f"{data}: test accuracy (%), mean ± std of {proto.runs} "
                                                        f"runs, {ran.name}: {ran.summary()}")
            reporter.info("test accuracy (%), rows: condensed with, columns: evaluated on\n" + matrix_markdown(matrix))
        metrics.update({"wall_seconds": round(time.time() - started, 2), "peak_rss_mb": peak_rss_mb()})
        run.write_metrics(metrics)
    return Result(metrics, run.final)


def synset_paths(path) -> list:
    """One file or a list of them, as a list; the same file twice is refused."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    require(paths, "evaluate needs at least one file")
    require(all(isinstance(p, (str, Path)) for p in paths), "give files as paths")
    seen = {}
    for p in paths:
        key = Path(p).resolve()
        require(key not in seen, f"{p} is given twice; give each set once")
        seen[key] = p
    return paths


def synset_labels(paths, synsets) -> list[str]:
    """A matrix row's label: the set's method and IPC, plus its file where two sets would share a label (the
    file's name, or its path where the names are the same too)."""
    base = [f"{s.meta.get('method') or 'set'} IPC {s.ipc}" for s in synsets]
    for name in (lambda p: Path(final_path(p)).name, final_path):
        labels = [f"{b} ({name(p)})" if base.count(b) > 1 else b for b, p in zip(base, paths)]
        if len(set(labels)) == len(labels):
            return labels
    return labels


def matrix_markdown(matrix: dict) -> str:
    """The matrix as a Markdown table: mean ± std in %, rows condensed with, columns evaluated on."""
    def cell(text) -> str:
        return str(text).replace("|", "\\|")

    lines = ["| condensed with \\ evaluated on | " + " | ".join(cell(c) for c in matrix["columns"]) + " |",
             "|---|" + "---:|" * len(matrix["columns"])]
    for label, means, stds in zip(matrix["rows"], matrix["mean"], matrix["std"]):
        lines.append(f"| {cell(label)} | " + " | ".join(f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in zip(means, stds))
                     + " |")
    return "\n".join(lines)


def predict(model_path, data: str | None = None, *, split: str = "train", output: str = "probs",
            top_k: int | None = None, out=None, device: str = "cpu", overwrite: bool = False, quiet: bool = False,
            trust_code: bool = False) -> dict:
    """Write a model's outputs as a black-box API would give them: ``probs`` or ``logits``, optionally only the
    top-k probabilities. Rows follow the dataset's own order (``index``), so any validation split can use them; the
    file also records the dataset, its size and its labels, so a student can check the rows are its own."""
    require(output in ("probs", "logits"), f"--output must be probs or logits, got {output}")
    require(split in ("train", "test"), f"--split must be train or test, got {split}")
    require(top_k is None or output == "probs", "--top-k goes with --output probs")
    device = resolve_device(device)
    out = Path(out) if out else Path("runs") / f"predict-{time.strftime('%Y%m%d-%H%M%S')}.npz"
    require(out.suffix == ".npz", f"--out for predict must end in .npz, got {out}")
    require(not out.exists() or overwrite, f"{out} exists; choose another --out or pass --overwrite")
    model, meta, data, ds = _model_and_data(model_path, data, "model", trust_code)
    require(top_k is None or 1 <= top_k < ds.num_classes, f"--top-k must be between 1 and {ds.num_classes - 1}")
    norm = meta["normalisation"]
    images = ds.train if split == "train" else ds.test
    logits = predict_logits(model, data_mod.normalise(images.x, norm["mean"], norm["std"]), device=device)
    arrays = {"index": np.arange(len(images), dtype=np.int64), "labels": images.y.numpy().astype(np.int64),
              "dataset": np.array(data), "split": np.array(split)}
    if output == "logits":
        arrays["logits"] = logits.numpy()
    elif top_k is None:
        arrays["probs"] = torch.softmax(logits, 1).numpy()
    else:
        p, i = torch.softmax(logits, 1).topk(top_k, dim=1)
        arrays["topk_prob"], arrays["topk_index"] = p.numpy(), i.numpy().astype(np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, ".npz") as tmp:
        np.savez(tmp, **arrays)
    info = {"out": str(out), "rows": len(images), "output": output, "top_k": top_k, "split": split, "data": data}
    Reporter(quiet).info(f"wrote {out}: {len(images)} rows of {'top-%d ' % top_k if top_k else ''}{output}")
    return info


def pseudolabel(teacher, data: str, *, transforms: str | None = None, threshold: float | None = None,
                soft: bool | None = None, out=None, overwrite: bool = False, device: str = "cpu",
                quiet: bool = False, trust_code: bool = False) -> dict:
    """Omni-supervised pseudo-labels (Radosavovic et al. 2018): ``teacher`` (a model file) labels the images of
    ``data`` (``npz:PATH`` without ``y``, ``folder:PATH`` of image files, or a labelled dataset whose labels are not
    used) by its class probabilities averaged over the views of ``transforms``; images whose averaged top
    probability reaches ``threshold`` keep the argmax, or with ``soft`` the probabilities. Writes the file ``out``
    (.npz: positions, labels, the data's spec and hash) that ``train``/``distill`` take as ``pseudo``. Options not
    given keep ``pseudolabel.PseudoLabelConfig``'s defaults."""
    from . import pseudolabel as pl

    started = time.time()
    given = {k: v for k, v in (("transforms", transforms), ("threshold", threshold), ("soft", soft)) if v is not None}
    config = pl.PseudoLabelConfig(**given).check()
    require(isinstance(teacher, (str, Path)), "the teacher must be a model file (.safetensors)")
    device = resolve_device(device)
    out = Path(out) if out else Path("runs") / f"pseudolabel-{time.strftime('%Y%m%d-%H%M%S')}.npz"
    require(out.suffix == ".npz", f"--out for pseudolabel must end in .npz, got {out}")
    require(not out.exists() or overwrite, f"{out} exists; choose another --out or pass --overwrite")
    model, meta = load_model(teacher, trust_code=trust_code)
    unlabeled = data_mod.load_unlabeled(data)
    labels = pl.pseudolabel(model.to(device), meta, unlabeled, config, teacher_path=teacher, device=device)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, ".npz") as tmp:
        labels.save(tmp)
    counts = torch.bincount(labels.labels, minlength=len(meta["classes"])).tolist()
    info = {"out": str(out), "data": unlabeled.spec, "images": len(unlabeled), "kept": len(labels),
            "kept_fraction": round(len(labels) / len(unlabeled), 6), "labels": "soft" if config.soft else "hard",
            "threshold": config.threshold, "transforms": labels.meta["transforms"],
            "views": len(labels.meta["views"]), "mean_confidence": float(labels.confidence.mean()),
            "per_class": dict(zip(labels.meta["classes"], counts)), "teacher": final_path(teacher),
            "data_had_labels": unlabeled.labelled, "wall_seconds": round(time.time() - started, 2)}
    Reporter(quiet).info(f"wrote {out}: {len(labels)} of {len(unlabeled)} images of {unlabeled.spec} pseudo-labelled "
                         f"({info['labels']}, {info['views']} views: {labels.meta['transforms']})"
                         + ("; the data's own labels were not used" if unlabeled.labelled else ""))
    return info


def data_fetch(name: str) -> dict:
    return data_mod.info(data_mod.load(name, fetch=True))


def data_info(name: str) -> dict:
    return data_mod.info(data_mod.load(name, fetch=False))


# --------------------------------------------------------------------------------------------------------------
# Dataset distillation

# The condense command's flags from before methods took options (--method NAME:key=value,...), kept as shorthands:
# API keyword -> the method option it sets.
METHOD_SHORTHANDS = {"model": "model", "iterations": "iterations", "init": "init", "lr_img": "lr_img",
                     "batch_real": "batch_real", "init_net": "init_net", "bptt_steps": "steps",
                     "bptt_epochs": "epochs", "dsa": "dsa"}


def _flag(keyword: str) -> str:
    return "--no-dsa" if keyword == "dsa" else "--" + keyword.replace("_", "-")


def _with_shorthands(registry, method, shorthands: dict | None, keys: dict, what: str, trust_code: bool):
    """A plug-in of ``registry`` from a spec string (or an instance), with flag shorthands (keyword -> option,
    ``keys``) applied as its options; a shorthand that repeats an option of the spec, or that the plug-in does not
    have, is a one-line error."""
    given = {k: v for k, v in (shorthands or {}).items() if v is not None}
    unknown = sorted(set(given) - set(keys))
    require(not unknown, f"unknown {what} option(s) {', '.join(unknown)}; give method options in the method spec")
    if isinstance(method, registry.base):
        require(not given, f"give the options of a {registry.base.__name__} object as its fields, not as keywords")
        return method
    _, explicit = registry.split(method)
    for keyword in given:
        require(keys[keyword] not in explicit,
                f"{_flag(keyword)} and --method {method} both set {keys[keyword]}; give it once")
    method = registry.parse(method, trust_code=trust_code)
    fields = option_fields(type(method))
    for keyword in given:
        require(keys[keyword] in fields, f"{_flag(keyword)} does not apply to the {method.name} method "
                                         f"(its options: {options_help(type(method))})")
    if not given:
        return method
    made = dataclasses.replace(method, **{keys[k]: v for k, v in given.items()})
    if getattr(method, "recipe", ""):  # the recipe's name is not an option: replace() does not carry it
        made.recipe = method.recipe
    return made


def method_from(method, shorthands: dict | None = None, *, trust_code: bool = True) -> Method:
    """A Method from a spec string (or a Method), with the old per-method flags applied as its options."""
    return _with_shorthands(METHODS, method, shorthands, METHOD_SHORTHANDS, "condense", trust_code)


def method_options_of(method: str | None, *, trust_code: bool = False) -> list[str]:
    """The option names of the method a ``NAME[:key=value,...]`` spec names (none for no spec)."""
    if not method:
        return []
    name, _ = METHODS.split(method)
    return list(option_fields(METHODS.resolve(name, trust_code=trust_code)))


def method_grid_specs(method: str, grid: dict[str, list[str]], *, trust_code: bool = False) -> list[str]:
    """One method spec per combination of ``grid`` (option -> values as typed), added to ``method``'s own options:
    how ``tune condense`` searches an option that has no flag. Each spec is checked before any trial runs."""
    from .tuning import grid_points

    _, explicit = METHODS.split(method)
    clash = sorted(set(grid) & set(explicit))
    require(not clash, f"--grid {', '.join(clash)}: --method {method} also sets it; give it in one place")
    specs = []
    for point in grid_points(grid):
        spec = method.strip() + ("," if explicit else ":") + ",".join(f"{k}={v}" for k, v in point.items())
        METHODS.parse(spec, trust_code=trust_code)  # a bad value is a one-line error now, not mid-search
        specs.append(spec)
    return specs


def condense_data(data: str = "digits", method="dm", ipc: int = 10, *, labels="hard", seed: int = 0,
                  val_size: int | None = None, split_seed: int = 0, out=None, overwrite: bool = False,
                  resume: bool = False, checkpoint_every: int = 10, quiet: bool = False, log=("jsonl",),
                  device: str = "cpu", trust_code: bool = False, protocol=None, **shorthands) -> Result:
    """Condense ``data`` into ``ipc`` images per class; writes synset.safetensors, synset.png and metrics (with the
    set's budget: bytes, seconds, peak memory, real images read).

    method: ``NAME[:key=value,...]`` (see ``METHODS.help()``) or a Method object. labels: ``hard``,
    ``learn[:key=value,...]``, ``teacher:MODEL_FILE`` (see ``labels_help()``) or a Labels object. ``shorthands``:
    the flags --model, --iterations, --init, --lr-img, --batch-real, --init-net, --bptt-steps, --bptt-epochs,
    --no-dsa (``dsa=False``), each setting that option of the method. A checkpoint is kept every
    ``checkpoint_every`` iterations; ``resume=True`` continues an unfinished run in ``out``. ``protocol`` (a name
    or spec, e.g. ``vico-dc``): the set is then measured on the test split by that protocol too, and metrics.json
    holds the figures under ``evaluation`` with the protocol as it ran.
    """
    started = time.time()
    reporter = Reporter(quiet)
    method = method_from(method, shorthands)
    labels = parse_labels(labels) if isinstance(labels, str) else labels
    proto = protocol_from(protocol) if protocol is not None else None
    call = _call_of("condense_data", locals(), omit=("shorthands",), method=str(method), labels=str(labels),
                    protocol=protocol if protocol is None or isinstance(protocol, str) else str(protocol))
    splits = load_splits(data, val_size, split_seed)
    data = splits.spec
    train = splits.train_set()
    check_ipc(train, ipc)
    method.check_data(train)  # a bad model or option fails before any output
    labels.check_data(train, trust_code)
    if proto is not None:
        for spec in proto.models:
            build_model(spec, train.input_shape, train.num_classes)
    with RunOutput(out, "condense", overwrite, resume, call, log) as run:
        run.write_config({"command": "condense", "data": data, "method": str(method), "ipc": ipc,
                          "labels": str(labels), "seed": seed, "val_size": splits.val_size, "split_seed": split_seed,
                          **({"method_recipe": method.recipe_record()} if method.recipe_record() else {}),
                          **({"protocol": proto.for_data(data).record()} if proto else {})})
        bar = reporter.bar(method.iterations_total + labels.iterations_total, f"condense {method.name}",
                           unit="iterations")

        def on_iteration(it, loss):
            run.log({"iteration": it + 1, "loss": loss})
            bar.update(1)
            bar.set_postfix(loss=loss)

        synset = condense(train.to(resolve_device(device)), method, ipc, seed=seed, labels=labels,
                          progress=on_iteration, checkpoints=run.checkpoints("condense", checkpoint_every),
                          trust_code=trust_code)
        seconds = synset.meta["budget"]["condense_seconds"]
        bar.close()
        losses = [json.loads(line)["loss"] for line in run.path("metrics.jsonl").read_text().splitlines()
                  ] if run.path("metrics.jsonl").exists() else []  # the log holds the iterations before a resume too
        synset.meta["source"]["data"] = data
        synset.save(run.path("synset.safetensors"))
        synset.save_grid(run.path("synset.png"))
        run.log_image("synthetic set", run.path("synset.png"))
        if losses:
            plot_loss(losses, run.path("loss.png"), f"{method.name} on {data}, IPC {ipc}")
        full_bytes = train.x.numel() * 1 + train.y.numel() * 1  # the training images as uint8 pixels
        metrics = {"method": method.name, "ipc": ipc, "labels": str(labels),
                   "iterations": method.iterations_total + labels.iterations_total,
                   "wall_seconds": round(time.time() - started, 2), "condense_seconds": seconds,
                   "iterations_per_second": round(len(losses) / seconds, 3) if losses and seconds else None,
                   "peak_rss_mb": peak_rss_mb(), "synset_bytes": synset.nbytes(), "train_set_bytes_uint8": full_bytes,
                   "images": len(synset.labels), "final_loss": losses[-1] if losses else None,
                   "budget": synset.meta["budget"],
                   **({"method_recipe": method.recipe_record()} if method.recipe_record() else {})}
        if proto is not None:  # measured on the test split by the protocol asked for
            results, ran = evaluate_set(synset, splits.test, proto, data=data, seed=seed, reporter=reporter,
                                        num_classes=splits.num_classes, device=resolve_device(device),
                                        checkpoints=run.checkpoints("protocol", 1), trust_code=trust_code)
            metrics["evaluation"] = {"protocol": ran.record(), "models": results}
        run.write_metrics(metrics)
    reporter.info(f"condensed {data} with {method.name} to {ipc} images per class in {seconds:.1f} s; "
                  f"wrote {final_path(run.final)}")
    return Result(metrics, run.final)


def condense_scored(data: str = "digits", method="dm", ipc: int = 10, *, out, protocol: EvalProtocol | str | None = None,
                    final_runs: int | None = None, as_made: bool = False, seed: int = 0, val_size: int | None = None,
                    split_seed: int = 0, **options) -> Result:
    """One run of ``tune condense``: condense (OUT/condense, as ``condense_data``), then train the protocol's models
    on the set and score it. While the test split is sealed (a trial of the search) the models are measured on the
    validation split; otherwise (a final run) on the test split, with ``final_runs`` models per spec (default: the
    protocol's). The score is the mean over the protocol's model specs; OUT/scores.json keeps every figure.
    ``as_made``: score by the models trained the way the set was made instead (bptt: its learned schedule, from
    its stored init or ``protocol.runs`` fresh ones), as Wang et al. 2018 evaluate."""
    out = Path(out)
    protocol = protocol_from(protocol)
    made = condense_data(data, method, ipc, seed=seed, val_size=val_size, split_seed=split_seed, out=out / "condense",
                         **{"quiet": True, **options})
    synset = SyntheticSet.load(out / "condense" / "synset.safetensors")
    splits = load_splits(data, val_size, split_seed, mean=synset.mean, std=synset.std)
    sealed = data_mod.is_test_sealed(splits)
    proto = protocol if sealed or final_runs is None else dataclasses.replace(protocol, runs=final_runs)
    scored_on = splits.val if sealed else splits.test
    if as_made:
        made_by = METHODS.get(synset.meta["method"])
        results = {"as made": made_by.as_made(synset, scored_on, runs=proto.runs, seed=seed) if made_by else None}
        require(results["as made"] is not None, f"--eval-as-made: a {synset.meta['method']} set is not made by "
                                                "training a model in a known way; score it by the protocol instead")
    else:
        results, proto = evaluate_set(synset, scored_on, proto, data=splits.spec, seed=seed,
                                      num_classes=splits.num_classes)
    score = float(np.mean([r["mean"] for r in results.values()]))
    metrics = {"val_accuracy": score if sealed else None, "test_accuracy": None if sealed else score,
               "test_errors": None if sealed else round((1 - score) * len(splits.test), 1),
               "scored_on": "validation" if sealed else "test", "models": results,
               "protocol": proto.record(), "condense": made.metrics}
    (out / "scores.json").write_text(json.dumps(to_jsonable(metrics), indent=1) + "\n")
    return Result(metrics, out)


def condense_estimate(data: str = "digits", method="dm", ipc: int = 10, *, labels="hard", seed: int = 0,
                      val_size: int | None = None, split_seed: int = 0, device: str = "cpu",
                      trust_code: bool = False, probe: int = 5, **shorthands) -> dict:
    """What ``condense_data`` with these arguments would cost, from a short run that writes nothing: the method
    (and the label mode) run ``probe`` + 1 iterations; the first, which carries the set-up, is counted once and
    the median of the others stands for every remaining iteration. A method without iterations is timed whole.
    Peak memory is the short run's (the loops' memory does not grow with their iteration count)."""
    require(isinstance(probe, int) and probe >= 1, f"probe must be at least 1, got {probe}")
    method = method_from(method, shorthands)
    labels = parse_labels(labels) if isinstance(labels, str) else labels
    splits = load_splits(data, val_size, split_seed)
    train = splits.train_set()
    check_ipc(train, ipc)
    method.check_data(train)
    labels.check_data(train, trust_code)
    phases = [(method, method.iterations_total), (labels, labels.iterations_total)]
    short = [dataclasses.replace(p, iterations=min(n, probe + 1))
             if n and "iterations" in {f.name for f in dataclasses.fields(p)} else p for p, n in phases]
    stamps: list[float] = []
    t0 = time.perf_counter()
    synset = condense(train.to(resolve_device(device)), short[0], ipc, seed=seed, labels=short[1],
                      progress=lambda it, loss: stamps.append(time.perf_counter()), trust_code=trust_code)
    total = time.perf_counter() - t0
    estimate, start, previous = 0.0, 0, t0
    for (_, n), cut in zip(phases, short):
        done = cut.iterations_total
        mine = stamps[start:start + done]
        if done:
            gaps = np.diff([previous, *mine])
            per = float(np.median(gaps[1:])) if len(gaps) > 1 else float(gaps[0])
            estimate += float(gaps[0]) + per * (n - 1)
            previous = mine[-1]
        start += done
    estimate += (t0 + total) - previous  # one-shot work and what follows the last iteration
    budget = synset.meta["budget"]
    return {"method": str(method), "labels": str(labels), "ipc": ipc, "data": splits.spec,
            "iterations": sum(n for _, n in phases), "probe_iterations": len(stamps),
            "probe_seconds": round(total, 2), "estimated_condense_seconds": round(estimate, 1),
            "estimated_peak_rss_mb": budget["peak_rss_mb"], "estimated_peak_device_mb": budget["peak_device_mb"],
            "synset_bytes": budget["total_bytes"], "real_images_read_per_probe": budget["real_images_read"]}


# ---- teaching without the data ----


def _teacher_for(teacher, data: str | None, trust_code: bool, val_size=None, split_seed: int = 0):
    """A teacher model file and the splits of its dataset (default: the one it records), normalised as the teacher
    saw its inputs."""
    require(isinstance(teacher, (str, Path)), "the teacher must be a model file (.safetensors)")
    model, meta, _, ds = _model_and_data(teacher, data, "teacher", trust_code)
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
    from .datafree import KINDS, TeacherRecords, model_digest, record

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
    model, meta, splits = _teacher_for(teacher, data, trust_code, val_size, split_seed)
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
    from .datafree import DATAFREE

    return _with_shorthands(DATAFREE, method, shorthands, DATAFREE_SHORTHANDS, "data-free", trust_code)


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
    from .datafree import FrozenTeacher, synthesize
    from .kd.losses.kd import KD
    from .kd.teachers import ModelTeacher, cache_teacher

    started = time.time()
    reporter = Reporter(quiet)
    method = datafree_method(method, {"samples": samples, "iterations": iterations})
    if losses is None:
        terms = [KD(T=temperature if temperature is not None else KD.T, w=1.0)]
    else:
        terms = loss_terms(losses, temperature, None)
    cfg = make_config(options)
    call = _call_of("distill_datafree", locals(), omit=("samples", "iterations", "temperature"), method=str(method),
                    losses=[str(t) for t in terms])
    model, meta, splits = _teacher_for(teacher, data, trust_code)
    frozen = FrozenTeacher(model, splits.input_shape, splits.classes, splits.mean, splits.std, device=cfg.device)
    method.check_teacher(frozen)  # a teacher the method cannot use fails before any output
    net = build_model(student, splits.input_shape, splits.num_classes, seeds.generator(cfg.seed))
    student_name = model_name(student)
    teacher_accuracy, _ = accuracy(model, splits.test, cfg.device)
    with RunOutput(out, "datafree", overwrite, resume, call, log) as run:
        run.write_config({"command": "datafree", "teacher": final_path(teacher), "data": splits.spec,
                          "method": method.describe(), "student": student_name,
                          "losses": [t.describe() for t in terms], **cfg.as_dict()})
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
            transfer = SyntheticSet(images=made["images"], labels=made["teacher_logits"].argmax(1),
                                    classes=list(splits.classes), mean=tuple(splits.mean), std=tuple(splits.std),
                                    label_logits=made["teacher_logits"],
                                    meta={"method": method.name, "recipe": {**method.describe(), "seed": cfg.seed},
                                          "made_as": made["labels"].tolist(),
                                          "source": {"teacher": final_path(teacher), "data": None},
                                          "budget": {"synthesis_seconds": made["seconds"], **made["peak"],
                                                     "real_images_read": 0}})
            transfer.save(kept)
        transfer.save_grid(run.path("transfer.png"))
        n_val = min(1000, max(1, len(transfer.labels) // 10))  # held-out transfer images: agreement, not data
        order = torch.randperm(len(transfer.labels), generator=seeds.generator(cfg.seed))
        held, used = order[:n_val].sort().values, order[n_val:].sort().values
        student_splits = dataclasses.replace(
            splits, train=data_mod.ImageSet(transfer.images[used], transfer.labels[used]),
            val=data_mod.ImageSet(transfer.images[held], transfer.labels[held]), val_size=n_val,
            train_index=torch.arange(len(used)))
        source = ModelTeacher(model, [p for t in terms for p in t.teacher_taps()], device=cfg.device)
        if cfg.augment == "none":  # the transfer images never change: the teacher answers each of them once
            source = cache_teacher(source, student_splits.train.x.to(cfg.device))
        objective = Distillation(source, terms)
        extra = objective.attach(net.to(cfg.device), student_splits.train.x[:8].to(cfg.device), torch.arange(8),
                                 generator=seeds.generator(cfg.seed, "connectors"))
        reporter.info(f"datafree {method.name}: {len(transfer.labels):,} transfer images from "
                      f"{final_path(teacher)}; {student_name} learns with {', '.join(str(t) for t in terms)}")
        result = fit(net, student_splits, cfg, objective=objective, extra_modules=extra, on_epoch=run.log,
                     on_step=run.log_step, reporter=reporter, desc="datafree",
                     checkpoints=run.checkpoints("fit", checkpoint_every))
        metrics = _final_metrics(net, student_splits, cfg, result, started)
        metrics["teacher_agreement_held_out"] = metrics.pop("val_accuracy")
        metrics.update(method=method.name, method_options=option_values(method), student=student_name,
                       teacher_mode="cached" if cfg.augment == "none" else "live",
                       teacher_test_accuracy=teacher_accuracy, transfer_images=len(transfer.labels),
                       transfer_class_counts=torch.bincount(transfer.labels, minlength=splits.num_classes).tolist(),
                       synthesis_seconds=transfer.meta.get("budget", {}).get("synthesis_seconds"),
                       parameters=count_parameters(net))
        recipe = {"command": "datafree", "teacher": final_path(teacher), "teacher_sha256": file_sha256(teacher),
                  "method": method.describe(), "losses": [t.describe() for t in terms], **cfg.as_dict()}
        _save(run, net, student_name, splits, recipe, metrics)
        run.write_metrics(metrics)
    reporter.info(f"student test accuracy {metrics['test_accuracy']:.4f} (teacher {teacher_accuracy:.4f}); "
                  f"wrote {final_path(run.final)}")
    return Result(metrics, run.final, net)


def audit(synset, *, reference=None, data: str | None = None, audits: list | None = None, privacy: bool = False,
          fpr=(0.001, 0.01), seed: int = 0, out=None, overwrite: bool = False, device: str = "cpu",
          quiet: bool = False, trust_code: bool = False) -> Result:
    """Audit a synthetic set file. ``audits``: spec strings (``labels``, ``class-stats``, ``confusion``,
    ``memorisation``, ``membership:shadows=8``, ...; see ``AUDITS.help()``); default: every audit the inputs allow --
    ``reference`` (a trusted model file) and ``data`` (default: the dataset the set records) -- with the privacy
    audits only when ``privacy``. ``fpr``: the false-positive rates membership attacks are read at. Writes
    audit.json (every finding), audit.md and the audits' figures to ``out``; metrics: what was flagged."""
    from .audits import AUDITS, AuditInputs, check_audits, default_audits, parse_audit, report_markdown, run_audits
    from .data import dataset_hash
    from .datafree import FrozenTeacher

    started = time.time()
    reporter = Reporter(quiet)
    device = resolve_device(device)
    fpr = tuple(float(f) for f in (fpr if isinstance(fpr, (list, tuple)) else [fpr]))
    require(fpr and all(0 < f < 1 for f in fpr), f"--fpr takes rates between 0 and 1, got {', '.join(map(str, fpr))}")
    chosen = [parse_audit(a) if isinstance(a, str) else a for a in (audits or [])]
    if privacy:
        chosen += [AUDITS.get(n)() for n in AUDITS.names(builtin_only=True)
                   if AUDITS.get(n).privacy and n not in {a.name for a in chosen}]
    s = SyntheticSet.load(synset)
    source = s.meta.get("source") or {}
    recorded = source.get("data") if isinstance(source.get("data"), str) else None
    ref = None
    if reference is not None:
        model, meta = load_model(reference, trust_code=trust_code)
        check_compatible(meta, s.classes, s.input_shape, "reference model", reference)
        norm = meta["normalisation"]
        ref = FrozenTeacher(model, meta["input_shape"], meta["classes"], norm["mean"], norm["std"], device=device)
    splits = None
    wants_data = not audits or any("data" in a.needs for a in chosen)
    if (data or recorded) and wants_data:
        ds = data_mod.load(data or recorded)
        require(not (data and recorded) or ds.spec == recorded or data == recorded,
                f"{synset} was condensed from {recorded}, not {ds.spec}; audit it against the data it was made from")
        require(tuple(ds.input_shape) == s.input_shape and ds.num_classes == len(s.classes),
                f"{synset} holds {len(s.classes)} classes of shape {s.input_shape}, but {ds.spec} has "
                f"{ds.num_classes} of shape {tuple(ds.input_shape)}; audit it against the data it was made from")
        same = recorded is not None
        whole = lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None  # a file may be forged
        recorded_val = whole(source.get("val_size")) if same else None
        require(recorded_val is None or 0 < recorded_val < len(ds.train),
                f"{synset} records a validation split of {recorded_val} images, impossible for {ds.spec}; the file "
                "is corrupt or was made from other data")
        splits = data_mod.split(ds, val_size=whole(source.get("val_size")) if same else None,
                                seed=(whole(source.get("split_seed")) or 0) if same else 0, mean=s.mean, std=s.std)
        if same and isinstance(source.get("hash"), str):
            require(dataset_hash(splits.train_set()) == source["hash"],
                    f"{synset} was not condensed from the training split of {ds.spec} (its data hash differs); "
                    "audit it against the data it was made from")
    inputs = AuditInputs(synset=s, reference=ref, splits=splits, fpr=fpr, device=device, reporter=reporter,
                         trust_code=trust_code)
    if not audits:
        chosen = default_audits(inputs, privacy=False) + [a for a in chosen if a.privacy]
    require(chosen, "nothing to audit: pass --reference MODEL (a trusted model), --data D, or --privacy")
    check_audits(chosen, inputs)  # missing or unusable inputs end here, before any output
    call = _call_of("audit", locals(), omit=("privacy",), audits=[str(a) for a in chosen], fpr=list(fpr))
    with RunOutput(out, "audit", overwrite, call=call) as run:
        inputs.folder = run.dir
        run.write_config({"command": "audit", "synset": final_path(synset), "reference": final_path(reference)
                          if reference is not None else None, "data": splits.spec if splits else None,
                          "audits": [a.describe() for a in chosen], "fpr": list(fpr), "seed": seed})
        findings = run_audits(chosen, inputs, seed=seed)
        flagged = [n for n, f in findings.items() if f["flagged"]]
        report = {"synset": final_path(synset), "synset_sha256": file_sha256(synset),
                  "method": s.meta.get("method"), "ipc": s.ipc, "data": splits.spec if splits else None,
                  "reference": final_path(reference) if reference is not None else None,
                  "flagged": bool(flagged), "flagged_by": flagged, "audits": findings,
                  "wall_seconds": round(time.time() - started, 2)}
        run.path("audit.json").write_text(json.dumps(to_jsonable(report), indent=1) + "\n")
        title = f"Audit of {Path(final_path(synset)).name} ({s.meta.get('method') or 'set'}, IPC {s.ipc})"
        run.path("audit.md").write_text(report_markdown(title, findings, chosen) + "\n")
        metrics = {"synset": report["synset"], "flagged": bool(flagged), "flagged_by": ", ".join(flagged) or "none",
                   **{name: ("FLAGGED: " if f["flagged"] else "") + f["summary"] for name, f in findings.items()},
                   "wall_seconds": report["wall_seconds"]}
        run.write_metrics(metrics)
    reporter.info(f"audit: {'flagged by ' + ', '.join(flagged) if flagged else 'nothing flagged'}; wrote "
                  f"{final_path(run.final)}")
    return Result(metrics, run.final)


def serve(model, *, host: str | None = None, port: int | None = None, output: str | None = None, token_file=None,
          max_batch: int | None = None, rate: float | None = None, noise: float | None = None,
          round: int | None = None, seed: int | None = None, request_timeout: float | None = None,
          max_connections: int | None = None, device: str = "cpu", block: bool = False, quiet: bool = False,
          trust_code: bool = False):
    """Serve a model file's outputs over HTTP (Starlette on uvicorn): ``GET /info`` (input shape, classes, the
    normalisation a client applies -- never the weights), ``POST /predict`` (probabilities, ``topk:K`` or labels;
    JSON or safetensors bodies), ``GET /health``, ``GET /metrics``. ``token_file``: bearer-token auth; ``max_batch``,
    ``rate`` (requests per second): limits; ``noise``, ``round``: defences against extraction; ``request_timeout``
    (seconds a client has to send a whole request), ``max_connections`` (open at once; beyond: 503) keep slow or idle
    clients from holding the service. Options left out take
    ``service.server.ServeOptions``'s defaults (port 0: a free port). Returns a handle (``.url``, ``.stop()``), or
    with ``block=True`` (the CLI) serves until SIGINT/SIGTERM."""
    from .service.server import ServeOptions, serve_forever, start_service
    from .service.tokens import read_token_file

    net, meta = load_model(model, trust_code=trust_code)
    given = {"host": host, "port": port, "output": output, "max_batch": max_batch, "rate": rate, "noise": noise,
             "round": round, "seed": seed, "request_timeout": request_timeout, "max_connections": max_connections}
    options = ServeOptions(**{k: v for k, v in given.items() if v is not None},
                           token=read_token_file(token_file) if token_file else None)
    options.check(len(meta["classes"]))
    device = resolve_device(device)
    if block:
        serve_forever(net, meta, options, device=device, reporter=Reporter(quiet))
        return None
    return start_service(net, meta, options, device=device)


MODEL_EXPORTS = (".pt2", ".ts", ".onnx")


def export(path, to, *, overwrite: bool = False, trust_code: bool = False) -> dict:
    """A synthetic set as .npz or a PNG grid (``export_synset``); a model file as something plain PyTorch (or an
    ONNX runtime) runs without distillab: ``.pt2`` (torch.export), ``.ts`` (TorchScript) or ``.onnx``. The exported
    model takes inputs as the data holds them (pixels in [0, 1], or a signal's own values): its normalisation is
    built in."""
    if read_meta(path).get("format") == SYNSET_FORMAT:
        return export_synset(path, to, overwrite=overwrite)
    target = Path(to)
    require(target.suffix in MODEL_EXPORTS, f"a model exports to {', '.join(MODEL_EXPORTS)}; got {target}")
    require(not target.exists() or overwrite, f"{target} exists; choose another --to or pass --overwrite")
    require(target.parent.exists(), f"folder {target.parent} does not exist")
    model = load(path, trust_code=trust_code)
    meta = model.distillab
    norm = meta["normalisation"]
    wrapped = nn.Sequential(Renormalise.from_pixels(norm["mean"], norm["std"]), model).eval()
    example = torch.rand(2, *meta["input_shape"], generator=seeds.generator(0))  # the global RNG untouched
    with atomic_path(target, target.suffix) as tmp, torch.no_grad():
        if target.suffix == ".pt2":
            program = torch.export.export(wrapped, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
            torch.export.save(program, str(tmp))
        elif target.suffix == ".ts":
            torch.jit.trace(wrapped, example).save(str(tmp))
        else:
            try:
                import onnx  # noqa: F401
            except ImportError:
                raise DistillabError("exporting to .onnx needs the onnx package (pip install onnx onnxscript); "
                                     ".pt2 and .ts need nothing more") from None
            torch.onnx.export(wrapped, (example,), str(tmp), input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return {"model": final_path(path), "to": str(target), "input_shape": meta["input_shape"],
            "inputs": "unnormalised (the normalisation is built in)", "classes": meta["classes"]}


def export_synset(path, to, *, overwrite: bool = False) -> dict:
    """A synthetic set as .npz (pixel-space images and labels: the npz: data format) or as a PNG grid."""
    target = Path(to)
    require(target.suffix in (".npz", ".png"), f"--to must end in .npz or .png, got {target}")
    require(not target.exists() or overwrite, f"{target} exists; choose another --to or pass --overwrite")
    synset = SyntheticSet.load(path)
    require(target.parent.exists(), f"folder {target.parent} does not exist")
    (synset.export_npz if target.suffix == ".npz" else synset.save_grid)(target)
    return {"synset": str(path), "to": str(target), "images": len(synset.labels), "ipc": synset.ipc}


def import_synset(path, *, format: str, data: str, out, overwrite: bool = False, experiment: int | None = None,
                  labels=None, quiet: bool = False) -> dict:
    """A synthetic set made by the reference code, as a distillab ``synset.safetensors`` (``out``) that
    ``evaluate`` takes: ``format`` ``vico`` (a ``res_*.pt`` of DC/DSA/DM; ``experiment``: which of its runs, default
    0) or ``mtt`` (``images_best.pt``/``images_N.pt``; ``labels``: its labels file, default the one beside it).
    ``data``: the dataset it was made from (the file does not say). Read with ``torch.load(weights_only=True)``
    only; see ``distillab.condense.importing``."""
    from .condense.importing import read

    target = Path(out)
    require(target.suffix == ".safetensors", f"--out must be a FILE.safetensors, got {target}")
    require(not target.exists() or overwrite, f"{target} exists; choose another --out or pass --overwrite")
    require(target.parent.is_dir(), f"folder {target.parent} does not exist")
    ds = data_mod.load(data)
    synset = read(path, format, ds, experiment=experiment, labels=labels)
    synset.save(target)
    source = synset.meta["source"]
    Reporter(quiet).info(f"imported {source['imported_from']} ({format}) as {len(synset.labels)} images, IPC "
                         f"{synset.ipc}, of {ds.spec}{' (reordered class-major)' if source['reordered'] else ''}; "
                         f"wrote {target}")
    return {"synset": str(target), **{k: v for k, v in source.items() if k != "imported_from"},
            "imported_from": str(path), "ipc": synset.ipc, "images": len(synset.labels)}


def load(path, *, into: nn.Module | None = None, trust_code: bool = False):
    """What a distillab file holds: a model file as an ``nn.Module`` in eval mode, its metadata in
    ``model.distillab``; a synthetic-set file as a ``SyntheticSet``. ``into``: load a model file's weights into
    this module (for models built in Python, which a file cannot rebuild)."""
    meta = read_meta(path)
    if meta.get("format") == SYNSET_FORMAT:
        require(into is None, f"{path} holds a synthetic set, not model weights")
        return SyntheticSet.load(path)
    require(meta.get("format") == MODEL_FORMAT, f"{path} holds a {meta.get('format')!r} file, not a model or a set")
    if into is None:
        model, meta = load_model(path, trust_code=trust_code)
    else:
        tensors, meta = load_tensors(path, MODEL_FORMAT)
        try:
            into.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            raise DistillabError(f"{path}: its weights do not fit {type(into).__name__} "
                                 f"({str(e).splitlines()[0][:100]})") from None
        model = into.eval()
    model.distillab = meta
    return model


# --------------------------------------------------------------------------------------------------------------
# Expert trajectories (for trajectory matching, condense --method mtt)

__all__ += ["experts", "ExpertConfig"]


def experts(data: str = "digits", model: str | None = None, experts: int | None = None, epochs: int | None = None,
            *, out=None, overwrite: bool = False, resume: bool = False, val_size: int | None = None,
            split_seed: int = 0, quiet: bool = False, log=("jsonl",), **options) -> Result:
    """Train ``experts`` networks ``model`` on ``data`` for ``epochs`` each and keep their trajectories (parameters
    at every epoch): OUT/expert-000.safetensors, ... one file per expert, the folder ``mtt:experts=OUT`` reads.

    ``options``: the other fields of ``ExpertConfig`` (lr, momentum, weight_decay, batch_size, dsa, seed, device);
    what is left out takes its defaults, the reference's. ``val_size``/``split_seed`` carve the same validation split
    as ``condense`` does, so the experts see exactly the training images a condensation sees (their hash is
    recorded and checked). OUT is a run folder like any other: written as ``.OUT.partial`` and renamed once every
    expert is done. Each finished expert is a file at once, so a killed or stopped run keeps them and
    ``resume=True`` (``--resume OUT``) trains only the experts still missing; expert i draws only from
    ``seeds.generator(seed, "expert", i)``, so a resumed folder holds the same bits as an uninterrupted one."""
    started = time.time()
    reporter = Reporter(quiet)
    given = {k: v for k, v in dict(model=model, experts=experts, epochs=epochs, **options).items() if v is not None}
    known = {f.name for f in dataclasses.fields(ExpertConfig)}
    unknown = sorted(set(given) - known)
    require(not unknown, f"unknown expert option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    cfg = ExpertConfig(**given).check()
    cfg.device = resolve_device(cfg.device)
    call = _call_of("experts", locals())
    splits = load_splits(data, val_size, split_seed)
    data = splits.spec
    layout = parameter_layout(expert_model(cfg.model, splits.input_shape, splits.num_classes))  # fails before output
    train_split = splits.train_set()
    from . import trajectories

    planned = trajectories.expert_meta(train_split, cfg, 0, layout, [], {})
    train_split = train_split.to(cfg.device)
    with RunOutput(out, "experts", overwrite, resume, call, log) as run:
        run.write_config({"command": "experts", "data": data, "val_size": splits.val_size, "split_seed": split_seed,
                          **dataclasses.asdict(cfg)})
        run.path("metrics.jsonl").unlink(missing_ok=True)  # rewritten expert by expert, resumed or not
        checkpoints = run.checkpoints("experts", 1)  # a marker after each expert: a failed run keeps its experts
        reporter.info(f"experts: {cfg.experts} x {cfg.model} ({planned['parameter_count']:,} parameters) on {data}, "
                      f"{cfg.epochs} epochs each, {len(train_split)} training images")
        records, trained = [], 0
        bar = reporter.bar(cfg.experts, "experts", unit="experts")
        with loop_running():
            for i in range(cfg.experts):
                path = run.path(expert_path(".", i).name)
                meta = trajectories.kept_expert(path, {**planned, "index": i, "stream": ["expert", i]}) \
                    if run.resumed else None
                if meta is None:
                    t0 = time.perf_counter()
                    trajectory, losses, net = trajectories.train_expert(
                        train_split, cfg, seeds.generator(cfg.seed, "expert", i))
                    figures = {"val_accuracy": accuracy(net, splits.val, cfg.device)[0],
                               "test_accuracy": accuracy(net, splits.test, cfg.device)[0],
                               "train_seconds": round(time.perf_counter() - t0, 2)}
                    meta = trajectories.expert_meta(train_split, cfg, i, layout, losses, figures)
                    trajectories.save_expert(path, trajectory, meta)
                    trained += 1
                records.append({"expert": i, "final_train_loss": meta["train_loss"][-1], **meta["metrics"]})
                run.log(records[-1])
                bar.update(1)
                if checkpoints:
                    checkpoints.after(i + 1, lambda: {"experts_done": i + 1})
        bar.close()
        seconds = [r["train_seconds"] for r in records if isinstance(r.get("train_seconds"), (int, float))]
        metrics = {"experts": cfg.experts, "epochs": cfg.epochs, "model": cfg.model,
                   "parameters": planned["parameter_count"], "data": data, "data_hash": planned["data"]["hash"],
                   "trained_now": trained, "kept_from_before": cfg.experts - trained,
                   "test_accuracy": summarise([r["test_accuracy"] for r in records]),
                   "val_accuracy": summarise([r["val_accuracy"] for r in records]),
                   "final_train_loss": summarise([r["final_train_loss"] for r in records]),
                   "seconds_per_expert": round(sum(seconds) / len(seconds), 2) if seconds else None,
                   "folder_bytes": sum(run.path(expert_path(".", i).name).stat().st_size for i in range(cfg.experts)),
                   "wall_seconds": round(time.time() - started, 2), "peak_rss_mb": peak_rss_mb()}
        run.write_metrics(metrics)
    reporter.info(f"{cfg.experts} experts, test accuracy {metrics['test_accuracy']['mean']:.4f}; wrote "
                  f"{final_path(run.final)} (use it with --method mtt:experts={final_path(run.final)})")
    return Result(metrics, run.final)


# --------------------------------------------------------------------------------------------------------------
# Resume


RESUMABLE = {"train": "train", "distill": "kd", "chain": "kd", "repeat_over_seeds": None, "condense_data": "condense",
             "evaluate_synset": "evaluate", "experts": "experts", "distill_datafree": "datafree"}


def resume(out, *, command: str | None = None, quiet: bool = False, trust_code: bool = False,
           checkpoint_every: int | None = None) -> Result:
    """Continue the unfinished run in ``out`` (killed, stopped by a signal, or failed after a checkpoint) with the
    call that started it; ``command``, if given, must be the command that made it."""
    out = Path(out)
    partial = out.with_name(f".{out.name}.partial")
    if not partial.is_dir():
        raise DistillabError(f"nothing to resume in {out}: " + ("that run finished" if out.exists() else
                                                                "no unfinished run is there"))
    try:
        call = json.loads((partial / "call.json").read_text())
        function, kwargs = call["function"], dict(call["kwargs"])
        require(function in RESUMABLE, "")
    except (OSError, ValueError, KeyError, TypeError, DistillabError):
        raise DistillabError(f"{partial} does not say how it was started (call.json is missing or corrupt); "
                             "start the run again with --overwrite") from None
    made_by = kwargs.get("command") if function == "repeat_over_seeds" else RESUMABLE[function]
    require(command is None or command == made_by,
            f"{out} holds an unfinished '{made_by}' run; resume it with 'distillab {made_by} --resume {out}'")
    named = code_named_in(kwargs)
    require(trust_code or not named, f"{partial / 'call.json'} names code to import ({named[0] if named else ''}); "
                                     "resume it with --trust-code if you trust it")
    if "trust_code" in kwargs:
        kwargs["trust_code"] = trust_code
    if checkpoint_every is not None and function not in ("evaluate_synset", "experts"):
        kwargs["checkpoint_every"] = checkpoint_every
    fn = {"train": train, "distill": distill, "chain": chain, "repeat_over_seeds": repeat_over_seeds,
          "condense_data": condense_data, "evaluate_synset": evaluate_synset, "experts": experts,
          "distill_datafree": distill_datafree}[function]
    if function == "repeat_over_seeds":
        kwargs["fn"] = {"train": train, "distill": distill}.get(kwargs.get("fn"))
        require(kwargs["fn"] is not None, f"{partial / 'call.json'} is corrupt; start again with --overwrite")
    try:
        return fn(out=out, resume=True, quiet=quiet, **kwargs)
    except TypeError as e:
        raise DistillabError(f"{partial / 'call.json'} does not fit this version ({e}); start again with "
                             "--overwrite") from None


def code_named_in(value) -> list[str]:
    """The ``import:`` specs anywhere in a value read from a file (a recipe, a run's call.json)."""
    if isinstance(value, dict):
        return [spec for v in value.values() for spec in code_named_in(v)]
    if isinstance(value, (list, tuple)):
        return [spec for v in value for spec in code_named_in(v)]
    return [value] if isinstance(value, str) and IMPORT_PREFIX in value else []


# --------------------------------------------------------------------------------------------------------------
# The plug-ins, for --help texts and choices


def labels_help() -> str:
    return options_help(LABELS.get("learn"))
