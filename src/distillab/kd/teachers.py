"""Teachers: what a teacher says about a batch, and the kinds of teacher a student can learn from.

A live model (frozen, eval mode, no_grad: enforced in ``ModelTeacher`` alone), a table of outputs looked up by
example position (a cache, or a black box's answers from ``distillab predict``), an ensemble, or any function
x -> probabilities. ``resolve_teacher`` turns what the user gave into one of these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import denormalise, read_npz, to_natural
from ..errors import DistillabError, require
from ..models import Renormalise, check_compatible, load_model
from ..reporting import SILENT, Reporter
from .functional import TINY
from .taps import FeatureTaps


@dataclass
class TeacherBatch:
    """What a teacher says about a batch: logits (or log-probabilities, equal up to a per-example constant),
    or, for a top-k black box, the indices and log-probabilities of its k most likely classes."""

    logits: torch.Tensor | None = None
    topk_index: torch.Tensor | None = None
    topk_logprob: torch.Tensor | None = None
    features: dict = field(default_factory=dict)
    kind: str = "logits"  # logits | logprobs | topk


class ModelTeacher:
    """A live teacher model: frozen, eval mode, no_grad. The one place where that is enforced."""

    kind = "logits"
    gives_features = True

    def __init__(self, model: nn.Module, tap_paths: list[str] = (), device: str = "cpu"):
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.taps = FeatureTaps(self.model, list(tap_paths), "teacher") if tap_paths else None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> TeacherBatch:
        self.model.eval()  # even if someone called .train() on it
        logits = self.model(x).float()
        feats = {k: v.detach().float() for k, v in self.taps.features.items()} if self.taps else {}
        return TeacherBatch(logits=logits, features=feats, kind="logits")


class TableTeacher:
    """Teacher outputs looked up by training-example position: a cache or a black box's answers.

    ``rows`` maps positions in the student's training split to rows of the table.
    """

    def __init__(self, rows: torch.Tensor, logits=None, topk_index=None, topk_logprob=None, features=None,
                 kind="logits", gives_features=False):
        self.rows, self.kind, self.gives_features = rows, kind, gives_features
        self.logits, self.topk_index, self.topk_logprob = logits, topk_index, topk_logprob
        self.feature_table = features or {}

    def __call__(self, x, idx) -> TeacherBatch:
        require(idx is not None, "a cached or black-box teacher needs the positions of the batch's examples")
        r = self.rows[idx.cpu()]
        pick = (lambda t: None if t is None else t[r].to(x.device))
        return TeacherBatch(logits=pick(self.logits), topk_index=pick(self.topk_index),
                            topk_logprob=pick(self.topk_logprob),
                            features={k: v[r].to(x.device) for k, v in self.feature_table.items()}, kind=self.kind)


class EnsembleTeacher:
    """Average of several teachers' probabilities; gives log of the mean probability (a valid logit vector)."""

    kind = "logprobs"
    gives_features = False

    def __init__(self, teachers: list):
        require(len(teachers) >= 1, "an ensemble needs at least one teacher")
        self.teachers = teachers

    def __call__(self, x, idx=None) -> TeacherBatch:
        outs = [t(x, idx) for t in self.teachers]
        require(all(o.logits is not None for o in outs), "ensembles need teachers with full outputs, not top-k")
        probs = torch.stack([F.softmax(o.logits, 1) for o in outs]).mean(0)
        feats = outs[0].features
        return TeacherBatch(logits=probs.clamp_min(TINY).log(), features=feats, kind="logprobs")


# What a function teacher is given: the data's raw values in its own shape (a model fit outside distillab, on the
# data as it is), or the inputs as the student sees them (normalised, (B, C, H, W)).
TEACHER_INPUTS = ("raw", "normalised")


class CallableTeacher:
    """Any Python function x -> probabilities (an API, a scikit-learn model) as a black-box teacher. ``inputs``:
    ``raw`` gives it the data's own values (pixels in [0, 1]) in the data's own shape -- images (B, C, H, W), 1-D
    signals (B, L) or (B, C, L), as the data came (``layout``), on the CPU; ``normalised`` what the student sees,
    (B, C, H, W), on the training device."""

    kind = "logprobs"
    gives_features = False

    def __init__(self, fn, inputs: str = "raw", mean=(0.0,), std=(1.0,), layout: str | None = None):
        require(inputs in TEACHER_INPUTS, f"teacher_inputs must be one of {', '.join(TEACHER_INPUTS)}, got {inputs!r}")
        self.fn, self.inputs, self.mean, self.std, self.layout = fn, inputs, mean, std, layout

    def given(self, x: torch.Tensor) -> torch.Tensor:
        """The function's input for the student's batch ``x``."""
        if self.inputs == "normalised":
            return x
        # on the CPU, as the data is (a model fit outside distillab takes numpy); 1-D: (B, L) or (B, C, L)
        return to_natural(denormalise(x, self.mean, self.std), self.layout).cpu()

    @torch.no_grad()
    def __call__(self, x, idx=None) -> TeacherBatch:
        probs = torch.as_tensor(self.fn(self.given(x)), dtype=torch.float32, device=x.device)
        require(probs.ndim == 2 and len(probs) == len(x),
                f"the teacher function gave an array of shape {tuple(probs.shape)} for {len(x)} inputs; it must give "
                "probabilities, one row per input")
        return TeacherBatch(logits=probs.clamp_min(TINY).log(), kind="logprobs")


class ServiceTeacher:
    """A teacher behind an HTTP service (``distillab serve``): its probabilities (log-probs), top-k or labels (as
    one-hot log-probs), for inputs normalised as the student sees them, re-normalised as the service asks;
    answers come from the local cache when it has them (``service.ServiceAnswers``)."""

    gives_features = False

    def __init__(self, answers, mean_from, std_from):
        from ..data import denormalise, normalise

        self.answers = answers
        info = answers.client.info
        norm = info["normalisation"]
        same = list(mean_from) == list(norm["mean"]) and list(std_from) == list(norm["std"])
        self.to_service = (lambda x: x) if same else (
            lambda x: normalise(denormalise(x, mean_from, std_from), norm["mean"], norm["std"]))
        self.output = info["output"]
        self.num_classes = len(info["classes"])
        self.kind = "topk" if self.output.startswith("topk:") else "logprobs"

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, idx=None, on_rows=None) -> TeacherBatch:
        rows = torch.from_numpy(self.answers(self.to_service(x.detach().cpu()), on_rows)).float().to(x.device)
        if self.output == "probs":
            return TeacherBatch(logits=rows.clamp_min(TINY).log(), kind="logprobs")
        if self.output == "label":
            onehot = F.one_hot(rows[:, 0].long(), self.num_classes).float()
            return TeacherBatch(logits=onehot.clamp_min(TINY).log(), kind="logprobs")
        k = rows.shape[1] // 2
        return TeacherBatch(topk_index=rows[:, :k].long(), topk_logprob=rows[:, k:].clamp_min(TINY).log(), kind="topk")


def table_of_service(teacher: ServiceTeacher, x: torch.Tensor, reporter: Reporter = SILENT,
                     batch_size: int = 8192) -> TableTeacher:
    """The service's answers for every (non-augmented) training input, asked once (the cache first); lookups then
    cost nothing per epoch."""
    bar = reporter.bar(len(x), "teacher service", unit="rows")
    parts = [teacher(x[i:i + batch_size], on_rows=bar.update) for i in range(0, len(x), batch_size)]
    bar.close()
    rows = torch.arange(len(x))
    if teacher.kind == "topk":
        return TableTeacher(rows, topk_index=torch.cat([p.topk_index for p in parts]),
                            topk_logprob=torch.cat([p.topk_logprob for p in parts]), kind="topk")
    return TableTeacher(rows, logits=torch.cat([p.logits for p in parts]), kind="logprobs")


@torch.no_grad()
def cache_teacher(teacher: ModelTeacher, x: torch.Tensor, batch_size: int = 1000) -> TableTeacher:
    """Run the teacher once over the (non-augmented) training inputs; lookups then cost nothing per epoch."""
    logits, feats = [], {}
    for i in range(0, len(x), batch_size):
        out = teacher(x[i:i + batch_size])
        logits.append(out.logits.cpu())
        for k, v in out.features.items():
            feats.setdefault(k, []).append(v.cpu())
    return TableTeacher(torch.arange(len(x)), logits=torch.cat(logits),
                        features={k: torch.cat(v) for k, v in feats.items()}, kind="logits", gives_features=True)


def load_teacher_model(path, splits, what="teacher", trust_code: bool = False) -> tuple[nn.Module, dict]:
    """A teacher model file, checked against the data, seeing inputs normalised its own way. Where its
    normalisation differs from the data's, a forward pre-hook maps the inputs (``Renormalise``, kept as the
    submodule ``input_renormalise`` so it moves with the model): the model's own module paths stay as they are, so
    feature taps name its layers the same way whatever data it teaches on."""
    model, meta = load_model(path, trust_code=trust_code)
    check_compatible(meta, splits.classes, splits.input_shape, what, path, getattr(splits, "spec", None))
    norm = meta["normalisation"]
    if list(norm["mean"]) != list(splits.mean) or list(norm["std"]) != list(splits.std):
        renormalise = Renormalise(splits.mean, splits.std, norm["mean"], norm["std"])
        if isinstance(model, nn.Sequential) or hasattr(model, "input_renormalise"):
            # a Sequential runs every child it holds (a hook's module added to it would run last): wrap instead
            model = nn.Sequential(renormalise, model)
        else:
            model.add_module("input_renormalise", renormalise)
            model.register_forward_pre_hook(lambda module, args: (module.input_renormalise(args[0]), *args[1:]))
    return model, meta


def _numbers(arrays: dict, key: str, path, integer: bool = False) -> np.ndarray:
    value = arrays[key]
    kind = np.integer if integer else np.number
    require(np.issubdtype(value.dtype, kind) and not np.issubdtype(value.dtype, np.complexfloating),
            f"{path}: '{key}' must hold {'whole numbers' if integer else 'numbers'}, got {value.dtype}")
    return value


def load_teacher_outputs(path, splits, reporter: Reporter = SILENT, accept_unchecked: bool = False) -> TableTeacher:
    """A black box's answers (``distillab predict``), one row per example of the dataset's training data.

    Rows are matched to the training examples by ``index`` (dataset positions) or, without it, by order. A file that
    records the dataset's labels (``predict`` does) must agree with them row by row; one that does not is checked
    for agreeing with the labels better than chance, which a table in another order would not: at chance it is
    refused, unless ``accept_unchecked`` (then it is a warning).
    """
    path = Path(path)
    arrays = read_npz(path)
    n_total = len(splits.train) + splits.val_size  # the dataset's training examples, validation split included
    k = splits.num_classes
    if "split" in arrays:
        require(arrays["split"].ndim == 0 and str(arrays["split"]) == "train",
                f"{path} holds outputs for another split than the training data, which a student learns from "
                "(predict with --split train)")
    if "index" in arrays:  # rows may be a subset or reordered: map dataset positions to rows
        index = _numbers(arrays, "index", path, integer=True)
        require(index.ndim == 1, f"{path}: 'index' must be a 1-D array of dataset positions")
        require(len(index) == 0 or (int(index.min()) >= 0 and int(index.max()) < n_total),
                f"{path}: 'index' holds positions outside 0..{n_total - 1}, this dataset's training data; was it "
                f"written for other data?")
        require(len(np.unique(index)) == len(index), f"{path}: 'index' names some positions twice")
        lookup = torch.full((n_total,), -1, dtype=torch.int64)
        lookup[torch.from_numpy(index.astype(np.int64))] = torch.arange(len(index))
        rows = lookup[splits.train_index]
        require(bool((rows >= 0).all()), f"{path} lacks outputs for some training examples; predict with --split train")
        n_rows = len(index)
    else:
        rows, n_rows = splits.train_index, n_total
    if "labels" in arrays:
        labels = _numbers(arrays, "labels", path, integer=True)
        require(labels.shape == (n_rows,), f"{path}: 'labels' must hold one label per row ({n_rows})")
        disagree = int((torch.from_numpy(labels.astype(np.int64))[rows] != splits.train.y).sum())
        require(disagree == 0, f"{path}'s rows are not this dataset's training examples in its order: its labels "
                               f"disagree with the data's on {disagree} of {len(rows)} rows; write it with "
                               f"'distillab predict' for {splits.spec}")
    if "logits" in arrays or "probs" in arrays:
        key = "logits" if "logits" in arrays else "probs"
        values = torch.from_numpy(_numbers(arrays, key, path).astype(np.float32))
        require(values.ndim == 2 and values.shape == (n_rows, k),
                f"{path}: '{key}' has shape {tuple(values.shape)}, expected ({n_rows}, {k}) for {splits.spec}")
        require(bool(torch.isfinite(values).all()), f"{path}: '{key}' holds NaN or infinite values")
        if key == "probs":
            require(bool(((values >= 0) & (values <= 1)).all()) and bool(((values.sum(1) - 1).abs() < 1e-3).all()),
                    f"{path}: each row of 'probs' must be probabilities summing to 1; scores are 'logits'")
            teacher = TableTeacher(rows, logits=values.clamp_min(TINY).log(), kind="logprobs")
        else:
            teacher = TableTeacher(rows, logits=values, kind="logits")
        guesses = values[rows].argmax(1)
    elif "topk_index" in arrays and "topk_prob" in arrays:
        index = torch.from_numpy(_numbers(arrays, "topk_index", path, integer=True).astype(np.int64))
        probs = torch.from_numpy(_numbers(arrays, "topk_prob", path).astype(np.float32))
        require(index.shape == probs.shape and index.ndim == 2 and len(index) == n_rows and 1 <= index.shape[1] < k,
                f"{path}: topk_index and topk_prob must both be ({n_rows}, k) with k < {k}")
        require(bool((index >= 0).all() and (index < k).all()), f"{path}: topk_index outside 0..{k - 1}")
        require(bool(torch.isfinite(probs).all() and (probs >= 0).all() and (probs.sum(1) <= 1 + 1e-3).all()),
                f"{path}: topk_prob must be probabilities (>= 0, summing to at most 1)")
        teacher = TableTeacher(rows, topk_index=index, topk_logprob=probs.clamp_min(TINY).log(), kind="topk")
        guesses = index[rows, probs[rows].argmax(1)]
    else:
        raise DistillabError(f"{path} holds none of 'logits', 'probs' or 'topk_index'+'topk_prob'; "
                             "write it with 'distillab predict'")
    if "labels" not in arrays and len(rows) >= 10 * k:
        agree = float((guesses == splits.train.y).float().mean())
        if agree < 1.5 / k:
            problem = (f"{path}: the teacher's answers agree with the labels on {100 * agree:.1f}% of the training "
                       f"examples, about chance for {k} classes: are its rows in the order of {splits.spec}'s "
                       "training data? ('distillab data export' writes them in order, with 'index' and 'labels' for "
                       "the answers to keep)")
            require(accept_unchecked, f"{problem}; --accept-unchecked-table distills from it anyway")
            reporter.warn(problem)
    return teacher


def resolve_teacher(teacher, teacher_outputs, splits, cfg, tap_paths, cache, trust_code: bool = False,
                    reporter: Reporter = SILENT, extra_x: torch.Tensor | None = None,
                    accept_unchecked_table: bool = False, teacher_inputs: str = "raw"):
    """Resolve what the user gave as a teacher; returns (teacher, metadata of the first model or None, how).

    teacher: a model file, a list of them (an ensemble), an nn.Module, or a function x -> probabilities;
    teacher_outputs: a black box's answers (.npz). ``cache`` "auto" caches a model's outputs without augmentation.
    extra_x: inputs that follow the training split in the batches' positions (pseudo-labelled rows); a cache
    covers them too, a black box's table cannot.
    """
    require((teacher is None) != (teacher_outputs is None), "give either a teacher (model file) or --teacher-outputs")
    if teacher_outputs is not None:
        require(extra_x is None, "--teacher-outputs with --pseudo: the black box's table has rows only for the "
                                 "training data, none for the pseudo-labelled images; give --teacher MODEL instead")
        return load_teacher_outputs(teacher_outputs, splits, reporter, accept_unchecked_table), None, "outputs"
    if callable(teacher) and not isinstance(teacher, nn.Module):
        return (CallableTeacher(teacher, teacher_inputs, splits.mean, splits.std, getattr(splits, "layout", None)),
                None, f"callable ({teacher_inputs})")
    paths = teacher if isinstance(teacher, (list, tuple)) else [teacher]
    models, metas = [], []
    for p in paths:
        if isinstance(p, nn.Module):
            models.append(p)
            metas.append({})
        else:
            m, meta = load_teacher_model(p, splits, trust_code=trust_code)
            models.append(m)
            metas.append(meta)
    teachers = [ModelTeacher(m, tap_paths, cfg.device) for m in models]
    if cache == "auto":
        cache = cfg.augment in (None, "", "none")
    if cache:
        require(cfg.augment in (None, "", "none"), "cannot cache teacher outputs with --augment: every epoch sees "
                "new inputs, so the cache would be stale; drop --cache-teacher or the augmentation")
        x = splits.train.x if extra_x is None else torch.cat([splits.train.x, extra_x])
        cached = [cache_teacher(t, x.to(cfg.device)) for t in teachers]
        for t in cached:  # the cache is in training-split order (then the extra rows)
            t.rows = torch.arange(len(x))
        how = "cached"
        teachers = cached
    else:
        how = "live"
    if len(teachers) == 1:
        return teachers[0], metas[0], how
    return EnsembleTeacher(teachers), metas[0], f"ensemble of {len(teachers)} ({how})"
