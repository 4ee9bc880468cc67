"""How a synthetic set is measured: evaluation protocols as registered, self-describing objects, and the loop that
trains fresh models on a set by one of them.

A protocol (``EvalProtocol``) says which models, how many, and how each is trained: SGD's settings, the number of
passes over the set and the rate in each, whether the optimiser is rebuilt at the decay (momentum reset), and the
augmentation and how it is drawn (per batch or per image). Accuracy on the real test set is read once per model,
after its final pass: nothing is selected, so the test set cannot leak. The protocols themselves are one file each
in ``protocols/`` (``distillab``, the default, and the reference implementations' own: ``vico-dc``, ``vico-dsa``,
``vico-dm``, ``mtt``, ``wang2018``); ``protocols.parse_protocol`` builds one from its spec.

Runs train one after another by default. ``vectorise=True`` trains the runs of one spec together: their
parameters are stacked and one vmapped step (torch.func) updates all of them. On the 2-core AVX2 CPUs measured so far
that path was *slower* (docs/benchmarks.md, eval-speed), so it is opt-in until it beats the plain loop. Models with
batch norm or dropout (state or randomness inside the forward pass) always train one after another.
``compile="on"|"auto"`` runs the plain loop's forward and backward compiled by inductor (``distillab.compiling``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import ClassVar, Iterator

import numpy as np
import torch
from torch import nn

from . import distributed, seeds
from .checkpoint import Checkpoints, loop_running, stop_if_requested
from .compiling import CompileChoice, Compiled, check_mode, choose
from .data import ImageSet
from .errors import require
from .models import Dropout, build_model, set_dropout_generator, stateful_layers
from .registry import Registry
from .reporting import SILENT, Reporter
from .specs import Plugin
from .training import accuracy, is_soft, soft_cross_entropy


@dataclass
class Augmentation:
    """An augmentation as a protocol uses it: ``op`` (a ``DSA`` or a ``DCAugment``) and whether each image of a
    batch gets its own draw (``per_image``) or the batch shares one."""

    op: object
    per_image: bool

    def sample(self, n: int, g: torch.Generator):
        return self.op.sample(n if self.per_image else 1, g)

    def apply(self, x: torch.Tensor, params) -> torch.Tensor:
        return self.op.apply(x, params)


@dataclass
class EvalProtocol(Plugin):
    """The shape every protocol shares: ``runs`` fresh models of each spec in ``models``, SGD on the set's images,
    then one measurement on the test set. Subclasses (one file each in ``protocols/``) set their defaults and
    override the hooks below; ``reference`` says whose evaluation a protocol is, for the record."""

    runs: int = 5
    models: tuple[str, ...] = ("convnet:width=128,depth=3",)
    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256

    reference: ClassVar[str] = ""
    # Options a seconds-long run on digits takes: the contract test uses them.
    quick: ClassVar[dict] = {"runs": 1, "epochs": 2, "models": ("convnet:width=4,depth=2",)}
    # Options whose 0 means "as the reference sets it" (resolved by ``for_data``).
    zero_means_auto: ClassVar[tuple[str, ...]] = ()

    def check(self) -> None:
        if isinstance(self.models, str):  # one spec given as a string
            self.models = (self.models,)
        self.models = tuple(self.models)
        auto = self.zero_means_auto
        require(self.epochs >= (0 if "epochs" in auto else 1),
                f"--epochs must be at least 1{' (0: as the reference sets it)' if 'epochs' in auto else ''}, "
                f"got {self.epochs}")
        require(self.lr > 0 or (self.lr == 0 and "lr" in auto),
                f"the protocol's lr must be > 0{' (0: as the reference sets it)' if 'lr' in auto else ''}, "
                f"got {self.lr}")
        require(self.runs >= 1, f"--runs must be at least 1, got {self.runs}")
        require(0 <= self.momentum < 1, f"the protocol's momentum must be in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0, f"the protocol's weight_decay must be >= 0, got {self.weight_decay}")
        require(self.batch_size >= 1, f"the protocol's batch_size must be at least 1, got {self.batch_size}")
        require(len(self.models) >= 1 and all(isinstance(m, str) and m for m in self.models),
                "the protocol needs at least one model spec (--models)")

    # ---- what differs between protocols ----

    def for_data(self, data: str | None, synset=None) -> "EvalProtocol":
        """This protocol with every setting that depends on the dataset (its spec, e.g. ``mnist``) or on the set
        (e.g. a learned learning rate) filled in: what trains the models and what the record shows."""
        return self

    def epochs_for(self, spec: str) -> int:
        return self.epochs

    def passes(self, spec: str) -> int:
        """Passes over the set a model of ``spec`` trains."""
        return self.epochs_for(spec)

    def lr_at(self, spec: str, p: int) -> float:
        """The rate of pass ``p`` (0-based)."""
        return self.lr

    def rebuilds_before(self, spec: str, p: int) -> bool:
        """Whether the optimiser is made anew (its momentum dropped) before pass ``p``."""
        return False

    def augmentation(self, input_shape: tuple[int, ...], spec: str) -> Augmentation | None:
        """The augmentation a model of ``spec`` trains with, or None."""
        return None

    def summary(self, spec: str | None = None) -> str:
        """A few words for logs and figure titles: '1000 epochs with DSA'."""
        spec = spec or self.models[0]
        aug = self.augmentation((1, 28, 28), spec)
        return f"{self.epochs_for(spec)} epochs" + (f" with {type(aug.op).__name__}" if aug else "")

    def evaluate_set(self, synset, test: ImageSet, *, seed: int = 0, trust_code: bool = False) -> dict | None:
        """A protocol that does not train fresh models by SGD (``wang2018``) evaluates the set itself here;
        None: the SGD loop below does it."""
        return None

    def record(self) -> dict:
        """What metrics.json records: its name, every option, and whose evaluation it is."""
        return {**self.describe(), "reference": self.reference}


PROTOCOLS = Registry("evaluation protocol", EvalProtocol, "--protocol")


def register_protocol(name: str, *, replace: bool = False):
    """Class decorator: make an EvalProtocol dataclass available as ``--protocol NAME``."""
    return PROTOCOLS.register(name, replace=replace)


class ReferenceSchedule:
    """The schedule of the reference implementations' ``evaluate_synset`` (VICO's and MTT's): E + 1 passes over the
    set; after pass E//2 + 1 (0-based) the rate drops tenfold and the SGD optimiser is made anew, so the momentum
    starts again from zero."""

    def passes(self, spec: str) -> int:
        return self.epochs_for(spec) + 1

    def lr_at(self, spec: str, p: int) -> float:
        return self.lr * (0.1 if p > self.epochs_for(spec) // 2 + 1 else 1.0)

    def rebuilds_before(self, spec: str, p: int) -> bool:
        return p == self.epochs_for(spec) // 2 + 2


def summarise(values: list[float]) -> dict:
    """{"mean", "std", "runs"}: std is the sample standard deviation (0 for a single run)."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "runs": [float(v) for v in arr]}


def can_vectorise(model: nn.Module) -> bool:
    return not stateful_layers(model)


# A model's draws: per pass, its batches as (positions in the set, augmentation parameters or None).
Pass = list[tuple[torch.Tensor, object]]


def protocol_draws(n: int, proto: EvalProtocol, spec: str, g: torch.Generator,
                   augment: Augmentation | None) -> Iterator[Pass]:
    """Everything one model's training draws, pass by pass: a fresh shuffle, then the batches' augmentation draws.
    Replaying it (``_replay``) draws the same from ``g`` without training."""
    for _ in range(proto.passes(spec)):
        order = torch.randperm(n, generator=g)
        yield [(idx, augment.sample(len(idx), g) if augment is not None else None)
               for idx in order.split(proto.batch_size)]


def train_sequential(models: list[nn.Module], x: torch.Tensor, targets: torch.Tensor, proto: EvalProtocol,
                     g: torch.Generator, augment: Augmentation | None = None, on_epoch=None, *, spec: str | None = None,
                     draws: list[list[Pass]] | None = None, compiled: bool = False) -> list[nn.Module]:
    """The plain loop, one model after another (``compiled``: each model's forward compiled by inductor). ``draws``
    (one list of passes per model) replaces the generator's draws with given ones: how the equivalence tests feed
    the reference's shuffles and augmentation."""
    spec = spec or proto.models[0]
    n = len(x)
    for m, model in enumerate(models):
        if any(isinstance(mod, Dropout) and mod.generator is None for mod in model.modules()):
            # dropout draws from a stream of the protocol's generator, never the global RNG (only such models
            # consume the extra draw, so every other model's results stay as they were)
            seed = int(torch.randint(2 ** 62, (1,), generator=g))
            set_dropout_generator(model, torch.Generator(device=x.device).manual_seed(seed))
        model.train()
        forward = Compiled(model) if compiled else model
        opt = None
        passes = draws[m] if draws is not None else protocol_draws(n, proto, spec, g, augment)
        for p, batches in enumerate(passes):
            lr = proto.lr_at(spec, p)
            if opt is None or proto.rebuilds_before(spec, p):
                opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=proto.momentum,
                                      weight_decay=proto.weight_decay)
            for group in opt.param_groups:
                group["lr"] = lr
            for idx, params in batches:
                xb = x[idx]
                if augment is not None:
                    xb = augment.apply(xb, params)
                loss = soft_cross_entropy(forward(xb), targets[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if on_epoch:
                on_epoch(1)
        model.eval()
    return models


def train_vectorised(models: list[nn.Module], x: torch.Tensor, targets: torch.Tensor, proto: EvalProtocol,
                     g: torch.Generator, augment: Augmentation | None = None, on_epoch=None, *,
                     spec: str | None = None) -> list[nn.Module]:
    """The same protocol for all models at once: stacked parameters, one vmapped gradient per step."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    spec = spec or proto.models[0]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def loss_fn(p, b, xb, yb):
        return soft_cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    step = vmap(grad(loss_fn))
    momentum = {k: torch.zeros_like(v) for k, v in params.items()}
    n, count = len(x), len(models)
    for p_i in range(proto.passes(spec)):
        lr = proto.lr_at(spec, p_i)
        if proto.rebuilds_before(spec, p_i):
            for buf in momentum.values():
                buf.zero_()
        orders = [torch.randperm(n, generator=g) for _ in range(count)]  # each model its own shuffle
        for start in range(0, n, proto.batch_size):
            idx = [o[start:start + proto.batch_size] for o in orders]
            batches = [x[i] for i in idx]
            if augment is not None:
                batches = [augment.apply(b, augment.sample(len(b), g)) for b in batches]
            xb = torch.stack(batches)
            yb = torch.stack([targets[i] for i in idx])
            grads = step(params, buffers, xb, yb)
            with torch.no_grad():  # SGD with momentum and weight decay, as torch.optim.SGD does it
                for k, p in params.items():
                    d = grads[k] + proto.weight_decay * p
                    momentum[k].mul_(proto.momentum).add_(d)
                    p.sub_(lr * momentum[k])
        if on_epoch:
            on_epoch(count)
    for i, model in enumerate(models):
        model.load_state_dict({**{k: v[i] for k, v in params.items()}, **{k: v[i] for k, v in buffers.items()}})
        model.eval()
    return models


def _replay(n: int, proto: EvalProtocol, g: torch.Generator, augment: Augmentation | None,
            spec: str | None = None) -> None:
    """Draw from ``g`` exactly what ``train_sequential`` draws for one model, without training it."""
    for _ in protocol_draws(n, proto, spec or proto.models[0], g, augment):
        pass


def compile_choice(mode: str, model: nn.Module, x: torch.Tensor, targets: torch.Tensor, proto: EvalProtocol,
                   spec: str, augment: Augmentation | None, models_left: int) -> CompileChoice:
    """Whether a spec's models train compiled: ``mode`` decided on a copy of one model (auto times a training step
    on the set's first batch, with augmentation drawn from a generator of its own)."""
    if mode == "off":
        return CompileChoice()
    probe_g = torch.Generator().manual_seed(0)
    xb, yb = x[:proto.batch_size], targets[:proto.batch_size]

    def probe(compiled: bool):
        net = copy.deepcopy(model).train()
        forward = Compiled(net) if compiled else net
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=proto.momentum)

        def step():
            batch = augment.apply(xb, augment.sample(len(xb), probe_g)) if augment is not None else xb
            loss = soft_cross_entropy(forward(batch), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    steps = models_left * proto.passes(spec) * -(-len(x) // proto.batch_size)
    return choose(mode, probe(False), probe(True), steps=steps)


def _spread(models, x, targets, test, proto: EvalProtocol, spec: str, g, augment, device, bar) -> list[float]:
    """This rank trains the models dealt to it (i % world == rank), replaying the draws of the others, so every
    model trains as it would in one process; the accuracies are gathered, in model order."""
    mine = {}
    for i, model in enumerate(models):
        if i % distributed.world() == distributed.rank():
            train_sequential([model], x, targets, proto, g, augment, bar.update, spec=spec)
            mine[i] = accuracy(model, test, device)[0]
        else:
            _replay(len(x), proto, g, augment, spec)
    found = {i: a for part in distributed.gather(mine) for i, a in part.items()}
    return [found[i] for i in range(len(models))]


def evaluate_images(x: torch.Tensor, targets: torch.Tensor, test: ImageSet, proto: EvalProtocol, *, seed: int = 0,
                    vectorise: bool = False, num_classes: int | None = None, reporter: Reporter = SILENT,
                    checkpoints: Checkpoints | None = None, device: str = "cpu", compile: str = "off") -> dict:
    """Train ``proto.runs`` fresh models per spec on (x, targets) by ``proto``: {spec: {mean, std, runs, ...}}.

    ``proto`` should be resolved for the data first (``proto.for_data``); each model meets the test set once,
    after its final pass: nothing is selected, so nothing can leak. ``checkpoints``: the accuracies so far and the
    protocol's generator, saved after every model (after every spec when vectorised); a resumed evaluation trains
    only the models still missing, to the same results. ``compile``: off | on | auto, for the plain loop (a
    vectorised or torchrun evaluation runs eager); each spec's choice is in its result under ``compile``.
    """
    proto.check()
    check_mode(compile)
    if num_classes is None:  # from the targets, not the test set: it is read once per model, at the end
        num_classes = targets.shape[1] if is_soft(targets) else int(targets.max()) + 1
    input_shape = tuple(x.shape[1:])
    saved = (checkpoints.load() if checkpoints else None) or {"accuracies": {}, "generators": {}}
    saved.setdefault("compile", {})
    require(isinstance(saved["compile"], dict), "the checkpoint's compile choices are malformed; start the "
                                                "evaluation again with --overwrite")
    results = {}
    bar = reporter.bar(sum(proto.passes(s) for s in proto.models) * proto.runs, "evaluate", unit="model-epochs")
    bar.update(sum(len(a) * proto.passes(s) for s, a in saved["accuracies"].items() if s in proto.models))
    with loop_running():
        for s_i, spec in enumerate(proto.models):
            augment = proto.augmentation(input_shape, spec)
            g = seeds.generator(seed, "protocol", s_i)
            models = [build_model(spec, input_shape, num_classes, g).to(device) for _ in range(proto.runs)]
            accs = list(saved["accuracies"].get(spec, []))
            if accs:  # models already trained before a resume: continue the generator where they left it
                g.set_state(saved["generators"][spec][1])
            started = time.perf_counter()
            use_vmap = vectorise and proto.runs > 1 and can_vectorise(models[0])
            reporter.info(f"evaluate: {proto.runs} x {spec}, {proto.summary(spec)} ({proto.name})"
                          f"{' (vectorised)' if use_vmap else ''}")
            todo = models[len(accs):]
            if spec in saved["compile"]:  # a resumed evaluation trains its remaining models as it began
                choice = CompileChoice.from_record(saved["compile"][spec])
            elif compile == "off" or not todo:
                choice = CompileChoice()
            elif use_vmap or distributed.world() > 1:
                choice = CompileChoice(compile, False, "vectorised or spread over processes: eager")
            else:
                choice = compile_choice(compile, todo[0], x.to(device), targets.to(device), proto, spec, augment,
                                        len(todo))
            if choice.mode != "off":
                reporter.info(f"evaluate {spec}: compiled: {choice.compiled} ({choice.reason})")
            saved["compile"][spec] = choice.record()
            if distributed.world() > 1:  # torchrun: the models dealt out to the ranks
                accs = _spread(models, x.to(device), targets.to(device), test, proto, spec, g, augment, device, bar)
                todo = []
            for group in ([todo] if use_vmap else [[m] for m in todo]) if todo else []:
                if use_vmap:
                    train_vectorised(group, x.to(device), targets.to(device), proto, g, augment, bar.update, spec=spec)
                else:
                    train_sequential(group, x.to(device), targets.to(device), proto, g, augment, bar.update, spec=spec,
                                     compiled=choice.compiled)
                accs += [accuracy(m, test, device)[0] for m in group]
                bar.set_postfix(last=accs[-1])
                if checkpoints:
                    saved["accuracies"][spec], saved["generators"][spec] = list(accs), g
                    checkpoints.after(len(accs), lambda: saved)
                else:
                    stop_if_requested()
            results[spec] = {**summarise(accs), "vectorised": use_vmap, "epochs": proto.epochs_for(spec),
                             "seconds": round(time.perf_counter() - started, 2), "compile": choice.record()}
            reporter.info(f"evaluate {spec}: {100 * results[spec]['mean']:.2f} +- {100 * results[spec]['std']:.2f}% "
                          f"over {proto.runs} runs")
    bar.close()
    return results


def evaluate_set(synset, test: ImageSet, proto: EvalProtocol, *, data: str | None = None, seed: int = 0,
                 num_classes: int | None = None, trust_code: bool = False, **kwargs) -> tuple[dict, EvalProtocol]:
    """A synthetic set (a ``SyntheticSet``) measured by ``proto``, resolved for ``data`` and the set first:
    ({spec: {mean, std, runs, ...}}, the resolved protocol the record should show). ``kwargs``: those of
    ``evaluate_images``; ``trust_code``: a protocol that builds what the set names (wang2018) may build code."""
    proto = proto.for_data(data, synset)
    own = proto.evaluate_set(synset, test, seed=seed, trust_code=trust_code)
    if own is not None:
        return own, proto
    targets = synset.labels if synset.label_logits is None else synset.targets()
    return evaluate_images(synset.images, targets, test, proto, seed=seed, num_classes=num_classes, **kwargs), proto


def headline(results: dict) -> float:
    """A set's test accuracy by a protocol, as a model's is one figure: the mean over its model specs of each
    spec's mean over runs (one spec: that spec's mean); ``results`` (spec -> {mean, std, runs}) has the detail."""
    return float(np.mean([r["mean"] for r in results.values()]))


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
