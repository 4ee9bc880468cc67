"""Condensing a dataset (``condense_data``; scored for a search: ``condense_scored``; its cost estimated:
``condense_estimate``) and training the expert trajectories trajectory matching reads (``experts``)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from .. import data as data_mod
from .. import seeds, trajectories
from ..checkpoint import loop_running
from ..condense import LABELS, METHODS, Method, SyntheticSet, check_ipc, condense, parse_labels
from ..condense.method import repeatable_meta
from ..condense.estimate import estimate_cost
from ..errors import require
from ..evaluation import EvalProtocol, evaluate_set, headline, summarise
from ..figures import plot_loss
from ..files import final_path, to_jsonable
from ..models import build_model
from ..outputs import peak_rss_mb
from ..specs import option_fields, options_help
from ..training import accuracy, resolve_device
from ..trajectories import ExpertConfig, expert_model, expert_path, parameter_layout
from .evaluating import protocol_from
from .run import Result, Run, run_function
from .training import load_splits


# The condense command's flags from before methods took options (--method NAME:key=value,...), kept as shorthands:
# API keyword -> the method option it sets.
METHOD_SHORTHANDS = {"model": "model", "iterations": "iterations", "init": "init", "lr_img": "lr_img",
                     "batch_real": "batch_real", "init_net": "init_net", "bptt_steps": "steps",
                     "bptt_epochs": "epochs", "dsa": "dsa", "compile": "compile"}


def _flag(keyword: str) -> str:
    return "--no-dsa" if keyword == "dsa" else "--" + keyword.replace("_", "-")


def with_shorthands(registry, method, shorthands: dict | None, keys: dict, what: str, trust_code: bool):
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
    return with_shorthands(METHODS, method, shorthands, METHOD_SHORTHANDS, "condense", trust_code)


def method_options_of(method: str | None, *, trust_code: bool = False) -> list[str]:
    """The option names of the method a ``NAME[:key=value,...]`` spec names (none for no spec)."""
    if not method:
        return []
    name, _ = METHODS.split(method)
    return list(option_fields(METHODS.resolve(name, trust_code=trust_code)))


def method_grid_specs(method: str, grid: dict[str, list[str]], *, trust_code: bool = False) -> list[str]:
    """One method spec per combination of ``grid`` (option -> values as typed), added to ``method``'s own options:
    how ``tune condense`` searches an option that has no flag. Each spec is checked before any trial runs."""
    from ..tuning import grid_points

    _, explicit = METHODS.split(method)
    clash = sorted(set(grid) & set(explicit))
    require(not clash, f"--grid {', '.join(clash)}: --method {method} also sets it; give it in one place")
    specs = []
    for point in grid_points(grid):
        spec = method.strip() + ("," if explicit else ":") + ",".join(f"{k}={v}" for k, v in point.items())
        METHODS.parse(spec, trust_code=trust_code)  # a bad value is a one-line error now, not mid-search
        specs.append(spec)
    return specs


@run_function("condense")
def condense_data(data: str = "digits", method="dm", ipc: int = 10, *, labels="hard", seed: int = 0,
                  val_size: int | None = None, split_seed: int = 0, out=None, overwrite: bool = False,
                  resume: bool = False, checkpoint_every: int = 10, quiet: bool = False, log=("jsonl",),
                  device: str = "cpu", trust_code: bool = False, protocol=None, **shorthands) -> Result:
    """Condense ``data`` into ``ipc`` images per class; writes synset.safetensors, synset.png and metrics (with the
    set's budget: bytes, seconds, peak memory, real images read).

    method: ``NAME[:key=value,...]`` (see ``METHODS.help()``) or a Method object. labels: ``hard``,
    ``learn[:key=value,...]``, ``teacher:MODEL_FILE`` (see ``labels_help()``) or a Labels object. ``shorthands``:
    the flags --model, --iterations, --init, --lr-img, --batch-real, --init-net, --bptt-steps, --bptt-epochs,
    --no-dsa (``dsa=False``), --compile, each setting that option of the method (the ``protocol`` evaluation
    follows the method's ``compile``). A checkpoint is kept every
    ``checkpoint_every`` iterations; ``resume=True`` continues an unfinished run in ``out``. ``protocol`` (a name
    or spec, e.g. ``vico-dc``): the set is then measured on the test split by that protocol too, and metrics.json
    holds the figures under ``evaluation`` with the protocol as it ran.
    """
    method = method_from(method, shorthands)
    labels = parse_labels(labels) if isinstance(labels, str) else labels
    proto = protocol_from(protocol) if protocol is not None else None
    job = Run("condense_data", locals(), omit=("shorthands",), method=str(method), labels=str(labels),
              protocol=protocol if protocol is None or isinstance(protocol, str) else str(protocol))
    reporter = job.reporter
    splits = load_splits(data, val_size, split_seed)
    data = splits.spec
    train = splits.train_set()
    check_ipc(train, ipc)
    method.check_data(train)  # a bad model or option fails before any output
    labels.check_data(train, trust_code)
    if proto is not None:
        for spec in proto.models:
            build_model(spec, train.input_shape, train.num_classes)
    config = {"command": "condense", "data": data, "method": str(method), "ipc": ipc, "labels": str(labels),
              "seed": seed, "val_size": splits.val_size, "split_seed": split_seed,
              **({"method_recipe": method.recipe_record()} if method.recipe_record() else {}),
              **({"protocol": proto.for_data(data).record()} if proto else {})}
    with job.output(config) as run:
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
        spent = synset.meta["budget"]  # the whole budget, timings included, goes to metrics.json below
        dataclasses.replace(synset, meta=repeatable_meta(synset.meta)).save(run.path("synset.safetensors"))
        synset.save_grid(run.path("synset.png"))
        run.log_image("synthetic set", run.path("synset.png"))
        if losses:
            plot_loss(losses, run.path("loss.png"), f"{method.name} on {data}, IPC {ipc}")
        full_bytes = train.x.numel() * 1 + train.y.numel() * 1  # the training images as uint8 pixels
        metrics = {"method": method.name, "ipc": ipc, "labels": str(labels),
                   "iterations": method.iterations_total + labels.iterations_total,
                   "wall_seconds": job.seconds(), "condense_seconds": seconds,
                   "iterations_per_second": round(len(losses) / seconds, 3) if losses and seconds else None,
                   "peak_rss_mb": peak_rss_mb(), "synset_bytes": synset.nbytes(), "train_set_bytes_uint8": full_bytes,
                   "images": len(synset.labels), "final_loss": losses[-1] if losses else None,
                   "budget": spent, **({"compile": synset.meta["compile"]} if "compile" in synset.meta else {}),
                   **({"method_recipe": method.recipe_record()} if method.recipe_record() else {})}
        if proto is not None:  # measured on the test split by the protocol asked for
            results, ran = evaluate_set(synset, splits.test, proto, data=data, seed=seed, reporter=reporter,
                                        num_classes=splits.num_classes, device=resolve_device(device),
                                        checkpoints=run.checkpoints("protocol", 1), trust_code=trust_code,
                                        compile=getattr(method, "compile", "off"))
            metrics["evaluation"] = {"protocol": ran.record(), "test_accuracy": headline(results), "models": results}
        job.finish(metrics)
    return job.result(f"condensed {data} with {method.name} to {ipc} images per class in {seconds:.1f} s",
                      synset=synset)


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
    """What ``condense_data`` with these arguments would cost, from a short run that writes nothing
    (``condense.estimate.estimate_cost``: ``probe`` + 1 iterations, timed)."""
    require(isinstance(probe, int) and probe >= 1, f"probe must be at least 1, got {probe}")
    method = method_from(method, shorthands)
    labels = parse_labels(labels) if isinstance(labels, str) else labels
    splits = load_splits(data, val_size, split_seed)
    train = splits.train_set()
    check_ipc(train, ipc)
    method.check_data(train)
    labels.check_data(train, trust_code)
    return estimate_cost(train.to(resolve_device(device)), method, labels, ipc, data=splits.spec, seed=seed,
                         probe=probe, trust_code=trust_code)


@run_function("experts")
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
    given = {k: v for k, v in dict(model=model, experts=experts, epochs=epochs, **options).items() if v is not None}
    known = {f.name for f in dataclasses.fields(ExpertConfig)}
    unknown = sorted(set(given) - known)
    require(not unknown, f"unknown expert option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    cfg = ExpertConfig(**given).check()
    cfg.device = resolve_device(cfg.device)
    job = Run("experts", locals())
    reporter = job.reporter
    splits = load_splits(data, val_size, split_seed)
    data = splits.spec
    layout = parameter_layout(expert_model(cfg.model, splits.input_shape, splits.num_classes))  # fails before output
    train_split = splits.train_set()
    planned = trajectories.expert_meta(train_split, cfg, 0, layout, [], {})
    train_split = train_split.to(cfg.device)
    config = {"command": "experts", "data": data, "val_size": splits.val_size, "split_seed": split_seed,
              **dataclasses.asdict(cfg)}
    with job.output(config) as run:
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
                   **job.timing()}
        job.finish(metrics)
    reporter.info(f"{cfg.experts} experts, test accuracy {metrics['test_accuracy']['mean']:.4f}; wrote "
                  f"{final_path(run.final)} (use it with --method mtt:experts={final_path(run.final)})")
    return job.result()


def labels_help() -> str:
    return options_help(LABELS.get("learn"))
