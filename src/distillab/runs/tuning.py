"""A grid search for train, kd or condense, scored on the validation split with the test split sealed (``tune``)."""

from __future__ import annotations

import dataclasses

from .. import data as data_mod
from ..condense import Method
from ..errors import DistillabError, require
from ..models import build_model
from ..protocols import PROTOCOLS, Protocol
from .condensing import condense_scored, method_from
from .distilling import distill
from .evaluating import protocol_from
from .run import Result, Run, run_function
from .training import train


@run_function("tune", resumable=False)
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
    from ..tuning import search

    job = Run("tune", locals(), record=False)
    functions = {"train": train, "kd": distill, "condense": condense_scored}
    require(command in functions, f"tune runs train, kd or condense, got '{command}'")
    if command == "condense":  # the scoring options fail before any trial runs, not after the search
        if isinstance(options.get("protocol"), (dict, str)):  # from the CLI: a spec, or {"name": spec, flag: ...}
            from ..tuning import CONDENSE_TRIAL_RUNS

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
        from ..training import TrainConfig
        from ..tuning import grid_points

        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        for point in grid_points(grid):
            given = {**options, **point}
            try:
                TrainConfig(**{k: v for k, v in given.items() if k in fields and v is not None}).check()
            except (DistillabError, TypeError) as e:
                raise DistillabError(f"tune {command}: the grid point {point} cannot run: {e}") from None
    options = {**options, "quiet": True}
    config = {"command": "tune", "tuned": command, "grid": grid, "seeds": list(seeds), "budget_minutes": budget,
              "options": {k: v for k, v in options.items() if not callable(v) or isinstance(v, str)}}
    with job.output(config) as run:
        result = search(functions[command], options, grid, run.dir, seeds=tuple(seeds), budget_minutes=budget,
                        reporter=job.reporter)
        job.finish({"command": command, **result})
    final = result["final"]["test_accuracy"]
    job.reporter.info(f"tune {command}: best {result['best']} of {result['trials_run']} trials; test accuracy "
                      f"{100 * final['mean']:.2f} +- {100 * final['std']:.2f}% over {len(seeds)} seeds")
    return job.result()
