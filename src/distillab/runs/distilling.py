"""Distilling a teacher into a student (``distill``), along a chain of assistants (``chain``), and the teacher's
dark-knowledge meter (``inspect_teacher``)."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import data as data_mod
from .. import seeds
from ..errors import require
from ..files import file_sha256, final_path, read_meta
from ..kd import Distillation, Hinton, LossTerm, label_smoothing_warnings, parse_loss, resolve_teacher
from ..kd.meter import dark_knowledge_report
from ..models import build_model, count_parameters, model_name
from ..outputs import default_out
from ..reporting import Reporter
from ..training import fit, predict_logits
from .run import Result, Run, finished, run_function
from .training import final_metrics, load_splits, make_config, model_and_data, pseudo_rows, result_line, save_trained


def loss_terms(losses, temperature: float | None, alpha: float | None, student_tap: str = "penultimate",
               teacher_tap: str = "penultimate") -> list[LossTerm]:
    """The objective's terms: ``losses`` (spec strings or LossTerm objects), or the Hinton shorthand."""
    if losses:
        require(temperature is None and alpha is None,
                "--temperature/--alpha are a shorthand for '--loss kd:T=..,w=.. --loss ce:w=..'; with --loss, "
                "give the temperature and weights in the loss terms instead")
        return [t if isinstance(t, LossTerm) else parse_loss(t, student_tap, teacher_tap) for t in losses]
    return Hinton(**{k: v for k, v in (("temperature", temperature), ("alpha", alpha)) if v is not None}).terms()


def service_teacher(url: str, token_file, query: dict, cache_path: Path, splits, cfg, extra_x, reporter):
    """A teacher behind a URL and its answer cache; without augmentation every training input is asked once, up
    front (the cache first). Returns (teacher, how, answers) -- ``answers`` counts what was paid for."""
    from ..kd.teachers import ServiceTeacher, table_of_service
    from ..service.client import AnswerCache, QueryOptions, ServiceAnswers, ServiceClient
    from ..service.tokens import read_token_file

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


@run_function("kd")
def distill(data: str = "digits", teacher=None, student: str = "mlp:hidden=32", *, teacher_outputs=None,
            teacher_url: str | None = None, token_file=None, concurrency: int | None = None,
            query_batch: int | None = None, query_cache=None, retries: int | None = None,
            query_rate: float | None = None, follow_redirects: bool | None = None, cache_checks: int | None = None,
            temperature: float | None = None, alpha: float | None = None, losses: list | None = None,
            student_tap: str = "penultimate", teacher_tap: str = "penultimate", cache="auto", out=None,
            overwrite: bool = False, resume: bool = False, checkpoint_every: int = 1, val_size: int | None = None,
            split_seed: int = 0, quiet: bool = False, trust_code: bool = False, log=("jsonl",), pseudo=None,
            pseudo_ratio: str | None = None, accept_unchecked_table: bool = False, teacher_inputs: str = "raw",
            **options) -> Result:
    """Distill ``teacher`` into a fresh ``student``.

    teacher: a model file, a list of them (an ensemble), an nn.Module, or a function x -> probabilities, given by
    ``teacher_inputs``: ``raw`` (the default) the data's own values in its own shape (pixels in [0, 1] as
    (B, C, H, W); 1-D signals (B, L) or (B, C, L)), as a model fit outside distillab saw them; ``normalised``
    what the student sees (normalised, (B, C, H, W)).
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
    teacher_outputs: a black box's table (.npz): 'probs' or 'logits' (N, K), or 'topk_index' + 'topk_prob' (N, k),
    one row per training example in the dataset's own order, or with 'index' (positions) and 'labels' (checked) as
    ``data_export`` writes them; a table without labels that agrees with them only at chance (rows in another
    order) is refused unless ``accept_unchecked_table``.
    checkpoint_every, resume, pseudo, pseudo_ratio: as for ``train``; the teacher sees the pseudo-labelled rows
    too (a live or cached model, or a function; not a black box's table).
    """
    out = Path(out) if out else default_out("kd")
    job = Run("distill", locals())
    reporter = job.reporter
    cfg = make_config(options)
    terms = loss_terms(losses, temperature, alpha, student_tap, teacher_tap)
    splits = load_splits(data, val_size, split_seed)
    net = build_model(student, splits.input_shape, splits.num_classes, seeds.generator(cfg.seed))
    data, student = splits.spec, model_name(student)
    tap_paths = [p for t in terms for p in t.teacher_taps()]
    mix, pseudo_record = pseudo_rows(pseudo, pseudo_ratio, splits, reporter)
    answers = None
    if teacher_url is not None:
        require(teacher is None and teacher_outputs is None,
                "give one teacher: --teacher, --teacher-outputs or --teacher-url")
        require(not tap_paths, "a teacher service gives only its outputs; feature losses need --teacher MODEL")
        query_cache = Path(query_cache) if query_cache else out.with_name(out.name + ".queries.sqlite")
        query = {"concurrency": concurrency, "query_batch": query_batch, "retries": retries, "rate": query_rate,
                 "follow_redirects": follow_redirects, "cache_checks": cache_checks}
        source, how, answers = service_teacher(teacher_url, token_file, query, query_cache,
                                               splits, cfg, mix.rows.x if mix else None, reporter)
        teacher_meta = None
    else:
        source, teacher_meta, how = resolve_teacher(teacher, teacher_outputs, splits, cfg, tap_paths, cache,
                                                    trust_code, reporter, extra_x=mix.rows.x if mix else None,
                                                    accept_unchecked_table=accept_unchecked_table,
                                                    teacher_inputs=teacher_inputs)
    for message in label_smoothing_warnings(teacher_meta, terms, cfg.label_smoothing):
        reporter.warn(message)
    objective = Distillation(source, terms, examples=len(splits.train) + (len(mix.rows) if mix is not None else 0))
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
    with job.output(config, out=out) as run:
        reporter.info(f"kd {student} ({count_parameters(net):,} parameters) from {teacher_desc} [{how}] on {data}; "
                      f"losses: {', '.join(str(t) for t in terms)}")
        result = fit(net, splits, cfg, objective=objective, extra_modules=extra, on_epoch=run.log,
                     on_step=run.log_step, reporter=reporter, desc="kd",
                     checkpoints=run.checkpoints("fit", checkpoint_every), pseudo=mix)
        metrics = final_metrics(net, splits, cfg, result, job.started)
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
        save_trained(run, net, student, splits, recipe, metrics)
        job.finish(metrics)
    return job.result(result_line(metrics), net)


@run_function("kd", folder="chain")
def chain(data: str = "digits", teacher=None, students: list[str] = (), *, from_all: bool = False, out=None,
          overwrite: bool = False, resume: bool = False, quiet: bool = False, **kd_options) -> Result:
    """Teacher -> assistant -> ... -> student (Mirzadeh et al. 2020): each stage distils from the previous one
    (``from_all``: from the ensemble of the teacher and every earlier stage). Every stage is saved; a resumed
    chain keeps its finished stages and resumes the one in progress."""
    require(teacher is not None, "a chain needs a teacher model file")
    require(len(students) >= 1, "a chain needs at least one student spec after the teacher")
    require("seeds" not in kd_options, "--seeds with --chain: run the chain once per seed instead")
    loss_terms(kd_options.get("losses"), kd_options.get("temperature"), kd_options.get("alpha"))  # fail early
    job = Run("chain", locals(), students=list(students))
    config = {"command": "kd-chain", "data": data, "teacher": final_path(teacher) if isinstance(teacher, (str, Path))
              else type(teacher).__name__, "students": list(students), "from_all": from_all,
              **{k: v for k, v in kd_options.items() if not callable(v)}}
    with job.output(config) as run:
        sources = [teacher]
        stages = []
        run.path("metrics.jsonl").unlink(missing_ok=True)  # rewritten stage by stage, resumed or not
        for i, spec in enumerate(students, 1):
            source = list(sources) if from_all and len(sources) > 1 else sources[-1]
            job.reporter.info(f"chain stage {i}/{len(students)}: {spec} from "
                              f"{[final_path(p) for p in source] if isinstance(source, list) else final_path(source)}")
            r = finished(run.path(f"stage{i}")) if run.resumed else None
            r = r or distill(data=data, teacher=source, student=spec, out=run.path(f"stage{i}"), quiet=quiet,
                             resume=run.resumed, **kd_options)
            stages.append({"stage": i, "student": spec, "test_accuracy": r.metrics["test_accuracy"],
                           "test_errors": r.metrics["test_errors"], "val_accuracy": r.metrics["val_accuracy"],
                           "model": f"stage{i}/model.safetensors"})
            run.log(stages[-1])
            sources.append(run.path(f"stage{i}") / "model.safetensors")
        metrics = {"stages": stages, "test_accuracy": stages[-1]["test_accuracy"],
                   "test_errors": stages[-1]["test_errors"], "val_accuracy": stages[-1]["val_accuracy"],
                   **job.timing()}
        job.finish(metrics)
    return job.result()


def inspect_teacher(model_path, data: str | None = None, *, temperatures=(1, 2, 4, 8, 20), top_pairs: int = 5,
                    quiet: bool = False, trust_code: bool = False) -> dict:
    """Accuracy, calibration, dark knowledge per temperature, confused class pairs, label-smoothing signs."""
    model, meta, data, ds = model_and_data(model_path, data, "teacher", trust_code)
    norm = meta["normalisation"]
    logits = predict_logits(model, data_mod.normalise(ds.test.x, norm["mean"], norm["std"]))
    report = {"model": str(model_path), "data": data,
              **dark_knowledge_report(logits, ds.test.y, ds.classes, meta, temperatures=temperatures,
                                      top_pairs=top_pairs)}
    reporter = Reporter(quiet)
    for message in report["warnings"]:
        reporter.warn(message)
    return report
