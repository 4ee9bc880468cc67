"""Evaluating a saved model (``evaluate_model``), or a synthetic set by an evaluation protocol
(``evaluate_synset``; several sets and models: a matrix), whichever a file holds (``evaluate``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import data as data_mod
from ..compiling import check_mode
from ..condense import METHODS, SyntheticSet
from ..condense.synset import SYNSET_FORMAT
from ..errors import require
from ..evaluation import EvalProtocol, evaluate_set, headline, matrix_markdown
from ..figures import plot_matrix
from ..files import file_sha256, final_path, read_meta
from ..models import build_model
from ..outputs import peak_rss_mb
from ..protocols import PROTOCOLS, Protocol, parse_protocol
from ..specs import option_fields, options_help
from ..training import accuracy, resolve_device
from .run import Result, Run, run_function
from .training import model_and_data


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


@run_function("evaluate", resumable=False)
def evaluate_model(model_path, data: str | None = None, *, out=None, overwrite: bool = False, device: str = "cpu",
                   quiet: bool = False, write: bool = True, trust_code: bool = False) -> Result:
    """Accuracy of a saved model on a dataset's test set and on the validation split it was selected on."""
    job = Run("evaluate_model", locals(), record=False)
    model, meta, data, ds = model_and_data(model_path, data, "model", trust_code)
    recorded = meta.get("data") or {}
    same = recorded.get("data") == data
    norm = meta["normalisation"]
    splits = data_mod.split(ds, val_size=recorded.get("val_size") if same else None,
                            seed=recorded.get("split_seed", 0) if same else 0, mean=norm["mean"], std=norm["std"])
    test_acc, test_err = accuracy(model, splits.test, device)
    val_acc, _ = accuracy(model, splits.val, device)
    metrics = {"model": final_path(model_path), "model_sha256": file_sha256(model_path), "data": data,
               "test_accuracy": test_acc, "test_errors": test_err,
               "test_size": len(splits.test), "val_accuracy": val_acc, "wall_seconds": job.seconds(),
               "peak_rss_mb": peak_rss_mb()}
    if not write:
        return Result(metrics, None, model)
    with job.output({"command": "evaluate", "model": final_path(model_path), "data": data, "device": device}) as run:
        run.log(metrics)
        job.finish(metrics)
    job.reporter.info(f"{model_path} on {data}: test accuracy {test_acc:.4f} ({test_err} errors), val {val_acc:.4f}")
    return job.result(model=model)


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


@run_function("evaluate")
def evaluate_synset(path, data: str | None = None, *, protocol=None, seed: int = 0, vectorise: bool = False,
                    compile: str = "off", out=None, overwrite: bool = False, resume: bool = False, quiet: bool = False,
                    trust_code: bool = False, log=("jsonl",), device: str = "cpu", **options) -> Result:
    """A protocol on a synthetic set: fresh models, final-epoch accuracy on the real test set. ``protocol``: its
    name or spec (default ``distillab``; ``vico-dc``, ``vico-dsa``, ``vico-dm``, ``mtt``, ``wang2018``: the
    reference implementations' own) or an EvalProtocol; ``options``: its options (models, runs, epochs, dsa, ...),
    as the CLI's flags give them. Settings that depend on the dataset or the set (the reference's augmentation per
    dataset, a learned learning rate) are filled in per set, and metrics.json records the protocol as it ran.
    Each finished model is checkpointed; ``resume=True`` continues an unfinished run in ``out``. ``compile``: off,
    on or auto, the training step by torch.compile (distillab.compiling); each spec's choice is in its results.

    ``path`` may be a list of sets of one dataset: each is evaluated on every model (the same seeds, so a set's
    figures are those it gets alone), and metrics.json holds one entry per set under ``synsets``. Whenever there is
    more than one cell (several sets or several models) the run also writes the matrix -- rows: the set a model
    was condensed with, columns: the model evaluated on -- as ``matrix`` in metrics.json, matrix.md and matrix.png."""
    check_mode(compile)
    paths = synset_paths(path)
    job = Run("evaluate_synset", locals(), path=str(paths[0]) if len(paths) == 1 else [str(p) for p in paths],
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
    reporter = job.reporter
    config = {"command": "evaluate", "synset": [final_path(p) for p in paths] if several else final_path(paths[0]),
              "data": data, "seed": seed, "vectorise": vectorise, "protocol": proto.for_data(data, synsets[0]).record()}
    with job.output(config) as run:
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
                                        trust_code=trust_code, compile=compile)
            rows.append({"synset": final_path(p), "synset_sha256": file_sha256(p), "data": data,
                         "method": synset.meta.get("method"), "ipc": synset.ipc, "protocol": ran.record(),
                         "test_accuracy": headline(results), "models": results,
                         **({"as_made": as_made} if as_made else {})})
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
        metrics.update(job.timing())
        job.finish(metrics)
    return job.result()


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
