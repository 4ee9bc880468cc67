"""The training loop shared by every command that trains a network.

``fit`` trains a model on in-memory tensors with an *objective*: a callable that returns a dict of named, already
weighted loss terms (``{"ce": ..., "kd": ...}``); their sum is minimised and each is logged per epoch.
"""

from __future__ import annotations

import inspect
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed, seeds
from .augmentation import Augmenter
from .checkpoint import Checkpoints, loop_running, pack, restore, stop_if_requested, unpack
from .compiling import CompileChoice, Compiled, check_mode, choose
from .data import ImageSet, PseudoRows, Splits
from .errors import DistillabError, require
from .models import set_dropout_generator
from .reporting import SILENT, Reporter

Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], dict]
PRECISIONS = ("fp32", "bf16", "auto")


MAX_EPOCHS = 100_000  # beyond this a run is a typo (10^9), not a schedule: refused before it starts


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"          # sgd | adam
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"        # cosine | step | constant
    lr_steps: list[int] = field(default_factory=list)  # step: epochs (1-based) where lr x0.1; default E//2+1
    label_smoothing: float = 0.0
    augment: str = "none"
    max_norm: float = 0.0           # Hinton's weight constraint: cap each unit's incoming weight norm (0 = off)
    precision: str = "fp32"         # fp32 | bf16 (autocast) | auto (time both on this machine, keep the faster)
    compile: str = "off"            # off | on | auto: the model's forward by torch.compile (distillab.compiling)
    seed: int = 0
    select: str = "last"            # last | best-val (never the test set)
    device: str = "cpu"

    def check(self) -> "TrainConfig":
        require(1 <= self.epochs <= MAX_EPOCHS, f"--epochs must be between 1 and {MAX_EPOCHS:,}, got {self.epochs}")
        require(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        require(self.lr > 0 and math.isfinite(self.lr), f"--lr must be a positive number, got {self.lr}")
        require(0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        require(0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        require(self.max_norm >= 0, f"--max-norm must be >= 0, got {self.max_norm}")
        require(self.optimizer in ("sgd", "adam"), f"--optimizer must be sgd or adam, got {self.optimizer}")
        require(self.schedule in ("cosine", "step", "constant"),
                f"--schedule must be cosine, step or constant, got {self.schedule}")
        require(self.select in ("last", "best-val"), f"--select must be last or best-val, got {self.select}")
        require(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, "
                                              f"got {self.precision}")
        check_mode(self.compile)
        require(all(s >= 1 for s in self.lr_steps), "--lr-steps must be epochs >= 1")
        check_device(self.device)
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_device(device: str) -> str:
    """``auto`` -> the best device here (cuda, then mps, then cpu); any other name is checked and returned."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else (
            "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu")
    check_device(device)
    return device


def check_device(device: str) -> None:
    """A device this machine has: cpu, cuda[:N] with CUDA present, or mps where it is available (or auto)."""
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DistillabError(f"--device must be cpu, cuda, cuda:N or mps, got '{device}'") from None
    if dev.type == "cuda":
        require(torch.cuda.is_available(), f"--device {device}: this machine has no CUDA GPU that torch can use "
                                           "(torch.cuda.is_available() is False); use --device cpu")
        require(dev.index is None or dev.index < torch.cuda.device_count(),
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        require(torch.backends.mps.is_available(), f"--device {device}: MPS is not available on this machine")
    else:
        require(dev.type == "cpu", f"--device {device} is not supported; use cpu, cuda or mps")


def lr_factor(cfg: TrainConfig, epoch: int, progress: float) -> float:
    """Learning-rate multiplier for (0-based) ``epoch`` at fractional ``progress`` through training."""
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        steps = cfg.lr_steps or [cfg.epochs // 2 + 1]
        return 0.1 ** sum(epoch + 1 >= s for s in steps)
    return 1.0


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def autocast(device: str, enabled: bool):
    if not enabled:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 128, device: str = "cpu",
                   bf16: bool = False) -> torch.Tensor:
    """Logits in eval mode, float32 on the CPU."""
    was_training = model.training
    model.eval()
    outs = []
    for i in range(0, len(x), batch_size):
        with autocast(device, bf16):
            outs.append(model(x[i:i + batch_size].to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0)


def accuracy(model: nn.Module, data: ImageSet, device: str = "cpu") -> tuple[float, int]:
    """(accuracy as a fraction, number of errors). Reads ``data`` once."""
    x, y = data.x, data.y
    pred = predict_logits(model, x, device=device).argmax(1)
    errors = int((pred != y).sum())
    return 1 - errors / max(1, len(y)), errors


def is_soft(targets: torch.Tensor) -> bool:
    """Soft targets are (N, K) probabilities; hard labels are (N,) class indices."""
    return targets.is_floating_point() and targets.dim() == 2


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with hard labels (N,) or soft targets (N, K), averaged over the batch."""
    if is_soft(targets):
        return -(targets * F.log_softmax(logits, 1)).sum(1).mean()
    return F.cross_entropy(logits, targets)


@dataclass(frozen=True)
class Schedule:
    """Where a training step stands, for objectives (and loss terms) that change as training goes (a warm-up):
    ``epoch`` (1-based, the epoch in progress) of ``epochs``, ``step`` (0-based: the steps taken before this one)
    of ``total_steps``. ``fit`` gives it to an objective that takes a ``schedule`` argument."""

    epoch: int = 1
    epochs: int = 1
    step: int = 0
    total_steps: int = 1

    @property
    def fraction(self) -> float:
        """The share of training done before this step: 0 at the first step, below 1 at the last."""
        return self.step / max(1, self.total_steps)


def takes_schedule(objective) -> bool:
    """Whether ``objective`` has a ``schedule`` parameter (a plain ``(model, x, y, idx)`` function has not)."""
    try:
        return "schedule" in inspect.signature(objective).parameters
    except (TypeError, ValueError):
        return False


def cross_entropy_objective(label_smoothing: float = 0.0) -> Objective:
    def objective(model, x, y, idx):
        return {"ce": F.cross_entropy(model(x), y, label_smoothing=label_smoothing)}
    return objective


@torch.no_grad()
def apply_max_norm(model: nn.Module, max_norm: float) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            w = m.weight.view(m.weight.shape[0], -1)
            norms = w.norm(dim=1, keepdim=True).clamp_min(1e-12)
            w.mul_(norms.clamp(max=max_norm) / norms)


@dataclass
class FitResult:
    history: list[dict]
    best_val_accuracy: float
    best_epoch: int
    seconds: float
    precision: str = "fp32"
    precision_probe: dict | None = None
    compile: dict | None = None


# --------------------------------------------------------------------------------------------------------------
# Batches that mix labelled and pseudo-labelled rows


def mixed_split(batch_size: int, ratio: tuple[int, int]) -> tuple[int, int]:
    """(labelled, pseudo) rows of one batch at ``ratio``, the labelled share rounded half up, each at least 1."""
    a, b = ratio
    require(batch_size >= 2, f"--batch-size must be at least 2 to mix labelled and pseudo-labelled rows, got "
                             f"{batch_size}")
    labelled = min(batch_size - 1, max(1, math.floor(batch_size * a / (a + b) + 0.5)))
    return labelled, batch_size - labelled


def mixed_steps(n_labelled: int, n_pseudo: int, batch_size: int, ratio: tuple[int, int]) -> int:
    """Steps of a mixed epoch: one pass over whichever set takes more batches at its share (the other is drawn
    again, a fresh permutation each time it runs out)."""
    per_l, per_p = mixed_split(batch_size, ratio)
    return max(math.ceil(n_labelled / per_l), math.ceil(n_pseudo / per_p))


def _stream(n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``length`` positions 0..n-1: permutations one after another, so no row comes again before every row came."""
    parts = [torch.randperm(n, generator=generator) for _ in range(math.ceil(length / n))]
    return torch.cat(parts)[:length]


def mixed_order(n_labelled: int, n_pseudo: int, batch_size: int, ratio: tuple[int, int],
                generator: torch.Generator) -> torch.Tensor:
    """One epoch's positions, batch after batch: every batch of ``batch_size`` holds exactly ``mixed_split``
    labelled rows (positions 0..n_labelled-1) then pseudo-labelled ones (n_labelled..)."""
    per_l, per_p = mixed_split(batch_size, ratio)
    steps = mixed_steps(n_labelled, n_pseudo, batch_size, ratio)
    labelled = _stream(n_labelled, steps * per_l, generator).view(steps, per_l)
    pseudo = _stream(n_pseudo, steps * per_p, generator).view(steps, per_p) + n_labelled
    return torch.cat([labelled, pseudo], 1).reshape(-1)


def mixed_rows(train: ImageSet, pseudo: ImageSet) -> tuple[torch.Tensor, torch.Tensor]:
    """The training rows followed by the pseudo-labelled ones; with soft pseudo-labels (N, K) every label becomes
    a probability row (the labelled ones one-hot), which cross-entropy takes as it takes class indices."""
    require(tuple(pseudo.x.shape[1:]) == tuple(train.x.shape[1:]),
            f"pseudo-labelled images are {tuple(pseudo.x.shape[1:])}, the training images "
            f"{tuple(train.x.shape[1:])}")
    y, yp = train.y, pseudo.y
    if is_soft(yp):
        y = F.one_hot(y, yp.shape[1]).to(yp.dtype)
    return torch.cat([train.x, pseudo.x.to(train.x.dtype)]), torch.cat([y, yp])


PROBE_STEPS = 4


def objective_state(objective) -> dict:
    """What an objective asks the loop to checkpoint (``objective.live_state()``: a tree of generators, tensors,
    modules); an objective without that method has none."""
    live_state = getattr(objective, "live_state", None)
    return live_state() if callable(live_state) else {}


class _ProbeStep:
    """Training steps for a probe on a copy of the model; the objective's own learned parts (connectors, heads:
    ``extra_modules``) are the run's, as its terms hold them, and step too, so ``_untouched`` puts them back after
    the probe. The run's model, optimiser and random streams are not touched (the objective's streams are put back
    by the caller)."""

    def __init__(self, model, objective, xb, yb, idx, cfg: TrainConfig, extra_modules, *, bf16=False,
                 compiled=False):
        import copy

        self.net = copy.deepcopy(model).train()
        set_dropout_generator(self.net, torch.Generator(device=xb.device).manual_seed(0))
        params = [p for m in (self.net, *extra_modules) for p in m.parameters() if p.requires_grad]
        self.opt = make_optimizer(params, cfg)
        self.forward = Compiled(self.net) if compiled else self.net
        self.objective, self.batch, self.device, self.bf16 = objective, (xb, yb, idx), cfg.device, bf16
        self.losses: list[float] = []

    def __call__(self):
        with autocast(self.device, self.bf16):
            loss = sum(self.objective(self.forward, *self.batch).values())
        self.losses.append(float(loss.detach()))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


class _untouched:
    """Puts the objective's learned parts back as they were (weights, running statistics, no gradients) and its
    random streams too, after a probe that stepped them."""

    def __init__(self, objective, extra_modules):
        import copy

        self.own, self.modules = objective_state(objective), list(extra_modules)
        self.saved = copy.deepcopy(unpack(*pack(self.own)))
        self.states = [copy.deepcopy(m.state_dict()) for m in self.modules]

    def restore(self) -> None:
        restore(self.own, self.saved)
        for module, state in zip(self.modules, self.states):
            module.load_state_dict(state)
            for p in module.parameters():
                p.grad = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.restore()


def _probe_batch(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig):
    idx = torch.arange(min(cfg.batch_size, len(y)), device=x.device)
    return x[idx], y[idx], idx


def choose_precision(model: nn.Module, objective: Objective, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                     extra_modules=(), timer=time.perf_counter) -> tuple[str, dict]:
    """Time a few training steps in fp32 and in bf16 autocast on copies of the model (the run's own model and random
    streams are not touched) and keep bf16 only where it is at least 10% faster and its loss agrees with fp32's
    to 2%: bf16 autocast was 1.3x faster on a Zen 4 CPU with bf16 units, 5x slower on AVX2-only ones."""
    batch = _probe_batch(x, y, cfg)
    seconds, losses = {}, {}
    with _untouched(objective, extra_modules) as untouched:  # both probes start alike and leave nothing behind
        for precision in ("fp32", "bf16"):
            untouched.restore()
            step = _ProbeStep(model, objective, *batch, cfg, extra_modules, bf16=precision == "bf16")
            times = []
            for _ in range(PROBE_STEPS + 1):  # the first step warms up
                t0 = timer()
                step()
                times.append(timer() - t0)
            losses[precision] = step.losses[0]
            seconds[precision] = sorted(times[1:])[len(times[1:]) // 2]
    agree = abs(losses["bf16"] - losses["fp32"]) <= 0.02 * max(abs(losses["fp32"]), 1e-6)
    faster = seconds["bf16"] <= 0.9 * seconds["fp32"]
    choice = "bf16" if agree and faster else "fp32"
    return choice, {"fp32_step_seconds": round(seconds["fp32"], 5), "bf16_step_seconds": round(seconds["bf16"], 5),
                    "fp32_loss": losses["fp32"], "bf16_loss": losses["bf16"], "chosen": choice}


def choose_compile(model: nn.Module, objective: Objective, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                   bf16: bool, steps: int, extra_modules=()) -> CompileChoice:
    """``cfg.compile`` decided for this run (auto: timed on copies, as ``choose_precision`` does). A student read
    through feature taps (forward hooks that keep tensors aside) trains eager: hooks inside a compiled graph are
    not what the taps were written for."""
    if cfg.compile == "off":
        return CompileChoice()
    if getattr(objective, "student_taps", None) is not None:
        return CompileChoice(cfg.compile, False, "the objective reads feature taps (forward hooks): eager")
    if cfg.compile == "on":
        return choose("on", None, None, steps=steps)
    batch = _probe_batch(x, y, cfg)
    with _untouched(objective, extra_modules):
        return choose(cfg.compile, _ProbeStep(model, objective, *batch, cfg, extra_modules, bf16=bf16),
                      _ProbeStep(model, objective, *batch, cfg, extra_modules, bf16=bf16, compiled=True), steps=steps)


def fit(model: nn.Module, splits: Splits, cfg: TrainConfig, objective: Objective | None = None,
        extra_modules: list[nn.Module] = (), on_epoch: Callable[[dict], None] | None = None,
        on_step: Callable[[dict], None] | None = None, reporter: Reporter = SILENT, desc: str = "train",
        checkpoints: Checkpoints | None = None, pseudo: PseudoRows | None = None) -> FitResult:
    """Train ``model`` on ``splits.train``; validation accuracy after each epoch; returns the history.

    ``pseudo``: pseudo-labelled rows mixed into every batch at their ratio (``mixed_order``); the objective then
    sees positions in ``splits.train`` followed by those rows.

    With ``cfg.select == "best-val"`` the weights of the epoch with the best validation accuracy are restored.
    ``checkpoints``: saved every ``checkpoints.every`` epochs and when a stop is requested (then ``Interrupted`` is
    raised after the step in progress); a saved one is resumed from, to the same bits as an uninterrupted run.
    """
    cfg.check()
    device = cfg.device
    objective = objective or cross_entropy_objective(cfg.label_smoothing)
    scheduled = takes_schedule(objective)
    generator = seeds.generator(cfg.seed)
    dropout_generator = seeds.generator(cfg.seed, "dropout", device=device)
    model.to(device).train()
    set_dropout_generator(model, dropout_generator)
    params = [p for m in (model, *extra_modules) for p in m.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg)
    augment = Augmenter(cfg.augment, splits.mean, splits.std, allow_flip=True)
    x_all, y_all = splits.train.x.to(device), splits.train.y.to(device)
    if pseudo is not None:
        x_all, y_all = (v.to(device) for v in mixed_rows(splits.train, pseudo.rows))
    n = len(y_all)
    steps_per_epoch = math.ceil(n / cfg.batch_size) if pseudo is None else \
        mixed_steps(len(splits.train), len(pseudo.rows), cfg.batch_size, pseudo.ratio)
    rows_per_epoch = n if pseudo is None else steps_per_epoch * cfg.batch_size
    total_steps = cfg.epochs * steps_per_epoch
    precision, probe = cfg.precision, None
    live = {"model": model, "extra": list(extra_modules), "optimizer": optimizer, "generator": generator,
            "dropout_generator": dropout_generator}
    own_state = objective_state(objective)
    if own_state:  # the objective's own state (its terms' random streams) is saved with the rest
        live["objective"] = own_state
    history: list[dict] = []
    best = (-1.0, 0, None)
    step, first_epoch, first_batch, order, sums = 0, 0, 0, None, {}
    saved = checkpoints.load() if checkpoints else None
    if saved is not None:  # continue where the checkpoint stopped
        restore(live, saved["live"])
        step, first_epoch, first_batch = saved["step"], saved["epoch"], saved["batch"]
        history, sums = saved["history"], saved["sums"]
        best = (saved["best_val"], saved["best_epoch"], saved["best_state"])
        order = saved["order"].to(device) if saved["order"] is not None else None
        precision, probe = saved.get("precision", precision), saved.get("precision_probe")
    compiling = CompileChoice.from_record(saved["compile"]) if saved is not None and "compile" in saved else None
    if precision == "auto":  # chosen once per run, kept in its checkpoints: a resumed run stays with it
        precision, probe = choose_precision(model, objective, x_all, y_all, cfg, extra_modules)
        reporter.info(f"precision: {precision} (a training step took {probe['fp32_step_seconds']:.4f} s in fp32, "
                      f"{probe['bf16_step_seconds']:.4f} s in bf16)")
    bf16 = precision == "bf16"
    if compiling is None:  # chosen once per run, like the precision
        compiling = choose_compile(model, objective, x_all, y_all, cfg, bf16, total_steps - step, extra_modules)
        if compiling.mode != "off":
            reporter.info(f"compile: {compiling.compiled} ({compiling.reason})")
    forward = Compiled(model) if compiling.compiled else model

    def state(epoch: int, batch: int, order, sums) -> dict:
        return {"live": live, "step": step, "epoch": epoch, "batch": batch, "order": order, "sums": sums,
                "history": history, "best_val": best[0], "best_epoch": best[1], "best_state": best[2],
                "precision": precision, "precision_probe": probe, "compile": compiling.record()}

    start = time.perf_counter()
    bar = reporter.bar(total_steps, desc, unit="steps")
    bar.update(step)
    with loop_running():
        for epoch in range(first_epoch, cfg.epochs):
            t0 = time.perf_counter()
            if order is None:
                order = torch.randperm(n, generator=generator) if pseudo is None else \
                    mixed_order(len(splits.train), len(pseudo.rows), cfg.batch_size, pseudo.ratio, generator)
                order, sums = order.to(device), {}
            for b in range(first_batch, steps_per_epoch):
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(cfg, epoch, step / total_steps)
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                x, y = x_all[idx], y_all[idx]
                if augment:
                    x = augment(x, generator)  # the whole batch on every rank: the draws of one process
                if distributed.world() > 1:  # this rank's shard of the batch
                    part = distributed.shard(len(idx))
                    share = (part.stop - part.start) / len(idx)
                    x, y, shard_idx = x[part], y[part], idx[part]
                else:
                    shard_idx = idx
                schedule = {"schedule": Schedule(epoch + 1, cfg.epochs, step, total_steps)} if scheduled else {}
                with autocast(device, bf16):
                    terms = objective(forward, x, y, shard_idx, **schedule)
                loss = sum(terms.values())
                optimizer.zero_grad(set_to_none=True)
                if distributed.world() > 1:
                    (loss * share).backward()
                    for p in params:  # the gradient of the whole batch: shards weighted by their share, summed
                        if p.grad is not None:
                            distributed.sum_(p.grad)
                    values = distributed.sum_(torch.stack([v.detach().float() * share
                                                           for v in (*terms.values(), loss)])).tolist()
                    values = dict(zip([*terms, "loss"], values))
                else:
                    loss.backward()
                    values = {k: float(v.detach()) for k, v in terms.items()}
                    values["loss"] = float(loss.detach())
                optimizer.step()
                if cfg.max_norm:
                    apply_max_norm(model, cfg.max_norm)
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v * len(idx)
                step += 1
                if on_step:
                    on_step({"step": step, "epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], **values})
                bar.update(1)
                if checkpoints:
                    checkpoints.save_and_stop_if_requested(lambda: state(epoch, b + 1, order, sums))
                else:
                    stop_if_requested()
            first_batch = 0
            val_acc, _ = accuracy(model, splits.val, device)
            record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                      **{f"train_{k}": v / rows_per_epoch for k, v in sums.items()}, "val_accuracy": val_acc,
                      "seconds": time.perf_counter() - t0}
            if not all(math.isfinite(v) for k, v in record.items() if k.startswith("train_")):
                raise DistillabError(f"training diverged at epoch {epoch + 1} (loss is not finite); lower --lr"
                                     + ("; the last good checkpoint is kept" if checkpoints and checkpoints.path.exists()
                                        else ""))
            history.append(record)
            terms = ", ".join(f"{k} {record['train_' + k]:.4f}" for k in sums if k != "loss")
            reporter.info(f"{desc} epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.4f}"
                          + (f" ({terms})" if terms and len(sums) > 2 else "")
                          + f", val accuracy {val_acc:.4f}, {record['seconds']:.1f} s")
            bar.set_postfix(loss=record["train_loss"], val=val_acc)
            if val_acc > best[0]:
                best_state = ({k: v.detach().clone() for k, v in model.state_dict().items()}
                              if cfg.select == "best-val" else None)
                best = (val_acc, epoch + 1, best_state)
            if on_epoch:
                on_epoch(record)
            order = None
            if checkpoints and checkpoints.due(epoch + 1) and epoch + 1 < cfg.epochs:
                checkpoints.save(state(epoch + 1, 0, None, {}))
    bar.close()
    if cfg.select == "best-val" and best[2] is not None:
        model.load_state_dict(best[2])
    set_dropout_generator(model, None)
    model.eval()
    return FitResult(history, best[0], best[1], time.perf_counter() - start, precision, probe, compiling.record())
