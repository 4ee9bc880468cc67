"""``mtt``: dataset distillation by matching training trajectories (Cazenavette et al. 2022; docs/reference.md §2).

Each iteration picks an expert and an epoch ``t < max_start`` of its trajectory (``distillab experts``, or experts
the run trains itself when ``experts`` is empty). A student starts at the expert's parameters at epoch t and takes
``syn_steps`` plain gradient steps on minibatches of the synthetic images (``batch_syn`` each; 0: all of them), with
one learned learning rate; the loss is how far it lands from the expert's epoch ``t + expert_epochs``, relative to how
far the expert itself moved:

    ||theta_student(N) - theta_expert(t + M)||^2 / ||theta_expert(t) - theta_expert(t + M)||^2

and it is propagated back through every step to the images (SGD, ``lr_img``, momentum 0.5) and to the learning rate
(SGD, ``lr_lr``, momentum 0.5). The learned rate is stored with the set (``SyntheticSet.lrs``, one value used as it
is, and ``meta["mtt"]["syn_lr"]``): the reference trains evaluation models on the set with it.

The unroll is functional (``torch.func.functional_call`` on one flat parameter vector). Memory: with the default
``unroll=checkpointed`` the steps are first taken without a graph, keeping only each step's parameter vector (and
its batch and augmentation draw); the backward pass then rebuilds one step at a time, newest first, and
back-propagates through it alone. Memory is one step's double-backward graph plus ``syn_steps + 1`` parameter vectors
-- linear in ``syn_steps`` with the slope of one parameter vector (1.3 MB for ConvNet-3 on MNIST) -- for one extra
forward and backward pass per step. ``unroll=full`` keeps the graph of every step at once, as the reference does:
faster, but its memory grows by a whole step's activations per step (``bench mtt-memory`` measures both). Both give
the same gradients (tested).

Defaults are the reference's (its distill.py): 5,000 iterations, 20 steps, 3 expert epochs, starts below epoch 20
(the authors' own scripts; the parser default is 25), lr_img 1000, lr_lr 1e-5, initial rate 0.01, siamese
augmentation drawn per image at every step, ConvNet-3. The paper tunes these per dataset and IPC and gives no MNIST
row; the MNIST settings used here are in docs/benchmarks.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ... import seeds
from ...data import TrainSet
from ...dsa import DSA, STYLES, VICO_STRATEGY
from ...errors import DistillabError, require
from ...trajectories import (ExpertConfig, Trajectories, check_fits, expert_model, load_experts, parameter_layout,
                        train_expert)
from ..method import Method, Progress, initial_images, register_method
from ..synset import SyntheticSet
from .gm import siamese_augmentation

UNROLLS = ("checkpointed", "full")


@register_method("mtt")
@dataclass
class MTT(Method):
    # A seconds-long run: the method trains one tiny expert of two epochs itself (experts is empty).
    quick = {"iterations": 2, "syn_steps": 3, "expert_epochs": 1, "max_start": 2, "num_experts": 1,
             "model": "convnet:width=4,depth=2", "lr_img": 100.0}

    experts: str = ""                 # folder written by 'distillab experts'; empty: train num_experts here first
    num_experts: int = 5              # experts trained in the run when experts is empty
    expert_train_epochs: int = 0      # their epochs; 0: max_start - 1 + expert_epochs, the last one matched
    iterations: int = 5000
    syn_steps: int = 20               # N: student steps on the synthetic images per iteration
    expert_epochs: int = 3            # M: the expert epochs those steps should cover
    max_start: int = 20               # start epochs are drawn from 0 .. max_start - 1
    lr_img: float = 1000.0            # SGD (momentum 0.5) on the images
    lr_lr: float = 1e-5               # SGD (momentum 0.5) on the learned learning rate
    lr_init: float = 0.01             # the learned learning rate's start (the experts' rate)
    batch_syn: int = 0                # synthetic images per student step; 0: all
    model: str = "convnet:width=128,depth=3"
    dsa: bool = True
    init: Literal["real", "noise"] = "real"
    unroll: Literal["checkpointed", "full"] = "checkpointed"
    dsa_strategy: str = ""                                  # "": every family, flip for colour images only
    dsa_style: Literal["distillab", "vico"] = "distillab"   # vico: the reference's whole-pixel crop and cutout

    # distill.py's parser defaults (the paper tunes them per dataset and IPC and has no MNIST row): the reference's
    # starts are drawn from 0..24, its augmentation keeps the flip, its batch is every synthetic image
    recipes = {"mtt": dict(iterations=5000, syn_steps=20, expert_epochs=3, max_start=25, lr_img=1000.0, lr_lr=1e-5,
                           lr_init=0.01, batch_syn=0, model="convnet:width=128,depth=3", dsa=True, init="real",
                           dsa_strategy=VICO_STRATEGY, dsa_style="vico")}

    def check(self) -> None:
        n = self.name
        require(self.iterations >= 1, f"{n} iterations must be at least 1, got {self.iterations}")
        require(1 <= self.syn_steps <= 10_000, f"{n} syn_steps must be 1..10000 (memory grows with it), got "
                                               f"{self.syn_steps}")
        require(self.expert_epochs >= 1, f"{n} expert_epochs must be at least 1, got {self.expert_epochs}")
        require(self.max_start >= 1, f"{n} max_start must be at least 1 (start epochs 0 .. max_start - 1), got "
                                     f"{self.max_start}")
        require(self.num_experts >= 1, f"{n} num_experts must be at least 1, got {self.num_experts}")
        require(self.expert_train_epochs >= 0, f"{n} expert_train_epochs must be >= 0 (0: as few as the matching "
                                               f"needs), got {self.expert_train_epochs}")
        require(self.expert_train_epochs == 0 or self.expert_train_epochs >= self.last_epoch,
                f"{n} expert_train_epochs {self.expert_train_epochs} is too few: max_start {self.max_start} and "
                f"expert_epochs {self.expert_epochs} match epochs up to {self.last_epoch}")
        for key in ("lr_img", "lr_lr", "lr_init"):
            value = getattr(self, key)
            require(value > 0 and math.isfinite(value), f"{n} {key} must be a positive number, got {value}")
        require(self.batch_syn >= 0, f"{n} batch_syn must be >= 0 (0: all images), got {self.batch_syn}")
        require(self.unroll in UNROLLS, f"{n} unroll must be one of {', '.join(UNROLLS)}, got '{self.unroll}'")
        require(self.dsa_style in STYLES, f"{n} dsa_style must be one of {', '.join(STYLES)}")
        if self.dsa_strategy:
            DSA(strategy=self.dsa_strategy)  # unknown families: one line

    @property
    def last_epoch(self) -> int:
        """The latest expert epoch a target can be: start max_start - 1, plus expert_epochs."""
        return self.max_start - 1 + self.expert_epochs

    def check_data(self, train: TrainSet) -> None:
        model = expert_model(self.model, train.input_shape, train.num_classes, what="trajectory matching")
        if self.experts:
            trajectories = load_experts(self.experts)
            check_fits(trajectories, train, self.model, parameter_layout(model))
            require(trajectories.epochs >= self.last_epoch,
                    f"mtt max_start {self.max_start} and expert_epochs {self.expert_epochs} match expert epochs up "
                    f"to {self.last_epoch}, but the experts in {self.experts} were trained for "
                    f"{trajectories.epochs}; lower max_start or train longer experts")

    def run(self, train, ipc, generator, progress=None):
        images = initial_images(train, ipc, self.init, generator)
        trajectories = self.trajectories(train, generator)
        net = expert_model(self.model, train.input_shape, train.num_classes, generator).to(train.device)
        labels = torch.arange(train.num_classes, device=train.device).repeat_interleave(ipc)
        augment = siamese_augmentation(train.input_shape, self) if self.dsa else None
        syn, syn_lr = match_trajectories(net, trajectories, images, labels, self, generator, augment, progress)
        meta = {"mtt": {"syn_lr": float(syn_lr), "lrs": "the learned learning rate, used as it is (no softplus)",
                        "experts": self.experts or f"{trajectories.count} trained in the run",
                        "expert_count": trajectories.count, "expert_epochs_trained": trajectories.epochs}}
        if augment is not None:
            meta["dsa_families"] = augment.families
        return SyntheticSet.class_major(train, syn, ipc, lrs=syn_lr.reshape(1), meta=meta)

    def trajectories(self, train: TrainSet, generator: torch.Generator) -> Trajectories:
        """The experts' trajectories: the folder's, or ``num_experts`` trained here (expert i from the run's own
        stream, seeded by one draw of the method's generator)."""
        if self.experts:
            return load_experts(self.experts)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        cfg = ExpertConfig(model=self.model, experts=self.num_experts,
                           epochs=self.expert_train_epochs or self.last_epoch).check()
        made = [train_expert(train, cfg, seeds.generator(seed, "expert", i))[0] for i in range(cfg.experts)]
        layout = parameter_layout(expert_model(self.model, train.input_shape, train.num_classes))
        return Trajectories({"model": self.model, "epochs": cfg.epochs, "parameters": layout,
                             "parameter_count": made[0].shape[1]}, tensors=made)


# --------------------------------------------------------------------------------------------------------------
# The unroll


class Student:
    """A model evaluated at a flat parameter vector: ``student(theta, x)`` -> logits."""

    def __init__(self, net: torch.nn.Module):
        self.net = net
        self.names = [name for name, _ in net.named_parameters()]
        self.shapes = [p.shape for _, p in net.named_parameters()]
        self.sizes = [p.numel() for _, p in net.named_parameters()]
        self.buffers = dict(net.named_buffers())

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(self.names, theta.split(self.sizes), self.shapes)}
        return functional_call(self.net, {**params, **self.buffers}, (x,))


@dataclass
class Step:
    """One student step's draw: which synthetic images, and the augmentation applied to them (or None)."""

    index: torch.Tensor
    augmentation: object = None


def plan_steps(count: int, steps: int, batch: int, generator: torch.Generator, augment: DSA | None) -> list[Step]:
    """Minibatches of a fresh permutation, taken in turn (a new permutation when one runs out), and one siamese-style
    augmentation draw per step with parameters per image (the reference's DiffAugment during distillation)."""
    batch = batch or count
    plan, chunks = [], []
    for _ in range(steps):
        if not chunks:
            chunks = list(torch.randperm(count, generator=generator).split(batch))
        index = chunks.pop(0)
        plan.append(Step(index, augment.sample(len(index), generator) if augment is not None else None))
    return plan


def _inputs(syn: torch.Tensor, step: Step, augment: DSA | None) -> torch.Tensor:
    x = syn[step.index.to(syn.device)]
    return augment.apply(x, step.augmentation) if augment is not None else x


def student_step(student: Student, theta: torch.Tensor, lr: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                 create_graph: bool) -> torch.Tensor:
    """theta - lr * grad CE(student(theta, x), y)."""
    loss = F.cross_entropy(student(theta, x), y)
    (grad,) = torch.autograd.grad(loss, theta, create_graph=create_graph)
    return theta - lr * grad


def match_loss(end: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||end - target||^2 / ||start - target||^2: zero when the student lands on the target, one when it has not
    moved, whatever the scale of the expert's own movement."""
    return (end - target).pow(2).sum() / (start - target).pow(2).sum()


def unroll_forward(student: Student, start: torch.Tensor, syn: torch.Tensor, labels: torch.Tensor,
                   lr: torch.Tensor, plan: list[Step], augment: DSA | None) -> list[torch.Tensor]:
    """The student's parameters after each step, without a graph to the images: [theta_0, ..., theta_N]."""
    thetas = [start.detach()]
    with torch.enable_grad():
        for step in plan:
            theta = thetas[-1].detach().requires_grad_(True)
            x = _inputs(syn.detach(), step, augment)
            thetas.append(student_step(student, theta, lr.detach(), x, labels[step.index.to(labels.device)],
                                       create_graph=False).detach())
    return thetas


def unroll_gradient(student: Student, start: torch.Tensor, target: torch.Tensor, syn: torch.Tensor,
                    labels: torch.Tensor, lr: torch.Tensor, plan: list[Step], augment: DSA | None,
                    checkpointed: bool = True) -> float:
    """The matching loss of one unroll; its gradient is added to ``syn.grad`` and ``lr.grad``.

    ``checkpointed``: steps forward without a graph, then rebuild and back-propagate one step at a time (memory of
    one step's graph plus the N + 1 parameter vectors); otherwise one graph over all steps."""
    distance = (start - target).pow(2).sum()
    if float(distance) == 0.0:
        raise DistillabError("an expert did not move between the matched epochs (its parameters at the start and "
                             "the target epoch are equal); the trajectory is unusable")
    if not checkpointed:
        theta = start.detach().requires_grad_(True)
        thetas = [theta]
        for step in plan:
            x = _inputs(syn, step, augment)
            thetas.append(student_step(student, thetas[-1], lr, x, labels[step.index.to(labels.device)], True))
        loss = match_loss(thetas[-1], start, target)
        grad_syn, grad_lr = torch.autograd.grad(loss, [syn, lr], allow_unused=True)
        _accumulate(syn, grad_syn)
        _accumulate(lr, grad_lr)
        return float(loss.detach())
    thetas = unroll_forward(student, start, syn, labels, lr, plan, augment)
    end = thetas[-1].requires_grad_(True)
    loss = match_loss(end, start, target)
    (carry,) = torch.autograd.grad(loss, end)
    grad_syn, grad_lr = torch.zeros_like(syn), torch.zeros_like(lr)
    for s in reversed(range(len(plan))):  # rebuild step s alone, back-propagate the carried gradient through it
        theta = thetas[s].detach().requires_grad_(True)
        x = _inputs(syn, plan[s], augment)
        nxt = student_step(student, theta, lr, x, labels[plan[s].index.to(labels.device)], create_graph=True)
        carry, g_syn, g_lr = torch.autograd.grad(nxt, [theta, syn, lr], grad_outputs=carry, allow_unused=True)
        if g_syn is not None:
            grad_syn += g_syn
        if g_lr is not None:
            grad_lr += g_lr
        thetas[s + 1] = None  # done with it
    _accumulate(syn, grad_syn)
    _accumulate(lr, grad_lr)
    return float(loss.detach())


def _accumulate(t: torch.Tensor, grad: torch.Tensor | None) -> None:
    if grad is None:
        return
    t.grad = grad.detach().clone() if t.grad is None else t.grad + grad.detach()


# --------------------------------------------------------------------------------------------------------------
# Distillation


def match_trajectories(net: torch.nn.Module, trajectories: Trajectories, images: torch.Tensor, labels: torch.Tensor,
                       cfg: MTT, generator: torch.Generator, augment: DSA | None = None,
                       progress: Progress | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Learn the images and the student's learning rate; returns both (detached)."""
    progress = progress if isinstance(progress, Progress) else Progress(progress)
    student = Student(net)
    device = images.device
    syn = images.detach().clone().requires_grad_(True)
    syn_lr = torch.tensor(cfg.lr_init, device=device, requires_grad=True)
    opt_img = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=0.5)
    opt_lr = torch.optim.SGD([syn_lr], lr=cfg.lr_lr, momentum=0.5)
    live = {"images": syn, "syn_lr": syn_lr, "opt_img": opt_img, "opt_lr": opt_lr, "generator": generator}
    for it in range(progress.restore(live), cfg.iterations):
        expert = int(torch.randint(trajectories.count, (1,), generator=generator))
        t = int(torch.randint(cfg.max_start, (1,), generator=generator))
        start, target = (r.to(device) for r in trajectories.rows(expert, (t, t + cfg.expert_epochs)))
        plan = plan_steps(len(syn), cfg.syn_steps, cfg.batch_syn, generator, augment)
        opt_img.zero_grad(set_to_none=True)
        opt_lr.zero_grad(set_to_none=True)
        loss = unroll_gradient(student, start, target, syn, labels, syn_lr, plan, augment,
                               checkpointed=cfg.unroll == "checkpointed")
        if not math.isfinite(loss) or not bool(torch.isfinite(syn.grad).all()):
            raise DistillabError(f"mtt diverged at iteration {it} (loss {loss}); lower lr_img or lr_lr")
        opt_img.step()
        opt_lr.step()
        progress(it, loss, live)
    return syn.detach(), syn_lr.detach()
