"""The dataset-distillation evaluation protocol as code (docs/reference.md §2).

A fresh random model per run; SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256; lr x0.1 once at epoch
E//2+1; optional augmentation (DSA, or the reference's per-image crop/scale/rotate: ``augment="dc"``); accuracy
on the real test set at the final epoch (no selection at all, so the test set cannot leak); mean +- std over runs.

Runs train one after another by default. ``vectorise=True`` trains the runs of one spec together: their
parameters are stacked and one vmapped step (torch.func) updates all of them. On the 2-core AVX2 CPUs measured so far
that path was *slower* (docs/benchmarks.md, eval-speed), so it is opt-in until it beats the plain loop. Models with
batch norm or dropout (state or randomness inside the forward pass) always train one after another.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import distributed, seeds
from .augmentation import DCAugment
from .checkpoint import Checkpoints, loop_running, stop_if_requested
from .data import ImageSet
from .dsa import DSA
from .errors import require
from .models import Dropout, build_model, set_dropout_generator, stateful_layers
from .reporting import SILENT, Reporter
from .training import accuracy, is_soft, soft_cross_entropy


# the protocol's augment options: none, or the reference's non-differentiable per-image augmentation (DCAugment)
AUGMENTS = ("none", "dc")


@dataclass
class Protocol:
    """The field's protocol: ``runs`` fresh models of each spec in ``models`` trained on the set, then measured once."""

    epochs: int = 300
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    dsa: bool = False
    augment: str = "none"
    runs: int = 5
    models: tuple[str, ...] = ("convnet:width=128,depth=3",)

    def check(self) -> "Protocol":
        require(self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        require(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        require(self.runs >= 1, f"--runs must be at least 1, got {self.runs}")
        require(len(self.models) >= 1, "the protocol needs at least one model spec (--models)")
        require(self.augment in AUGMENTS, f"--augment must be one of {', '.join(AUGMENTS)}, got '{self.augment}'")
        require(not (self.dsa and self.augment != "none"),
                f"--dsa and --augment {self.augment} are two evaluation augmentations; pick one (the reference uses "
                "its dc augmentation only when DSA is off)")
        return self

    def lr_at(self, epoch: int) -> float:
        """0-based epoch; x0.1 from epoch E//2+1 (1-based) on."""
        return self.lr * (0.1 if epoch + 1 >= self.epochs // 2 + 1 else 1.0)


def summarise(values: list[float]) -> dict:
    """{"mean", "std", "runs"}: std is the sample standard deviation (0 for a single run)."""
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "runs": [float(v) for v in arr]}


def can_vectorise(model: nn.Module) -> bool:
    return not stateful_layers(model)


def _augmenter(proto: Protocol, input_shape):
    """DSA (one draw per batch), the reference's DC augmentation (drawn per image), or None: what the training
    loops below take as ``dsa``."""
    if proto.dsa:
        return DSA.for_inputs(input_shape)
    return DCAugment.for_inputs(input_shape) if proto.augment == "dc" else None


def _augment_each(x_per_model: list[torch.Tensor], dsa, g) -> list[torch.Tensor]:
    if dsa is None:
        return x_per_model
    if isinstance(dsa, DCAugment):
        return [dsa(x, g) for x in x_per_model]
    return [dsa.apply(x, dsa.sample(1, g)) for x in x_per_model]


def train_sequential(models: list[nn.Module], x: torch.Tensor, targets: torch.Tensor, proto: Protocol,
                     g: torch.Generator, dsa=None, on_epoch=None) -> list[nn.Module]:
    """The plain eager loop, one model after another (the reference and the fallback)."""
    n = len(x)
    for model in models:
        if any(isinstance(m, Dropout) and m.generator is None for m in model.modules()):
            # dropout draws from a stream of the protocol's generator, never the global RNG (only such models
            # consume the extra draw, so every other model's results stay as they were)
            seed = int(torch.randint(2 ** 62, (1,), generator=g))
            set_dropout_generator(model, torch.Generator(device=x.device).manual_seed(seed))
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=proto.lr, momentum=proto.momentum, weight_decay=proto.weight_decay)
        for epoch in range(proto.epochs):
            for group in opt.param_groups:
                group["lr"] = proto.lr_at(epoch)
            order = torch.randperm(n, generator=g)
            for start in range(0, n, proto.batch_size):
                idx = order[start:start + proto.batch_size]
                xb = _augment_each([x[idx]], dsa, g)[0]
                loss = soft_cross_entropy(model(xb), targets[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if on_epoch:
                on_epoch(1)
        model.eval()
    return models


def train_vectorised(models: list[nn.Module], x: torch.Tensor, targets: torch.Tensor, proto: Protocol,
                     g: torch.Generator, dsa=None, on_epoch=None) -> list[nn.Module]:
    """The same protocol for all models at once: stacked parameters, one vmapped gradient per step."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def loss_fn(p, b, xb, yb):
        return soft_cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    step = vmap(grad(loss_fn))
    momentum = {k: torch.zeros_like(v) for k, v in params.items()}
    n, count = len(x), len(models)
    for epoch in range(proto.epochs):
        lr = proto.lr_at(epoch)
        orders = [torch.randperm(n, generator=g) for _ in range(count)]  # each model its own shuffle
        for start in range(0, n, proto.batch_size):
            idx = [o[start:start + proto.batch_size] for o in orders]
            xb = torch.stack(_augment_each([x[i] for i in idx], dsa, g))
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


def _replay(n: int, proto: Protocol, g: torch.Generator, dsa) -> None:
    """Draw from ``g`` exactly what ``train_sequential`` draws for one model, without training it."""
    for _ in range(proto.epochs):
        torch.randperm(n, generator=g)
        if dsa is not None:
            for start in range(0, n, proto.batch_size):
                if isinstance(dsa, DCAugment):
                    dsa.sample(min(proto.batch_size, n - start), g)
                else:
                    dsa.sample(1, g)


def _spread(models, x, targets, test, proto: Protocol, g, dsa, device, bar) -> list[float]:
    """This rank trains the models dealt to it (i % world == rank), replaying the draws of the others, so every
    model trains as it would in one process; the accuracies are gathered, in model order."""
    mine = {}
    for i, model in enumerate(models):
        if i % distributed.world() == distributed.rank():
            train_sequential([model], x, targets, proto, g, dsa, bar.update)
            mine[i] = accuracy(model, test, device)[0]
        else:
            _replay(len(x), proto, g, dsa)
    found = {i: a for part in distributed.gather(mine) for i, a in part.items()}
    return [found[i] for i in range(len(models))]


def evaluate_images(x: torch.Tensor, targets: torch.Tensor, test: ImageSet, proto: Protocol, *, seed: int = 0,
                    vectorise: bool = False, num_classes: int | None = None, reporter: Reporter = SILENT,
                    checkpoints: Checkpoints | None = None, device: str = "cpu") -> dict:
    """Train ``proto.runs`` fresh models per spec on (x, targets): {spec: {mean, std, runs, ...}}.

    Each model meets the test set once, after its final epoch: nothing is selected, so nothing can leak.
    ``checkpoints``: the accuracies so far and the protocol's generator, saved after every model (after every spec
    when vectorised); a resumed evaluation trains only the models still missing, to the same results.
    """
    proto.check()
    if num_classes is None:  # from the targets, not the test set: it is read once per model, at the end
        num_classes = targets.shape[1] if is_soft(targets) else int(targets.max()) + 1
    dsa = _augmenter(proto, tuple(x.shape[1:]))  # the augmentation, DSA or DC
    saved = (checkpoints.load() if checkpoints else None) or {"accuracies": {}, "generators": {}}
    results = {}
    bar = reporter.bar(len(proto.models) * proto.runs * proto.epochs, "evaluate", unit="model-epochs")
    bar.update(sum(len(a) for a in saved["accuracies"].values()) * proto.epochs)
    with loop_running():
        for s_i, spec in enumerate(proto.models):
            g = seeds.generator(seed, "protocol", s_i)
            models = [build_model(spec, tuple(x.shape[1:]), num_classes, g).to(device) for _ in range(proto.runs)]
            accs = list(saved["accuracies"].get(spec, []))
            if accs:  # models already trained before a resume: continue the generator where they left it
                g.set_state(saved["generators"][spec][1])
            started = time.perf_counter()
            use_vmap = vectorise and proto.runs > 1 and can_vectorise(models[0])
            reporter.info(f"evaluate: {proto.runs} x {spec}, {proto.epochs} epochs{' with DSA' if proto.dsa else ''}"
                          f"{' with dc augmentation' if proto.augment == 'dc' else ''}"
                          f"{' (vectorised)' if use_vmap else ''}")
            todo = models[len(accs):]
            if distributed.world() > 1:  # torchrun: the models dealt out to the ranks
                accs = _spread(models, x.to(device), targets.to(device), test, proto, g, dsa, device, bar)
                todo = []
            for group in ([todo] if use_vmap else [[m] for m in todo]) if todo else []:
                (train_vectorised if use_vmap else train_sequential)(group, x.to(device), targets.to(device), proto, g,
                                                                     dsa, bar.update)
                accs += [accuracy(m, test, device)[0] for m in group]
                bar.set_postfix(last=accs[-1])
                if checkpoints:
                    saved["accuracies"][spec], saved["generators"][spec] = list(accs), g
                    checkpoints.after(len(accs), lambda: saved)
                else:
                    stop_if_requested()
            results[spec] = {**summarise(accs), "vectorised": use_vmap,
                             "seconds": round(time.perf_counter() - started, 2)}
            reporter.info(f"evaluate {spec}: {100 * results[spec]['mean']:.2f} +- {100 * results[spec]['std']:.2f}% "
                          f"over {proto.runs} runs")
    bar.close()
    return results
