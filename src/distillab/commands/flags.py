"""What a command file is made of: the ``Command`` record, and the flag groups several commands share, each written
once with what it passes to the API.

No defaults here: a flag left out is None and the API's own default applies; help texts read the defaults off
``cli_text.TEXT``, which keeps them without importing torch.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

from ..cli_text import TEXT
from ..errors import require

IMPORT_PREFIX = "import:"


@dataclass(frozen=True)
class Command:
    """One command of ``distillab``: a file in this folder holds it as ``COMMAND``."""

    name: str  # as typed: distillab NAME
    order: int  # its place in 'distillab --help'
    help: str  # its line in 'distillab --help'
    arguments: Callable[[argparse.ArgumentParser], None]  # adds its flags to its parser
    examples: tuple[str, ...]  # command lines shown by 'distillab NAME --help'
    run: Callable  # (args) -> the result to print (a dict) or None: calls the Python API


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0,1,2, got '{text}'") from None
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given")
    return seeds


def epochs_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs like 30,60, got '{text}'") from None


def default(section: str, name: str) -> str:
    """``default X``: an options dataclass's default (cli_text keeps it)."""
    value = TEXT[section][name]
    return f"default {' '.join(value) if isinstance(value, list) else value}"


def api_default(function: str, parameter: str) -> str:
    """``default X``: the API function's own default for a flag (cli_text keeps it, read off the signature)."""
    value = TEXT["defaults"][function][parameter]
    return f"default {' '.join(map(str, value)) if isinstance(value, list) else value}"


def given(**flags) -> dict:
    """The flags the user gave (not None): the API's own defaults apply to the others."""
    return {k: v for k, v in flags.items() if v is not None}


def add_quiet(p):
    p.add_argument("--quiet", action="store_true", help="no progress or log lines")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="how much to log on stderr (default info: progress and one line per epoch)")
    p.add_argument("--json", action="store_true", help="print every figure as JSON on stdout (default: a short "
                                                       "summary; the run's metrics.json holds them all)")


def add_output(p):
    p.add_argument("--out", help="output folder (default runs/<command>-<timestamp>)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if a distillab run made it (a folder "
                                                            "without its .distillab-run is never deleted)")
    add_quiet(p)


def add_loggers(p):
    p.add_argument("--log", action="append", choices=["jsonl", "csv", "tensorboard"],
                   help="where figures go besides metrics.jsonl/steps.jsonl (always written): csv, tensorboard "
                        "(needs the tensorboard package); repeatable")


def add_trust(p):
    p.add_argument("--trust-code", action="store_true",
                   help="allow files from elsewhere to name code (import:...) that distillab then imports and runs")


def add_device(p) -> None:
    """--device, written once: the default is the training options' (TrainConfig.device), for every command."""
    p.add_argument("--device", help=f"cpu, cuda[:N], mps or auto (the best here); {default('train', 'device')}")


def add_compile(p, default_text: str) -> None:
    """--compile, written once: off, on or auto (distillab.compiling)."""
    p.add_argument("--compile", choices=TEXT["compile_modes"],
                   help="the training step's forward by torch.compile (inductor): on, off, or auto: time a few steps "
                        f"both ways and compile where the run repays the compile ({default_text})")


def add_resume(p, unit: str | None = None, function: str | None = None):
    """--resume, and --checkpoint-every N ``unit`` where the run keeps checkpoints at a rate (its default: the API
    function ``function``'s)."""
    p.add_argument("--resume", metavar="OUT", help="continue the unfinished run in OUT (killed or stopped) with the "
                                                   "options it was started with")
    if unit:
        p.add_argument("--checkpoint-every", type=int, metavar="N",
                       help=f"keep a checkpoint every N {unit} (0: only when stopped by SIGTERM/SIGINT; "
                            f"{api_default(function, 'checkpoint_every')})")


def resumed(a, command: str):
    """--resume OUT: the run in OUT continued with the options it was started with."""
    from ..api import resume

    return resume(a.resume, command=command, quiet=a.quiet, trust_code=getattr(a, "trust_code", False),
                  checkpoint_every=getattr(a, "checkpoint_every", None)).metrics


def run_options(a) -> dict:
    """--checkpoint-every and --log, as the API takes them."""
    options = {k: getattr(a, k) for k in ("checkpoint_every",) if getattr(a, k, None) is not None}
    if getattr(a, "log", None):
        options["log"] = ("jsonl", *a.log)
    return options


def add_training(p, real_data: bool = True):
    """The training flags; ``real_data=False`` (datafree) leaves out what only training on a dataset's own split
    takes: --seeds, the validation split and pseudo-labels."""
    TrainConfig = "train"
    g = p.add_argument_group("training (defaults: distillab.training.TrainConfig)")
    if real_data:
        g.add_argument("--data", help=f"{TEXT['datasets']} ({api_default('train', 'data')})")
    else:
        g.add_argument("--data", help="the dataset whose test split measures the student (default: the teacher's)")
    g.add_argument("--epochs", type=int, help=default(TrainConfig, "epochs"))
    g.add_argument("--batch-size", type=int, help=default(TrainConfig, "batch_size"))
    g.add_argument("--optimizer", choices=["sgd", "adam"], help=default(TrainConfig, "optimizer"))
    g.add_argument("--lr", type=float, help=default(TrainConfig, "lr"))
    g.add_argument("--momentum", type=float, help=default(TrainConfig, "momentum"))
    g.add_argument("--weight-decay", type=float, help=default(TrainConfig, "weight_decay"))
    g.add_argument("--schedule", choices=["cosine", "step", "constant"], help=default(TrainConfig, "schedule"))
    g.add_argument("--lr-steps", type=epochs_list, help="step schedule: epochs where lr x0.1 (default E//2+1)")
    g.add_argument("--label-smoothing", type=float, help=default(TrainConfig, "label_smoothing"))
    g.add_argument("--augment", help="none, shift:2 (digit jitter), crop:4, flip, comma-joined (default none)")
    g.add_argument("--max-norm", type=float, help="cap each unit's incoming weight norm (default 0: off)")
    g.add_argument("--precision", choices=["fp32", "bf16", "auto"],
                   help="fp32, bf16 autocast, or auto: time a few steps of both on this machine and keep the faster "
                        f"at equal loss ({default(TrainConfig, 'precision')})")
    g.add_argument("--bf16", action="store_true", default=None, help="the same as --precision bf16")
    add_compile(g, default(TrainConfig, "compile"))
    g.add_argument("--seed", type=int, help=default(TrainConfig, "seed"))
    if real_data:
        g.add_argument("--seeds", type=seed_list, help="repeat the run for each seed, e.g. 0,1,2: figures as "
                                                       "mean/std/runs")
    g.add_argument("--select", choices=["last", "best-val"],
                   help="keep the last epoch or the best on the validation split, never the test set (default last)")
    add_device(g)
    if not real_data:
        return
    g.add_argument("--val-size", type=int, help="validation images carved from the training data "
                                                "(default 10%%, at most 5000)")
    g.add_argument("--split-seed", type=int,
                   help=f"seed of the validation split ({api_default('train', 'split_seed')})")
    g.add_argument("--pseudo", metavar="FILE.npz", help="pseudo-labels from 'distillab pseudolabel': their images are "
                                                        "mixed into every batch")
    g.add_argument("--pseudo-ratio", metavar="L:P", help="labelled:pseudo-labelled rows per batch with --pseudo "
                                                         f"({default('pseudolabel', 'ratio')})")


def train_options(a) -> dict:
    """The TrainConfig fields the user gave, and --pseudo/--pseudo-ratio if given; the rest keep their defaults."""
    return {k: getattr(a, k) for k in (*TEXT["train"], "lr_steps", "bf16", "pseudo", "pseudo_ratio")
            if getattr(a, k, None) is not None}


# The teacher service (kd --teacher-url): flag -> add_argument options. Each flag's value goes to the API keyword
# of its name (--query-batch: query_batch); all but --teacher-url itself only with --teacher-url.
TEACHER_SERVICE = {
    "--teacher-url": dict(help="a teacher service (distillab serve): http://HOST:PORT"),
    "--token-file": dict(help="--teacher-url: a file holding the service's bearer token"),
    "--concurrency": dict(type=int, help="--teacher-url: requests in flight at once (default 4)"),
    "--query-batch": dict(type=int, help="--teacher-url: rows per request (default 256, at most the service's max "
                                         "batch)"),
    "--query-cache": dict(help="--teacher-url: the answer cache, an SQLite file reused across runs (default "
                               "OUT.queries.sqlite beside the run)"),
    "--query-rate": dict(type=float, help="--teacher-url: at most this many requests per second (default: as fast as "
                                          "the service allows)"),
    "--retries": dict(type=int, help="--teacher-url: attempts after a failed request (5xx, 429, time-out, refused), "
                                     "with exponential back-off from 0.5 s (default 5)"),
    "--follow-redirects": dict(action="store_const", const=True,
                               help="--teacher-url: follow the service's redirects (refused by default); the token "
                                    "goes only to the URL's own scheme, host and port"),
    "--cache-checks": dict(type=int, help="--teacher-url: rows of each batch found in --query-cache that are asked "
                                          "again and compared, so a forged cache is refused (default 16; 0: trust "
                                          "the cache)"),
}


def add_teacher_service(p):
    for flag, options in TEACHER_SERVICE.items():
        p.add_argument(flag, **options)


def teacher_service(a) -> dict:
    """The service keywords the user gave; none without --teacher-url."""
    keywords = [flag[2:].replace("-", "_") for flag in TEACHER_SERVICE]
    values = {keyword: getattr(a, keyword) for keyword in keywords}
    *others, last = list(TEACHER_SERVICE)[1:]  # the flags that need --teacher-url
    require(a.teacher_url or all(v is None for v in values.values()),
            f"{', '.join(others)} and {last} go with --teacher-url")
    return given(**values) if a.teacher_url else {}


# condense's shorthands for options of the method: flag -> add_argument options; each value goes to the keyword of
# its dest (--iterations 5: iterations=5, the same as --method NAME:iterations=5).
CONDENSE_SHORTHANDS = {
    "--model": dict(help="network used for matching (option model)"),
    "--iterations": dict(type=int, help="the method's iterations (option iterations)"),
    "--init": dict(choices=["real", "noise"], help="start from real images or noise"),
    "--lr-img": dict(type=float, help="image learning rate (option lr_img)"),
    "--batch-real": dict(type=int, help="real images (dm: per class; bptt: per iteration)"),
    "--init-net": dict(choices=["fixed", "random"], help="bptt: one stored initialisation, or a fresh one every "
                                                          "iteration"),
    "--bptt-steps": dict(type=int, help="bptt: GD steps per unrolled epoch (option steps)"),
    "--bptt-epochs": dict(type=int, help="bptt: unrolled epochs (option epochs)"),
    "--no-dsa": dict(action="store_false", dest="dsa", default=None,
                     help="no siamese augmentation while matching (option dsa=0)"),
    "--compile": dict(choices=TEXT["compile_modes"],
                      help="torch.compile (inductor) for dm's embedding pass, gm's and dsa's inner network steps; "
                           "auto: where a timed probe shows it pays (option compile); the --protocol evaluation "
                           "follows it"),
}


def add_condense_shorthands(p):
    g = p.add_argument_group("shorthands for the method's options (--iterations 5 = --method NAME:iterations=5)")
    for flag, options in CONDENSE_SHORTHANDS.items():
        g.add_argument(flag, **options)


def condense_shorthands(a) -> dict:
    """Every shorthand's keyword and value, None where not given."""
    keywords = [options.get("dest", flag[2:].replace("-", "_")) for flag, options in CONDENSE_SHORTHANDS.items()]
    return {k: getattr(a, k) for k in keywords}
