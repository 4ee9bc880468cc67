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

from . import distributed
from .checkpoint import Interrupted, signals_stop_loops, stop_signal
from .condense import register_method
from .evaluation import EvalProtocol, matrix_markdown
from .files import to_jsonable
from .kd import Hinton, register_loss
from .protocols import Protocol, register_protocol
from .pseudolabel import Mixing, PseudoLabelConfig
from .registry import IMPORT_PREFIX
from .reporting import log_to_stderr
from .runs.auditing import audit
from .runs.condensing import (condense_data, condense_estimate, condense_scored, experts, labels_help, method_from,
                              method_grid_specs, method_options_of)
from .runs.datafree import datafree_method, distill_datafree, metadata
from .runs.distilling import chain, distill, inspect_teacher, loss_terms
from .runs.evaluating import evaluate, evaluate_model, evaluate_synset, protocol_from, synset_labels, synset_paths
from .runs.files import (data_export, data_fetch, data_info, export, export_synset, import_synset, load, predict,
                         pseudolabel, serve)
from .runs.resuming import code_named_in, resume
from .runs.run import Result
from .runs.training import load_splits, repeat_over_seeds, train
from .runs.tuning import tune
from .speed import tune_allocator
from .training import TrainConfig
from .trajectories import ExpertConfig

__all__ = ["Result", "train", "distill", "chain", "repeat_over_seeds", "evaluate", "evaluate_model", "evaluate_synset",
           "predict", "pseudolabel", "inspect_teacher", "condense_data", "experts", "export", "export_synset",
           "import_synset", "load", "resume", "data_fetch", "data_info", "data_export", "metadata", "distill_datafree", "audit",
           "serve", "tune", "register_loss", "register_method", "register_protocol",
           # what the CLI, its --help and the benchmarks use besides the commands: options dataclasses, specs read
           # with their shorthands, checks, the reporter's and signals' set-up
           "TrainConfig", "ExpertConfig", "Protocol", "EvalProtocol", "Hinton", "PseudoLabelConfig", "Mixing",
           "IMPORT_PREFIX", "method_options_of", "method_grid_specs", "method_from", "datafree_method",
           "protocol_from", "loss_terms", "labels_help", "condense_estimate", "condense_scored", "load_splits",
           "synset_paths", "synset_labels", "matrix_markdown", "code_named_in", "to_jsonable", "log_to_stderr",
           "signals_stop_loops", "stop_signal", "Interrupted", "tune_allocator", "distributed_setup",
           "distributed_teardown", "is_main_process"]

distributed_setup, distributed_teardown, is_main_process = distributed.setup, distributed.teardown, distributed.is_main
