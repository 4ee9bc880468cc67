"""Command line: parses flags and calls the Python API (``distillab.api``, ``distillab.bench``, ``distillab.demo``);
prints the result as JSON.

Defaults are not written here: a flag left out leaves the option to its dataclass (``TrainConfig``, ``Protocol``,
a loss term's or a method's fields); choices and help texts of --loss, --method and bench come from the registries.
Any user-fixable problem ends as one line ``distillab: error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from pathlib import Path

from ._version import __version__
from .cli_text import TEXT
from .errors import DistillabError, require

IMPORT_PREFIX = "import:"


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --epoch must not silently mean --epochs
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse would print usage and exit; we want the one-line error
        raise DistillabError(f"{message} (see '{self.prog} --help')")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip() != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0,1,2, got '{text}'") from None
    if not seeds:
        raise argparse.ArgumentTypeError("no seeds given")
    return seeds


def _epochs_list(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected epochs like 30,60, got '{text}'") from None


def _add_output(p):
    p.add_argument("--out", help="output folder (default runs/<command>-<timestamp>)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if a distillab run made it (a folder "
                                                            "without its .distillab-run is never deleted)")
    _add_quiet(p)


def _add_loggers(p):
    p.add_argument("--log", action="append", choices=["jsonl", "csv", "tensorboard"],
                   help="where figures go besides metrics.jsonl/steps.jsonl (always written): csv, tensorboard "
                        "(needs the tensorboard package); repeatable")


def _add_resume(p, unit: str | None):
    p.add_argument("--resume", metavar="OUT", help="continue the unfinished run in OUT (killed or stopped) with the "
                                                   "options it was started with")
    if unit:
        p.add_argument("--checkpoint-every", type=int, metavar="N",
                       help=f"keep a checkpoint every N {unit} (0: only when stopped by SIGTERM/SIGINT; default "
                            f"{'1' if unit == 'epochs' else '10'})")


def _add_quiet(p):
    p.add_argument("--quiet", action="store_true", help="no progress or log lines")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="how much to log on stderr (default info: progress and one line per epoch)")
    p.add_argument("--json", action="store_true", help="print every figure as JSON on stdout (default: a short "
                                                       "summary; the run's metrics.json holds them all)")


def _add_trust(p):
    p.add_argument("--trust-code", action="store_true",
                   help="allow files from elsewhere to name code (import:...) that distillab then imports and runs")


def _default(section: str, name: str) -> str:
    value = TEXT[section][name]
    return f"default {' '.join(value) if isinstance(value, list) else value}"


def _add_device(p) -> None:
    """--device, written once: the default is the training options' (TrainConfig.device), for every command."""
    p.add_argument("--device", help=f"cpu, cuda[:N], mps or auto (the best here); {_default('train', 'device')}")


def _api_default(function: str, parameter: str) -> str:
    """``default X``: the API function's own default for a flag (cli_text keeps it, read off the signature)."""
    value = TEXT["defaults"][function][parameter]
    return f"default {' '.join(map(str, value)) if isinstance(value, list) else value}"


def _given(**flags) -> dict:
    """The flags the user gave (not None): the API's own defaults apply to the others."""
    return {k: v for k, v in flags.items() if v is not None}


def _add_training(p, real_data: bool = True):
    """The training flags; ``real_data=False`` (datafree) leaves out what only training on a dataset's own split
    takes: --seeds, the validation split and pseudo-labels."""
    TrainConfig = "train"
    g = p.add_argument_group("training (defaults: distillab.training.TrainConfig)")
    if real_data:
        g.add_argument("--data", help=f"{TEXT['datasets']} ({_api_default('train', 'data')})")
    else:
        g.add_argument("--data", help="the dataset whose test split measures the student (default: the teacher's)")
    g.add_argument("--epochs", type=int, help=_default(TrainConfig, "epochs"))
    g.add_argument("--batch-size", type=int, help=_default(TrainConfig, "batch_size"))
    g.add_argument("--optimizer", choices=["sgd", "adam"], help=_default(TrainConfig, "optimizer"))
    g.add_argument("--lr", type=float, help=_default(TrainConfig, "lr"))
    g.add_argument("--momentum", type=float, help=_default(TrainConfig, "momentum"))
    g.add_argument("--weight-decay", type=float, help=_default(TrainConfig, "weight_decay"))
    g.add_argument("--schedule", choices=["cosine", "step", "constant"], help=_default(TrainConfig, "schedule"))
    g.add_argument("--lr-steps", type=_epochs_list, help="step schedule: epochs where lr x0.1 (default E//2+1)")
    g.add_argument("--label-smoothing", type=float, help=_default(TrainConfig, "label_smoothing"))
    g.add_argument("--augment", help="none, shift:2 (digit jitter), crop:4, flip, comma-joined (default none)")
    g.add_argument("--max-norm", type=float, help="cap each unit's incoming weight norm (default 0: off)")
    g.add_argument("--precision", choices=["fp32", "bf16", "auto"],
                   help="fp32, bf16 autocast, or auto: time a few steps of both on this machine and keep the faster "
                        f"at equal loss ({_default(TrainConfig, 'precision')})")
    g.add_argument("--bf16", action="store_true", default=None, help="the same as --precision bf16")
    g.add_argument("--seed", type=int, help=_default(TrainConfig, "seed"))
    if real_data:
        g.add_argument("--seeds", type=_seeds, help="repeat the run for each seed, e.g. 0,1,2: figures as "
                                                    "mean/std/runs")
    g.add_argument("--select", choices=["last", "best-val"],
                   help="keep the last epoch or the best on the validation split, never the test set (default last)")
    _add_device(g)
    if not real_data:
        return
    g.add_argument("--val-size", type=int, help="validation images carved from the training data "
                                                "(default 10%%, at most 5000)")
    g.add_argument("--split-seed", type=int,
                   help=f"seed of the validation split ({_api_default('train', 'split_seed')})")
    g.add_argument("--pseudo", metavar="FILE.npz", help="pseudo-labels from 'distillab pseudolabel': their images are "
                                                        "mixed into every batch")
    g.add_argument("--pseudo-ratio", metavar="L:P", help="labelled:pseudo-labelled rows per batch with --pseudo "
                                                         f"({_default('pseudolabel', 'ratio')})")


def _train_options(a) -> dict:
    """The TrainConfig fields the user gave, and --pseudo/--pseudo-ratio if given; the rest keep their defaults."""
    return {k: getattr(a, k) for k in (*TEXT["train"], "lr_steps", "bf16", "pseudo", "pseudo_ratio")
            if getattr(a, k, None) is not None}


def build_parser() -> Parser:
    Hinton, Protocol = "hinton", "protocol"

    parser = Parser(prog="distillab", description="Machine teaching: model distillation and dataset distillation.")
    parser.add_argument("--version", action="version", version=f"distillab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    parser.commands = sub.choices

    p = sub.add_parser("train", help="train a model with cross-entropy")
    p.add_argument("--model", help=f"model spec (required), e.g. convnet:width=32: {TEXT['models']}; or "
                                   "import:pkg.module:factory[:key=value,...] (factory(input_shape=, num_classes=))")
    _add_training(p)
    _add_output(p)
    _add_resume(p, "epochs")
    _add_loggers(p)

    p = sub.add_parser("kd", help="distill a teacher into a student")
    p.add_argument("--teacher", nargs="+", help="teacher model file(s); several form an averaged ensemble")
    p.add_argument("--teacher-outputs", help="a black box's outputs (.npz from 'distillab predict')")
    p.add_argument("--teacher-url", help="a teacher service (distillab serve): http://HOST:PORT")
    p.add_argument("--token-file", help="--teacher-url: a file holding the service's bearer token")
    p.add_argument("--concurrency", type=int, help="--teacher-url: requests in flight at once (default 4)")
    p.add_argument("--query-batch", type=int, help="--teacher-url: rows per request (default 256, at most the "
                                                   "service's max batch)")
    p.add_argument("--query-cache", help="--teacher-url: the answer cache, an SQLite file reused across runs "
                                         "(default OUT.queries.sqlite beside the run)")
    p.add_argument("--query-rate", type=float, help="--teacher-url: at most this many requests per second "
                                                    "(default: as fast as the service allows)")
    p.add_argument("--retries", type=int, help="--teacher-url: attempts after a failed request (5xx, 429, time-out, "
                                               "refused), with exponential back-off from 0.5 s (default 5)")
    p.add_argument("--follow-redirects", action="store_const", const=True,
                   help="--teacher-url: follow the service's redirects (refused by default); the token goes only to "
                        "the URL's own scheme, host and port")
    p.add_argument("--cache-checks", type=int,
                   help="--teacher-url: rows of each batch found in --query-cache that are asked again and compared, "
                        "so a forged cache is refused (default 16; 0: trust the cache)")
    p.add_argument("--student", help="student model spec (see --model of 'distillab train --help')")
    p.add_argument("--chain", nargs="+", metavar="TEACHER SPEC",
                   help="teacher-assistant chain: TEACHER SPEC1 SPEC2 ...; each stage learns from the previous one")
    p.add_argument("--chain-from-all", action="store_true",
                   help="each chain stage learns from the ensemble of the teacher and all earlier stages")
    p.add_argument("--temperature", type=float,
                   help=f"shorthand for --loss kd:T=.. ({_default(Hinton, 'temperature')}); not with --loss")
    p.add_argument("--alpha", type=float,
                   help=f"shorthand: weight of kd, 1-alpha on ce ({_default(Hinton, 'alpha')}); not with --loss")
    p.add_argument("--loss", action="append", help="loss term NAME[:key=value,...], repeatable; "
                                                   f"{TEXT['losses']}; or {IMPORT_PREFIX}pkg.module:Class[:key=value,...]")
    p.add_argument("--tap", action="append", default=[], help="student=PATH or teacher=PATH (module path or "
                                                              "'penultimate') for feature losses")
    p.add_argument("--cache-teacher", choices=["auto", "yes", "no"],
                   help="compute the teacher's outputs once (auto, the default: when there is no augmentation)")
    _add_training(p)
    _add_trust(p)
    _add_output(p)
    _add_resume(p, "epochs")
    _add_loggers(p)

    p = sub.add_parser("inspect", help="a dark-knowledge meter for a teacher")
    p.add_argument("model", help="teacher model.safetensors")
    p.add_argument("--data", help="dataset (default: the one the model was trained on)")
    _add_trust(p)
    _add_quiet(p)

    p = sub.add_parser("evaluate", help="evaluate a saved model, or a synthetic set by an evaluation protocol")
    p.add_argument("model", nargs="*", default=[], metavar="FILE",
                   help="model.safetensors, or one or more synset.safetensors of one dataset (several sets or "
                        "--models: a matrix, one row per set, one column per model: matrix.md, matrix.png)")
    p.add_argument("--data", help="dataset (default: the one the file records)")
    _add_device(p)
    g = p.add_argument_group("synthetic sets: the evaluation protocol (defaults: its options dataclass, "
                             "distillab.protocols; the flags below set its options)")
    g.add_argument("--protocol", help=f"NAME[:key=value,...] (default distillab): {TEXT['protocols']}")
    g.add_argument("--models", nargs="+", help=f"model specs to train ({_default(Protocol, 'models')})")
    g.add_argument("--runs", type=int, help=f"fresh models per spec ({_default(Protocol, 'runs')})")
    g.add_argument("--epochs", type=int, help=_default(Protocol, "epochs"))
    g.add_argument("--dsa", action="store_true", default=None,
                   help="differentiable siamese augmentation while training")
    g.add_argument("--augment", help="none, or dc: the reference's non-differentiable augmentation (crop, scale or "
                                     "rotate, drawn per image; not with --dsa)")
    g.add_argument("--seed", type=int)
    g.add_argument("--vectorise", action="store_true", default=None,
                   help="train the runs together (torch.func vmap); slower than one at a time on 2-core CPUs here")
    _add_trust(p)
    _add_output(p)
    _add_resume(p, None)
    _add_loggers(p)

    p = sub.add_parser("condense", help="distill a dataset into a few synthetic images per class")
    p.add_argument("--data", help=f"{TEXT['datasets']} ({_api_default('condense_data', 'data')})")
    p.add_argument("--method", help=f"NAME[:key=value,...] (required): {TEXT['methods']}; or "
                                    f"{IMPORT_PREFIX}pkg.module:Class[:key=value,...]")
    p.add_argument("--ipc", type=int, help="images per class (required)")
    p.add_argument("--labels", help="hard (default); learn[:key=value,...] (soft labels learned as "
                                                    f"logits: {TEXT['labels']}); teacher:MODEL_FILE (a trained "
                                                    "model's outputs)")
    p.add_argument("--dry-run", action="store_true", help="time a few iterations and print the estimated time and "
                                                          "memory of the run; writes nothing")
    p.add_argument("--protocol", help="NAME[:key=value,...]: measure the set on the test split by this evaluation "
                                      "protocol too (see 'distillab evaluate --help'); figures in metrics.json")
    g = p.add_argument_group("shorthands for the method's options (--iterations 5 = --method NAME:iterations=5)")
    g.add_argument("--model", help="network used for matching (option model)")
    g.add_argument("--iterations", type=int)
    g.add_argument("--init", choices=["real", "noise"], help="start from real images or noise")
    g.add_argument("--lr-img", type=float, help="image learning rate (option lr_img)")
    g.add_argument("--batch-real", type=int, help="real images (dm: per class; bptt: per iteration)")
    g.add_argument("--init-net", choices=["fixed", "random"],
                   help="bptt: one stored initialisation, or a fresh one every iteration")
    g.add_argument("--bptt-steps", type=int, help="bptt: GD steps per unrolled epoch (option steps)")
    g.add_argument("--bptt-epochs", type=int, help="bptt: unrolled epochs (option epochs)")
    g.add_argument("--no-dsa", action="store_false", dest="dsa", default=None,
                   help="no siamese augmentation while matching (option dsa=0)")
    p.add_argument("--seed", type=int, help=f"seeds the method's draws ({_api_default('condense_data', 'seed')})")
    p.add_argument("--val-size", type=int)
    p.add_argument("--split-seed", type=int,
                   help=f"seed of the validation split ({_api_default('condense_data', 'split_seed')})")
    _add_device(p)
    _add_output(p)
    _add_resume(p, "iterations")
    _add_trust(p)
    _add_loggers(p)

    p = sub.add_parser("experts", help="train expert trajectories for trajectory matching (--method mtt)")
    p.add_argument("--data", help=f"{TEXT['datasets']} ({_api_default('experts', 'data')})")
    p.add_argument("--model", help=f"model spec without batch norm or dropout ({_expert_default('model')}); mtt's "
                                   "model option must name the same")
    p.add_argument("--experts", type=int, help=f"how many experts ({_expert_default('experts')})")
    p.add_argument("--epochs", type=int, help=f"epochs per expert, one trajectory row each "
                                              f"({_expert_default('epochs')})")
    p.add_argument("--lr", type=float, help=f"SGD learning rate ({_expert_default('lr')})")
    p.add_argument("--momentum", type=float, help=_expert_default("momentum"))
    p.add_argument("--weight-decay", type=float, help=_expert_default("weight_decay"))
    p.add_argument("--batch-size", type=int, help=_expert_default("batch_size"))
    p.add_argument("--no-dsa", action="store_false", dest="dsa", default=None,
                   help="no differentiable siamese augmentation while the experts train")
    p.add_argument("--seed", type=int, help=f"expert i draws from the stream ('expert', i) of this seed "
                                            f"({_expert_default('seed')})")
    _add_device(p)
    p.add_argument("--val-size", type=int, help="validation images carved from the training data, as condense "
                                                "carves them (default 10%%, at most 5000)")
    p.add_argument("--split-seed", type=int,
                   help=f"seed of the validation split ({_api_default('experts', 'split_seed')})")
    _add_output(p)
    _add_resume(p, None)
    _add_loggers(p)

    p = sub.add_parser("metadata", help="record a teacher's per-class activation statistics, to distill from later "
                                        "without the data (Lopes et al. 2017)")
    p.add_argument("teacher", help="teacher model.safetensors")
    p.add_argument("--data", help="its training data (default: the dataset the teacher records)")
    p.add_argument("--records", choices=["top", "all", "spectral"],
                   help="top: the temperature-scaled logits; all: every layer's pre-activations (full covariance, "
                        "diagonal where singular or wide); spectral: each layer's top-k activation-graph modes "
                        f"({_api_default('metadata', 'records')})")
    p.add_argument("--temperature", type=float,
                   help=f"divides the logits ({_api_default('metadata', 'temperature')})")
    p.add_argument("--modes", type=int,
                   help=f"spectral: eigen-pairs kept per layer ({_api_default('metadata', 'modes')})")
    p.add_argument("--max-full", type=int,
                   help=f"widest layer recorded with a full covariance ({_api_default('metadata', 'max_full')})")
    p.add_argument("--val-size", type=int, help="validation images left out of the records (default as train)")
    p.add_argument("--out", help="FILE.safetensors (default metadata-RECORDS.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _add_trust(p)
    _add_quiet(p)

    p = sub.add_parser("datafree", help="distill a teacher without its training data: a transfer set made from the "
                                        "teacher alone, then KD")
    p.add_argument("--teacher", help="teacher model.safetensors (required)")
    p.add_argument("--method", help=f"NAME[:key=value,...] (required): {TEXT['datafree']}")
    p.add_argument("--student", help="student model spec (required; see --model of 'distillab train --help')")
    p.add_argument("--samples", type=int, help="transfer-set images (the method's option samples)")
    p.add_argument("--iterations", type=int, help="the method's synthesis budget (its option iterations)")
    p.add_argument("--temperature", type=float, help=f"of the kd loss ({_default('hinton', 'temperature')}); not "
                                                     "with --loss")
    p.add_argument("--loss", action="append", help="loss term NAME[:key=value,...], repeatable (default kd at "
                                                   "--temperature, weight 1)")
    _add_training(p, real_data=False)
    _add_trust(p)
    _add_output(p)
    _add_resume(p, "epochs")
    _add_loggers(p)

    p = sub.add_parser("audit", help="audit a synthetic set: poisoning (labels a trusted model disputes, class "
                                     "statistics, what it teaches) and privacy (memorisation, membership inference)")
    p.add_argument("synset", help="synset.safetensors")
    p.add_argument("--reference", help="a trusted model.safetensors of the same data (labels, class-stats)")
    p.add_argument("--data", help="the dataset the set was condensed from (default: the one it records)")
    p.add_argument("--audits", nargs="+", metavar="NAME[:key=value,...]",
                   help=f"which audits (default: every one the inputs allow): {TEXT.get('audits', '')}")
    p.add_argument("--privacy", action="store_true", help="add the privacy audits (memorisation, membership)")
    p.add_argument("--fpr", type=float, nargs="+",
                   help=f"false-positive rates the membership attacks are read at ({_api_default('audit', 'fpr')}; "
                        "each needs 10/rate held-out images)")
    p.add_argument("--seed", type=int, help=f"seeds the audits' models and draws ({_api_default('audit', 'seed')})")
    _add_device(p)
    _add_trust(p)
    _add_output(p)

    p = sub.add_parser("serve", help="serve a model's probabilities (never its weights) over HTTP, for "
                                     "'distillab kd --teacher-url'")
    p.add_argument("model", help="model.safetensors")
    serving = "serve"  # the defaults below are ServeOptions' (cli_text records them), but the port's
    p.add_argument("--host", help=f"address to listen on ({_default(serving, 'host')}: this machine only)")
    p.add_argument("--port", type=int, default=8000,  # a service run from the shell wants a known port
                   help="default 8000; 0 picks a free port (distillab.serve() in Python picks one by default)")
    p.add_argument("--output", help=f"what a client gets: probs, topk:K or label ({_default(serving, 'output')})")
    p.add_argument("--token-file", help="a file holding a bearer token every request must carry")
    p.add_argument("--max-batch", type=int, help=f"rows per request ({_default(serving, 'max_batch')})")
    p.add_argument("--rate", type=float, help="requests per second allowed (default unlimited)")
    p.add_argument("--noise", type=float,
                   help=f"std of Gaussian noise on the log-probabilities ({_default(serving, 'noise')})")
    p.add_argument("--round", type=int, help="decimals the probabilities are rounded to (default: not rounded)")
    p.add_argument("--seed", type=int, help=f"seed of the noise ({_default(serving, 'seed')})")
    p.add_argument("--request-timeout", type=float, help="seconds a client has to send a whole request, from its "
                                                         "first byte or its connection's opening "
                                                         f"({_default(serving, 'request_timeout')})")
    p.add_argument("--max-connections", type=int, help="connections open at once; beyond it a new one is answered "
                                                       f"503 and closed ({_default(serving, 'max_connections')})")
    _add_device(p)
    _add_trust(p)
    _add_quiet(p)

    p = sub.add_parser("tune", help="a grid search for train, kd or condense: trials scored on the validation split "
                                    "with the test split sealed, the best re-run with several seeds and only then "
                                    "measured")
    p.add_argument("tuned", choices=["train", "kd", "condense"],
                   help="the command to tune; its own flags follow (they are fixed)")
    p.add_argument("--grid", action="append", metavar="FLAG=V1,V2,...",
                   help="a flag of the command and the values to try, e.g. --grid lr=0.01,0.05 --grid temperature=2,4 "
                        "(repeatable; every combination is a trial); for condense also an option of the method, "
                        "e.g. --method dm --grid momentum=0.5,0.9 --grid clamp=none,end")
    p.add_argument("--budget", type=float, help="minutes after which no new trial starts (default: all trials)")
    p.add_argument("--final-seeds", type=_seeds,
                   help="seeds of the best recipe's final runs, the only ones measured on the test set "
                        f"({_api_default('tune', 'seeds')})")
    g = p.add_argument_group("tune condense: how a set is scored (fresh models trained on it by the protocol of "
                             "'distillab evaluate'; trials on the validation split, final runs on the test split)")
    g.add_argument("--protocol", help="NAME[:key=value,...]: the evaluation protocol that scores a set (default "
                                      "distillab); the --eval-* flags set its options")
    g.add_argument("--eval-models", nargs="+", help=f"model specs ({_default(Protocol, 'models')})")
    g.add_argument("--eval-runs", type=int, help="models per spec in a trial (default 2: enough to rank recipes)")
    g.add_argument("--eval-epochs", type=int, help=_default(Protocol, "epochs"))
    g.add_argument("--eval-dsa", action="store_true", default=None, help="DSA while training the models")
    g.add_argument("--eval-augment", help="none, or dc (the reference's augmentation; not with --eval-dsa)")
    g.add_argument("--final-runs", type=int, help=f"models per spec in a final run ({_default(Protocol, 'runs')})")
    g.add_argument("--eval-as-made", action="store_true", default=None,
                   help="score by the models trained the way the set was made (bptt: its learned schedule), not by "
                        "the protocol's")
    _add_output(p)

    p = sub.add_parser("predict", help="write a model's outputs as a black-box teacher would give them")
    p.add_argument("model", help="model.safetensors")
    p.add_argument("--data")
    p.add_argument("--split", choices=["train", "test"], help=_api_default("predict", "split"))
    p.add_argument("--output", choices=["probs", "logits"], help=_api_default("predict", "output"))
    p.add_argument("--top-k", type=int)
    _add_device(p)
    p.add_argument("--out", help="FILE.npz")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _add_trust(p)
    _add_quiet(p)

    p = sub.add_parser("pseudolabel", help="label unlabeled images by a teacher's predictions averaged over "
                                           "transformed views (omni-supervised learning)")
    p.add_argument("--teacher", help="teacher model.safetensors (required)")
    p.add_argument("--data", help="the unlabeled images (required): npz:PATH (an 'x' without 'y'), folder:PATH (image "
                                  "files directly in it), or a labelled dataset, whose labels are not used")
    p.add_argument("--transforms", help="views averaged besides the original, comma-joined: identity (none: a single "
                                        "pass), shift (+-2 px), scale (0.9, 1.1), rotate (+-10 degrees), flip "
                                        f"({_default('pseudolabel', 'transforms')})")
    p.add_argument("--threshold", type=float, help="keep the images whose averaged top probability is at least this "
                                                   f"({_default('pseudolabel', 'threshold')}: all)")
    p.add_argument("--soft", action="store_true", default=None,
                   help="keep the averaged probabilities as soft labels instead of the most likely class")
    _add_device(p)
    p.add_argument("--out", help="FILE.npz (default runs/pseudolabel-<timestamp>.npz)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _add_trust(p)
    _add_quiet(p)

    p = sub.add_parser("data", help="fetch or describe a dataset")
    p.add_argument("action", choices=["fetch", "info"])
    p.add_argument("name", help=TEXT["datasets"])
    _add_quiet(p)

    p = sub.add_parser("demo", help="teacher -> student end to end, with a report")
    p.add_argument("--quick", action="store_true", help="digits instead of MNIST: under 2 minutes")
    _add_output(p)

    p = sub.add_parser("export", help="export a model to run without distillab (.pt2, .ts, .onnx), or a synthetic "
                                      "set as .npz (the npz: data format) or a PNG grid")
    p.add_argument("synset", metavar="FILE", help="model.safetensors or synset.safetensors")
    p.add_argument("--to", required=True, help="OUT.pt2 (torch.export), OUT.ts (TorchScript), OUT.onnx (needs the "
                                               "onnx package); for a set OUT.npz or OUT.png")
    p.add_argument("--overwrite", action="store_true", help="replace --to if it exists")
    _add_trust(p)
    _add_quiet(p)

    p = sub.add_parser("import-synset", help="read a synthetic set the reference code made (VICO DC/DSA/DM, MTT) "
                                             "into a synset.safetensors that evaluate takes")
    p.add_argument("file", metavar="FILE", help="their torch file: VICO res_*.pt, MTT images_best.pt or images_N.pt "
                                                "(read with torch.load(weights_only=True) only)")
    p.add_argument("--format", required=True, choices=["vico", "mtt"], help="which code wrote FILE")
    p.add_argument("--data", required=True, help=f"the dataset the set was made from (the file does not say): "
                                                 f"{TEXT['datasets']}")
    p.add_argument("--out", required=True, help="the FILE.safetensors to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--experiment", type=int, help="vico: which experiment of FILE (default 0)")
    p.add_argument("--labels", help="mtt: the labels file (default labels_X.pt beside images_X.pt)")
    _add_quiet(p)

    p = sub.add_parser("bench", help="run a benchmark (the papers' tables)")
    p.add_argument("name", help=", ".join(TEXT["benchmarks"]))
    p.add_argument("--quick", action="store_true", help="the seconds-long version on digits")
    p.add_argument("--out", help="folder for NAME.json, NAME.md and the runs (default runs/bench)")
    p.add_argument("--workers", type=int,
                   help="processes for benchmarks made of independent cells (dd-mnist); finished cells are kept "
                        f"in OUT/work, so a rerun resumes ({_api_default('run_benchmark', 'workers')})")
    p.add_argument("--resume", metavar="OUT", help="the same as --out OUT: a benchmark keeps its finished cells and "
                                                   "teachers there and takes them up again")
    p.add_argument("--protocol", help="dd-mnist, cross-arch, dm-budget: measure their sets by this evaluation "
                                      "protocol instead of their own (e.g. vico-dsa); those cells are kept apart")
    p.add_argument("--cells", nargs="+", metavar="PATTERN", default=(),
                   help="run only the cells whose names match (dd-mnist, e.g. 'dm-10-*' 'random-*-dc'); the table "
                        "shows these and the cells kept in OUT from earlier runs")
    _add_quiet(p)

    p = sub.add_parser("run", help="run a command from a YAML recipe whose keys are its flags")
    p.add_argument("recipe", help="RECIPE.yaml with 'command:' and the command's flags as keys")
    _add_trust(p)
    _add_quiet(p)
    for name, command in sub.choices.items():
        command.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
        command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


EXAMPLES = {
    "train": ["distillab train --data digits --model convnet:width=32,depth=2 --epochs 30",
              "distillab train --data mnist --model mlp:hidden=1200-1200,dropout=0.5 --augment shift:2 --seeds 0,1,2",
              "distillab train --resume runs/train-20261128-101500      # after a kill or Ctrl-C"],
    "kd": ["distillab kd --data digits --teacher runs/t/model.safetensors --student mlp:hidden=32",
           "distillab kd ... --loss kd:T=4,w=0.9 --loss ce:w=0.1 --loss rkd:distance=25,angle=50",
           "distillab kd --data mnist --chain T.safetensors mlp:hidden=300-300 mlp:hidden=30-30",
           "distillab kd --data mnist --teacher-outputs api.npz --student mlp:hidden=800-800 --loss kd:T=4",
           "distillab kd --data mnist --teacher-url http://127.0.0.1:8000 --token-file token.txt --student "
           "mlp:hidden=800-800 --concurrency 8 --query-cache mnist.queries.sqlite"],
    "inspect": ["distillab inspect runs/t/model.safetensors", "distillab inspect T.safetensors --data mnist"],
    "evaluate": ["distillab evaluate runs/kd-x/model.safetensors --data digits",
                 "distillab evaluate runs/condense-x/synset.safetensors --models convnet:width=128,depth=3 --runs 5 --dsa",
                 "distillab evaluate --resume runs/evaluate-x"],
    "condense": ["distillab condense --data digits --method dm --ipc 10",
                 "distillab condense --data mnist --method dm:iterations=1000,batch_real=256 --ipc 10",
                 "distillab condense --data mnist --method bptt:model=[lenet5:init=xavier],init_net=random --ipc 10"],
    "predict": ["distillab predict T.safetensors --data mnist --output probs --top-k 5 --out api.npz"],
    "pseudolabel": ["distillab pseudolabel --teacher T.safetensors --data npz:unlabeled.npz --transforms "
                    "shift,scale,rotate --out labels.npz",
                    "distillab train --data npz:labeled.npz --model lenet5 --pseudo labels.npz --pseudo-ratio 6:4",
                    "distillab pseudolabel --teacher T.safetensors --data folder:photos --transforms flip,scale "
                    "--threshold 0.9 --soft --out soft.npz"],
    "metadata": ["distillab metadata T.safetensors --records all --out meta-all.safetensors",
                 "distillab metadata T.safetensors --data mnist --records top --temperature 8 --out meta-top.safetensors"],
    "datafree": ["distillab datafree --teacher T.safetensors --method dafl --student lenet5-half --epochs 30 --lr 0.01",
                 "distillab datafree --teacher T.safetensors --method lopes:metadata=meta-all.safetensors "
                 "--student mlp:hidden=800-800 --samples 24000 --iterations 300",
                 "distillab datafree --teacher bn.safetensors --method deepinversion --student lenet5-half --quiet",
                 "distillab datafree --teacher T.safetensors --method noise --student lenet5-half      # the floor"],
    "audit": ["distillab audit synset.safetensors --reference trusted.safetensors      # poisoning audits",
              "distillab audit synset.safetensors --data mnist --privacy --out runs/audit-dm",
              "distillab audit synset.safetensors --audits labels:confidence=0.8 confusion:models=5 "
              "--reference T.safetensors"],
    "serve": ["distillab serve runs/teacher/model.safetensors --port 8000 --token-file token.txt",
              "distillab serve T.safetensors --output topk:3 --round 3 --noise 0.1 --rate 50 --max-batch 512"],
    "tune": ["distillab tune train --data digits --model mlp:hidden=64 --grid lr=0.01,0.05,0.1 --grid epochs=10,20",
             "distillab tune kd --data mnist --teacher T.safetensors --student mlp:hidden=800-800 --grid "
             "temperature=2,4,8 --grid lr=0.01,0.05 --budget 120 --final-seeds 0,1,2 --out runs/tune-kd"],
    "data": ["distillab data fetch mnist", "distillab data info digits"],
    "demo": ["distillab demo --quick      # 20 seconds on scikit-learn's digits",
             "distillab demo --out runs/demo      # MNIST, minutes"],
    "export": ["distillab export runs/kd-x/model.safetensors --to student.pt2      # runs in plain PyTorch",
               "distillab export runs/condense-x/synset.safetensors --to synset.npz"],
    "import-synset": ["distillab import-synset res_DM_MNIST_ConvNet_10ipc.pt --format vico --data mnist "
                      "--out dm.safetensors",
                      "distillab import-synset logged_files/CIFAR10/run/images_best.pt --format mtt --data cifar10 "
                      "--out mtt.safetensors"],
    "bench": ["distillab bench hinton-mnist --quick", "distillab bench dd-mnist --workers 2 --out runs/bench"],
    "run": ["distillab run recipe.yaml      # e.g. 'command: train', 'model: mlp:hidden=100', 'epochs: 5'"],
}


# --------------------------------------------------------------------------------------------------------------


def _resumed(a, command: str):
    from .api import resume

    return resume(a.resume, command=command, quiet=a.quiet, trust_code=getattr(a, "trust_code", False),
                  checkpoint_every=getattr(a, "checkpoint_every", None)).metrics


def _run_options(a) -> dict:
    options = {k: getattr(a, k) for k in ("checkpoint_every",) if getattr(a, k, None) is not None}
    if getattr(a, "log", None):
        options["log"] = ("jsonl", *a.log)
    return options


def _train_kwargs(a) -> dict:
    return dict(model=a.model, val_size=a.val_size, quiet=a.quiet, **_given(data=a.data, split_seed=a.split_seed),
                **_train_options(a), **_run_options(a))


def _cmd_train(a):
    from .api import repeat_over_seeds, train

    if a.resume:
        return _resumed(a, "train")
    require(a.model, "train needs --model SPEC, e.g. --model mlp:hidden=100")
    kwargs = _train_kwargs(a)
    if a.seeds:
        return repeat_over_seeds(train, a.seeds, out=a.out, overwrite=a.overwrite, command="train", **kwargs).metrics
    return train(out=a.out, overwrite=a.overwrite, **kwargs).metrics


def _parse_taps(taps: list[str]) -> dict:
    found = {"student_tap": "penultimate", "teacher_tap": "penultimate"}
    for t in taps:
        role, eq, path = t.partition("=")
        require(eq and role in ("student", "teacher") and path, f"--tap takes student=PATH or teacher=PATH, got '{t}'")
        found[f"{role}_tap"] = path
    return found


def _kd_options(a) -> dict:
    return dict(temperature=a.temperature, alpha=a.alpha, losses=a.loss,
                **_given(cache={"auto": "auto", "yes": True, "no": False}.get(a.cache_teacher)), val_size=a.val_size,
                quiet=a.quiet, trust_code=a.trust_code, **_parse_taps(a.tap),
                **_given(data=a.data, split_seed=a.split_seed),
                **_train_options(a), **_run_options(a))


def _kd_kwargs(a, service: dict) -> dict:
    teacher = None
    if a.teacher:
        teacher = a.teacher[0] if len(a.teacher) == 1 else list(a.teacher)
    return dict(teacher=teacher, student=a.student, teacher_outputs=a.teacher_outputs, **_kd_options(a),
                **({k: v for k, v in service.items() if v is not None} if a.teacher_url else {}))


def _cmd_kd(a):
    from .api import chain, distill, repeat_over_seeds

    if a.resume:
        return _resumed(a, "kd")
    if a.chain:
        require(len(a.chain) >= 2, "--chain takes a teacher file and at least one student spec: --chain "
                                   "T.safetensors mlp:hidden=300 mlp:hidden=30")
        require(not (a.teacher or a.teacher_outputs or a.student), "--chain replaces --teacher and --student")
        require(not a.seeds, "--seeds with --chain: run the chain once per seed instead")
        return chain(teacher=a.chain[0], students=a.chain[1:], from_all=a.chain_from_all, out=a.out,
                     overwrite=a.overwrite, **_kd_options(a)).metrics
    require(a.student, "kd needs --student SPEC (or --chain TEACHER SPEC1 SPEC2 ...)")
    require(a.teacher or a.teacher_outputs or a.teacher_url,
            "kd needs --teacher MODEL.safetensors, --teacher-outputs FILE.npz or --teacher-url URL")
    require(sum(map(bool, (a.teacher, a.teacher_outputs, a.teacher_url))) == 1,
            "give one of --teacher, --teacher-outputs and --teacher-url")
    service = {"teacher_url": a.teacher_url, "token_file": a.token_file, "concurrency": a.concurrency,
               "query_batch": a.query_batch, "query_cache": a.query_cache, "retries": a.retries,
               "query_rate": a.query_rate, "follow_redirects": a.follow_redirects, "cache_checks": a.cache_checks}
    require(a.teacher_url or all(v is None for v in service.values()),
            "--token-file, --concurrency, --query-batch, --query-cache, --query-rate, --retries, "
            "--follow-redirects and --cache-checks go with --teacher-url")
    kwargs = _kd_kwargs(a, service)
    if a.seeds:
        return repeat_over_seeds(distill, a.seeds, out=a.out, overwrite=a.overwrite, command="kd", **kwargs).metrics
    return distill(out=a.out, overwrite=a.overwrite, **kwargs).metrics


def _cmd_inspect(a):
    from .api import inspect_teacher

    return inspect_teacher(a.model, a.data, quiet=a.quiet, trust_code=a.trust_code)


def _cmd_evaluate(a):
    from .api import evaluate

    if a.resume:
        return _resumed(a, "evaluate")
    require(a.model, "evaluate needs a model.safetensors or synset.safetensors file")
    return evaluate(a.model[0] if len(a.model) == 1 else a.model, a.data, protocol=a.protocol,
                    **_given(device=a.device),
                    models=a.models,
                    runs=a.runs, epochs=a.epochs, dsa=a.dsa, augment=a.augment, seed=a.seed, vectorise=a.vectorise,
                    out=a.out, overwrite=a.overwrite,
                    quiet=a.quiet, trust_code=a.trust_code, log=_run_options(a).get("log")).metrics


def _cmd_condense(a):
    from .api import condense_data

    if a.resume:
        return _resumed(a, "condense")
    require(a.method and a.ipc is not None, "condense needs --method NAME and --ipc N, e.g. --method dm --ipc 10")
    shorthands = dict(model=a.model, iterations=a.iterations, init=a.init, lr_img=a.lr_img, batch_real=a.batch_real,
                      init_net=a.init_net, bptt_steps=a.bptt_steps, bptt_epochs=a.bptt_epochs, dsa=a.dsa)
    given = _given(data=a.data, labels=a.labels, seed=a.seed, split_seed=a.split_seed, device=a.device)
    if a.dry_run:
        from .api import condense_estimate

        require(not (a.out or a.resume or a.protocol), "--dry-run writes nothing; drop --out/--resume/--protocol")
        return condense_estimate(method=a.method, ipc=a.ipc, val_size=a.val_size, trust_code=a.trust_code,
                                 **given, **shorthands)
    return condense_data(method=a.method, ipc=a.ipc, val_size=a.val_size, out=a.out, overwrite=a.overwrite,
                         quiet=a.quiet, protocol=a.protocol, trust_code=a.trust_code, **given, **shorthands,
                         **_run_options(a)).metrics


def _expert_default(name: str) -> str:
    """``default X`` from cli_text when it lists the experts' defaults (distillab.trajectories.ExpertConfig)."""
    section = TEXT.get("experts") or {}
    return f"default {section[name]}" if name in section else "default: distillab.trajectories.ExpertConfig"


def _cmd_experts(a):
    from .api import experts

    if a.resume:
        return _resumed(a, "experts")
    return experts(model=a.model, experts=a.experts, epochs=a.epochs, out=a.out, overwrite=a.overwrite,
                   val_size=a.val_size, quiet=a.quiet, **_given(data=a.data, split_seed=a.split_seed),
                   **{k: getattr(a, k) for k in ("lr", "momentum", "weight_decay", "batch_size", "dsa", "seed",
                                                 "device") if getattr(a, k) is not None}, **_run_options(a)).metrics


EXAMPLES["experts"] = ["distillab experts --data mnist --model convnet:width=128,depth=3 --experts 10 --epochs 15 "
                       "--out runs/experts-mnist",
                       "distillab condense --data mnist --method mtt:experts=runs/experts-mnist --ipc 10",
                       "distillab experts --resume runs/experts-mnist      # after a kill or Ctrl-C"]


def _cmd_metadata(a):
    from .api import metadata

    return metadata(a.teacher, data=a.data, out=a.out, overwrite=a.overwrite, val_size=a.val_size, quiet=a.quiet,
                    trust_code=a.trust_code, **_given(records=a.records, temperature=a.temperature,
                                                      max_full=a.max_full, modes=a.modes)).metrics


def _cmd_datafree(a):
    from .api import distill_datafree

    if a.resume:
        return _resumed(a, "datafree")
    require(a.teacher and a.method and a.student, "datafree needs --teacher MODEL.safetensors, --method NAME and "
                                                  "--student SPEC, e.g. --method dafl --student lenet5-half")
    return distill_datafree(a.teacher, method=a.method, student=a.student, data=a.data, losses=a.loss,
                    temperature=a.temperature, samples=a.samples, iterations=a.iterations, out=a.out,
                    overwrite=a.overwrite, quiet=a.quiet, trust_code=a.trust_code,
                    **{k: v for k, v in _train_options(a).items() if k not in ("pseudo", "pseudo_ratio")},
                    **_run_options(a)).metrics


def _cmd_audit(a):
    from .api import audit

    return audit(a.synset, reference=a.reference, data=a.data, audits=a.audits, privacy=a.privacy, out=a.out,
                 overwrite=a.overwrite, quiet=a.quiet, trust_code=a.trust_code,
                 **_given(fpr=a.fpr, seed=a.seed, device=a.device)).metrics


def _cmd_serve(a):
    from .api import serve

    serve(a.model, host=a.host, port=a.port, output=a.output, token_file=a.token_file, max_batch=a.max_batch,
          rate=a.rate, noise=a.noise, round=a.round, seed=a.seed, request_timeout=a.request_timeout,
          max_connections=a.max_connections, block=True, quiet=a.quiet, trust_code=a.trust_code,
          **_given(device=a.device))
    return None


# flags whose API keyword has another name
GRID_KWARGS = {"loss": "losses", "cache_teacher": "cache"}


def _cmd_tune(a):
    from .api import method_grid_specs, method_options_of, tune

    parser = build_parser()
    command = parser.commands[a.tuned]
    inner = _parse(parser, [a.tuned, *a.inner])
    require(not getattr(inner, "seeds", None) and (a.tuned != "condense" or not inner.seed),
            "tune runs its final seeds itself (--final-seeds); drop --seeds / --seed")
    scoring = {k: getattr(a, k) for k in ("protocol", "eval_models", "eval_runs", "eval_epochs", "eval_dsa",
                                          "eval_augment", "final_runs", "eval_as_made") if getattr(a, k) is not None}
    require(a.tuned == "condense" or not scoring,
            "--protocol, --eval-* and --final-runs say how tune condense scores a set; tune train and kd score by validation "
            "accuracy: drop them")
    require(not getattr(inner, "resume", None) and not getattr(inner, "chain", None)
            and not getattr(inner, "dry_run", None), f"tune runs plain {a.tuned} runs: drop --resume, --chain, --dry-run")
    require(a.grid, "tune needs at least one --grid FLAG=V1,V2, e.g. --grid lr=0.01,0.05")
    if a.tuned == "kd":
        require(inner.student and (inner.teacher or inner.teacher_outputs or inner.teacher_url),
                "tune kd needs the kd flags: --teacher (or --teacher-outputs, --teacher-url) and --student")
        base = _kd_kwargs(inner, {"teacher_url": inner.teacher_url, "token_file": inner.token_file,
                                  "concurrency": inner.concurrency, "query_batch": inner.query_batch,
                                  "query_cache": inner.query_cache, "retries": inner.retries,
                                  "query_rate": inner.query_rate,
                                  "follow_redirects": inner.follow_redirects,
                                  "cache_checks": inner.cache_checks})
    elif a.tuned == "condense":
        require(inner.method and inner.ipc is not None, "tune condense needs --method NAME and --ipc N")
        protocol = {k[5:]: v for k, v in scoring.items() if k.startswith("eval_") and k != "eval_as_made"}
        if "models" in protocol:
            protocol["models"] = tuple(protocol["models"])
        protocol["name"] = a.protocol
        base = {"method": inner.method, "ipc": inner.ipc, "val_size": inner.val_size,
                **_given(data=inner.data, labels=inner.labels, split_seed=inner.split_seed, device=inner.device),
                "trust_code": inner.trust_code, "protocol": protocol, "final_runs": a.final_runs,
                "as_made": bool(a.eval_as_made),
                **{k: getattr(inner, k) for k in ("model", "iterations", "init", "lr_img", "batch_real", "init_net",
                                                   "bptt_steps", "bptt_epochs", "dsa") if getattr(inner, k) is not None}}
    else:
        require(inner.model, "tune train needs --model SPEC")
        base = _train_kwargs(inner)
    actions = {o: act for act in command._actions for o in act.option_strings}
    method_options = set(method_options_of(inner.method, trust_code=inner.trust_code) if a.tuned == "condense" else ())
    grid, method_grid = {}, {}
    for item in a.grid:
        flag, eq, values = item.partition("=")
        flag = "--" + flag.strip().lstrip("-").replace("_", "-")
        require(eq and values, f"--grid takes FLAG=V1,V2,..., got '{item}'")
        action = actions.get(flag)
        option = flag[2:].replace("-", "_")
        if action is None and option in method_options:  # an option of the method without a flag of its own
            require(option not in method_grid, f"--grid {option} is given twice; give it once")
            method_grid[option] = values.split(",")
            continue
        require(action is not None and action.dest not in ("out", "overwrite", "seed", "seeds", "resume", "quiet"),
                f"--grid {flag[2:]}: {a.tuned} has no such flag to tune (see 'distillab {a.tuned} --help')"
                + (f" and --method {inner.method} no such option" if a.tuned == "condense" else ""))
        typed = []
        for text in values.split(","):
            try:
                value = action.type(text) if action.type else text
            except (ValueError, argparse.ArgumentTypeError):
                raise DistillabError(f"--grid {flag[2:]}: '{text}' is not a valid value") from None
            if action.choices and value not in action.choices:
                raise DistillabError(f"--grid {flag[2:]}: '{text}' is not one of {', '.join(map(str, action.choices))}")
            typed.append([value] if isinstance(action, argparse._AppendAction) else value)
        key = GRID_KWARGS.get(action.dest, action.dest)
        require(base.get(key) in (None, command.get_default(action.dest)) and key not in grid,
                f"--grid {flag[2:]}: {flag} is also given as a fixed flag (or twice in the grid); give it in one place")
        base.pop(key, None)  # the grid sets it
        grid[key] = typed
    if method_grid:
        grid = {"method": method_grid_specs(inner.method, method_grid, trust_code=inner.trust_code), **grid}
        base.pop("method")
    base.pop("quiet", None)
    return tune(a.tuned, grid, **_given(seeds=a.final_seeds), budget=a.budget, out=a.out, overwrite=a.overwrite,
                quiet=a.quiet, **base).metrics


def _cmd_predict(a):
    from .api import predict

    return predict(a.model, a.data, top_k=a.top_k, out=a.out, overwrite=a.overwrite, quiet=a.quiet,
                   trust_code=a.trust_code, **_given(split=a.split, output=a.output, device=a.device))


def _cmd_pseudolabel(a):
    from .api import pseudolabel

    require(a.teacher and a.data, "pseudolabel needs --teacher MODEL.safetensors and --data UNLABELED (npz:PATH, "
                                  "folder:PATH or a dataset)")
    return pseudolabel(a.teacher, a.data, transforms=a.transforms, threshold=a.threshold, soft=a.soft, out=a.out,
                       overwrite=a.overwrite, **_given(device=a.device), quiet=a.quiet, trust_code=a.trust_code)


def _cmd_data(a):
    from .api import data_fetch, data_info

    return data_fetch(a.name) if a.action == "fetch" else data_info(a.name)


def _cmd_demo(a):
    from .demo import demo

    return demo(quick=a.quick, out=a.out, overwrite=a.overwrite, quiet=a.quiet).metrics


def _cmd_export(a):
    from .api import export

    return export(a.synset, a.to, overwrite=a.overwrite, trust_code=a.trust_code)


def _cmd_import_synset(a):
    from .api import import_synset

    return import_synset(a.file, format=a.format, data=a.data, out=a.out, overwrite=a.overwrite,
                         experiment=a.experiment, labels=a.labels, quiet=a.quiet)


def _cmd_bench(a):
    from .bench import run_benchmark

    require(not (a.resume and a.out and a.resume != a.out), "give --resume OUT or --out OUT, not both")
    return run_benchmark(a.name, quick=a.quick, out=a.resume or a.out, quiet=a.quiet, cells=tuple(a.cells),
                         protocol=a.protocol, **_given(workers=a.workers))


RECIPE_MAX_BYTES = 256 * 1024


def _recipe_loader():
    import yaml

    class RecipeLoader(yaml.SafeLoader):
        """SafeLoader without anchors and aliases: a few hundred bytes of nested aliases expand to gigabytes."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
                raise yaml.YAMLError("anchors and aliases (& and *) are not allowed in a recipe")
            return super().compose_node(parent, index)

    return RecipeLoader


RECIPE_MAX_DEPTH = 32  # a recipe is flags and their values: a few levels of lists and mappings at most


def _check_recipe_depth(text: str, path: Path) -> None:
    """Refuse a recipe nested deeper than RECIPE_MAX_DEPTH before it is built into objects (which recurses, so
    thousands of '[' would end in a RecursionError): the parser's events come one by one, without recursion."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            require(depth <= RECIPE_MAX_DEPTH, f"{path} nests lists or mappings more than {RECIPE_MAX_DEPTH} deep; "
                                               "a recipe is flags and their values")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def recipe_argv(recipe_path: str, parser: Parser, trust_code: bool = False) -> list[str]:
    """Turn a YAML recipe (keys = the command's flags) into an argv, refusing keys the command lacks."""
    import yaml

    path = Path(recipe_path)
    require(path.is_file(), f"no such recipe file: {path}")
    require(path.stat().st_size <= RECIPE_MAX_BYTES, f"{path} is larger than a recipe can be "
                                                      f"({RECIPE_MAX_BYTES // 1024} KiB)")
    try:
        text = path.read_bytes().decode("utf-8")
        _check_recipe_depth(text, path)
        recipe = yaml.load(text, Loader=_recipe_loader())  # a safe loader: a recipe can never execute code
    except UnicodeDecodeError:
        raise DistillabError(f"{path} is not a text file; a recipe is YAML, like 'command: train'") from None
    except RecursionError:  # not reached past the depth check; kept so no nesting can end in a traceback
        raise DistillabError(f"{path} nests too deeply to be a recipe") from None
    except yaml.YAMLError as e:
        raise DistillabError(f"{path} is not valid YAML ({' '.join(str(e).split())[:150]})") from None
    require(isinstance(recipe, dict), f"{path} must be a mapping of flags, like 'command: train' and 'epochs: 5'")
    from .api import code_named_in

    named = code_named_in(recipe)
    require(trust_code or not named, f"{path} names code to import ({named[0] if named else ''}); a recipe file makes "
                                     "distillab import code only with 'distillab run RECIPE --trust-code'")
    command = recipe.pop("command", None)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    require(isinstance(command, str) and command in subparsers.choices and command != "run",
            f"{path}: 'command' must be one of {', '.join(c for c in subparsers.choices if c != 'run')}")
    sub = subparsers.choices[command]
    options = {o: act for act in sub._actions for o in act.option_strings}
    positionals = [act for act in sub._actions if not act.option_strings]
    argv = [command]
    for act in positionals:
        if act.dest in recipe:
            value = recipe.pop(act.dest)
            argv += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    for key, value in recipe.items():
        flag = "--" + str(key).replace("_", "-")
        act = options.get(flag)
        require(act is not None and flag not in ("--help",),
                f"{path}: unknown recipe key '{key}' for '{command}'; known keys: "
                f"{', '.join(sorted(o[2:] for o in options if o.startswith('--') and o != '--help'))}")
        if isinstance(act, argparse._StoreTrueAction):
            require(isinstance(value, bool), f"{path}: '{key}' takes true or false")
            if value:
                argv.append(flag)
        elif isinstance(act, argparse._AppendAction) or act.nargs in ("+", "*"):
            values = value if isinstance(value, list) else [value]
            if isinstance(act, argparse._AppendAction):
                for v in values:
                    argv += [flag, str(v)]
            else:
                argv += [flag, *map(str, values)]
        else:
            if isinstance(value, list):
                value = ",".join(map(str, value))
            argv += [flag, str(value)]
    return argv


COMMANDS = {"train": _cmd_train, "kd": _cmd_kd, "inspect": _cmd_inspect, "evaluate": _cmd_evaluate,
            "condense": _cmd_condense, "predict": _cmd_predict, "data": _cmd_data, "demo": _cmd_demo,
            "export": _cmd_export, "import-synset": _cmd_import_synset, "bench": _cmd_bench,
            "experts": _cmd_experts, "pseudolabel": _cmd_pseudolabel, "metadata": _cmd_metadata,
            "datafree": _cmd_datafree, "audit": _cmd_audit, "serve": _cmd_serve, "tune": _cmd_tune}


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"distillab: warning: {message}", file=sys.stderr)


# Flags that may come with --resume: how to run, not what to compute.
WITH_RESUME = {"command", "resume", "quiet", "trust_code", "checkpoint_every", "json", "log_level"}

SUMMARY_SKIP = ("seconds", "peak_rss_mb", "sha256", "stages", "runs", "recipe", "machine")


def summary(result: dict) -> str:
    """A few lines a person reads: the headline figures of a result (metrics.json, or --json, has them all)."""
    lines = []
    for key, value in result.items():
        if (any(key.endswith(s) for s in SUMMARY_SKIP) and not key.startswith("estimated_")) or key == "markdown":
            continue
        if isinstance(value, dict) and {"mean", "std"} <= set(value):
            lines.append(f"{key}: {_number(value['mean'])} +- {_number(value['std'])}")
        elif isinstance(value, dict) and all(isinstance(v, dict) and "mean" in v for v in value.values()) and value:
            lines += [f"{key} {k}: {_number(v['mean'])}" + (f" +- {_number(v['std'])}" if "std" in v else "")
                      for k, v in value.items()]
        elif isinstance(value, (str, int, float, bool)) or value is None:
            lines.append(f"{key}: {_number(value)}")
    return "\n".join(lines)


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _check_resume_alone(parser: Parser, args) -> None:
    if not getattr(args, "resume", None) or args.command == "bench":
        return
    defaults = {act.dest: act.default for act in parser.commands[args.command]._actions}
    given = sorted(k for k, v in vars(args).items() if k in defaults and k not in WITH_RESUME and v != defaults[k])
    require(not given, "--resume continues a run with the options it was started with; drop "
                       + ", ".join("--" + k.replace("_", "-") for k in given))


def _parse(parser: Parser, argv):
    """The command line as arguments; unknown flags point to the command's own --help. Loads no torch: --help and
    --version answer from here."""
    args, extra = parser.parse_known_args(argv)
    command = getattr(args, "command", None)
    if command == "tune":  # the flags tune does not know are the tuned command's own
        args.inner = extra
        extra = []
    require(not extra, f"unrecognized arguments: {' '.join(extra)} (see 'distillab {command} --help')")
    if command == "run":
        style = (["--json"] if args.json else []) + (["--quiet"] if args.quiet else [])
        args = _parse(parser, recipe_argv(args.recipe, parser, args.trust_code) + style)
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    warnings.showwarning = _show_warning
    try:
        args = _parse(parser, argv)
        _check_resume_alone(parser, args)
    except DistillabError as e:
        print("distillab: error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    from .api import (Interrupted, distributed_setup, distributed_teardown, is_main_process, log_to_stderr,
                      signals_stop_loops, stop_signal, to_jsonable, tune_allocator)

    tune_allocator()
    log_to_stderr(*[level for level in [getattr(args, "log_level", None)] if level])  # its default: info
    signals_stop_loops()
    try:
        distributed_setup(getattr(args, "device", None) or "cpu")
        result = COMMANDS[args.command](args)
        if result is not None and is_main_process():
            print(json.dumps(to_jsonable(result), indent=2) if getattr(args, "json", False) else summary(result))
        distributed_teardown()
        return 0
    except DistillabError as e:
        print("distillab: error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        out = getattr(e, "resume_out", None)
        how = f"; resume with: distillab {args.command} --resume {out}" if out else ""
        print(f"distillab: stopped{how}", file=sys.stderr)
        return 143 if stop_signal() == signal.SIGTERM else 130
    except OSError as e:
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"distillab: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line for the user; DISTILLAB_DEBUG=1 shows the traceback
        if os.environ.get("DISTILLAB_DEBUG"):
            raise
        print(f"distillab: error: internal error ({type(e).__name__}: {' '.join(str(e).split())[:200]}); please "
              "report it (DISTILLAB_DEBUG=1 shows where)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
