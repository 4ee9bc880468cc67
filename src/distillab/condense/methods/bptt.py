"""Dataset distillation by back-propagation through training (Wang et al. 2018, "Dataset Distillation").

The synthetic images and one learning rate per gradient-descent step are learned together: from a network
initialisation, ``steps * epochs`` plain SGD steps are unrolled on the synthetic set (step ``s`` uses its own
learned rate ``softplus(raw_lrs[s])``), the unrolled network is scored on a batch of real training images, and that
loss is back-propagated through the whole unroll to the pixels and the raw rates (Adam, lr 0.01, betas (0.5, 0.999)).

Two modes:

- ``init_net="fixed"``: one initialisation, sampled once and reused every iteration. The set only works from that
  initialisation, so it is returned (and saved with the set as ``init.*`` tensors, ``condense.synset``);
- ``init_net="random"``: a fresh initialisation every iteration, so the set should work from any initialisation.

The set is tied to its schedule: ``train_with_schedule`` evaluates it the way it was made (same steps, the learned
rates, no momentum, no weight decay). ``SyntheticSet.lrs`` holds the *raw* rates; ``synset.meta["bptt"]`` (see
``bptt_meta``) holds steps, epochs, init mode and model spec.

Only models without batch norm or active dropout can be unrolled (lenet5, mlp, convnet with instance/layer norm):
the unroll is functional (``torch.func.functional_call`` on a params dict), buffers pass through unchanged.
All randomness comes from the torch.Generator passed in; the global RNG is never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ... import seeds
from ...data import TrainSet
from ...errors import DistillabError, require
from ...models import build_model
from ...specs import option_values
from ...training import is_soft
from ..method import Method, Progress, initial_images, register_method
from ..unroll import check_unrollable, inverse_softplus, step_batches, unroll  # noqa: F401  (re-exported)
from ..synset import SyntheticSet

INIT_MODES = ("fixed", "random")


@register_method("bptt")
@dataclass
class BPTT(Method):
    quick = {"iterations": 3, "steps": 2, "epochs": 1, "batch_real": 64, "model": "convnet:width=4,depth=2"}

    iterations: int = 1000
    steps: int = 10            # GD steps per epoch of the unroll
    epochs: int = 3            # unroll epochs -> steps * epochs learned lrs
    lr_init: float = 0.02      # softplus(raw) at start
    lr_img: float = 0.01       # Adam on images and raw lrs
    batch_real: int = 1024
    init_net: Literal["fixed", "random"] = "fixed"
    model: str = "lenet5"
    lr_decay_every: int = 0    # multiply the Adam rate by lr_decay every this many iterations (0: never)
    lr_decay: float = 0.5
    init: Literal["real", "noise"] = "real"
    # poisoning (Wang et al. 2018 sec. 5): "source:K,target:T" scores the unrolled network on real batches whose
    # class K is relabelled T, so networks trained on the set take real K for T; empty: a clean set
    attack: str = ""

    # SsnL/dataset-distillation's MNIST commands (its README): the defaults (random unknown initialisations, 10
    # steps x 3 epochs, one image per class per step) and the fixed known initialisation (--distill_steps 1
    # --train_nets_type known_init). Its 400 epochs of 1,024 real images over 60,000 are 23,600 steps, the Adam
    # rate halved every 40 epochs (2,360 steps; its StepLR steps at each epoch's start, so the first halving comes
    # one epoch earlier); Xavier-initialised LeNet, images from N(0, 1).
    recipes = {"wang2018": dict(iterations=23600, steps=10, epochs=3, lr_init=0.02, lr_img=0.01, batch_real=1024,
                                init_net="random", model="lenet5:init=xavier", lr_decay_every=2360, lr_decay=0.5,
                                init="noise")}
    recipes["wang2018-fixed"] = {**recipes["wang2018"], "steps": 1, "init_net": "fixed"}

    def check_data(self, train: TrainSet) -> None:
        check_unrollable(build_model(self.model, train.input_shape, train.num_classes))
        self.attack_classes(train.classes)

    def attack_classes(self, classes: list[str]) -> tuple[int, int] | None:
        """(source, target) class indices of the attack (names or indices in the spec), or None for a clean set."""
        if not self.attack:
            return None
        found = [_class_index(self.attack_pair()[key], classes) for key in ("source", "target")]
        require(found[0] != found[1], f"bptt attack: source and target are the same class ({classes[found[0]]})")
        return found[0], found[1]

    def attack_pair(self) -> dict[str, str]:
        pairs = dict(item.partition(":")[::2] for item in self.attack.split(","))
        require(set(pairs) == {"source", "target"} and all(pairs.values()),
                f"bptt attack must read source:K,target:T (class names or indices), got '{self.attack}'")
        return {k: v.strip() for k, v in pairs.items()}

    def run(self, train, ipc, generator, progress=None):
        images = initial_images(train, ipc, self.init, generator)
        labels = torch.arange(train.num_classes).repeat_interleave(ipc).to(train.device)
        images, lrs, init_state = bptt_distill(train, images, labels, self, generator, on_iteration=progress)
        return SyntheticSet.class_major(train, images, ipc, lrs=lrs, init_state=init_state,
                                        meta={"bptt": bptt_meta(self)})

    @classmethod
    def models_as_made(cls, synset, *, runs, seed, trust_code=False):
        """Train the way the set was made: its learned schedule, from its stored init when fixed, else from fresh
        inits (the model spec comes from the file: built only if it names no code, or with trust)."""
        info = synset.meta.get("bptt")
        if not info:
            return None
        require(isinstance(info, dict) and isinstance(info.get("model"), str),
                "the set's bptt schedule (metadata 'bptt') is corrupt: it names no model")
        fixed = synset.init_state is not None
        models = [train_with_schedule(info["model"], synset.input_shape, len(synset.classes), synset,
                                      seeds.generator(seed, "protocol", r), init_state=synset.init_state,
                                      trust_code=trust_code) for r in range(1 if fixed else runs)]
        return {"model": info["model"], "init_net": "fixed" if fixed else "random", "models": models}

    def check(self) -> None:
        require(self.iterations >= 0, f"bptt iterations must be >= 0, got {self.iterations}")
        require(self.steps >= 1, f"bptt steps must be >= 1, got {self.steps}")
        require(self.epochs >= 1, f"bptt epochs must be >= 1, got {self.epochs}")
        require(self.lr_init > 0, f"bptt lr_init must be > 0, got {self.lr_init}")
        require(self.lr_img > 0, f"bptt lr_img must be > 0, got {self.lr_img}")
        require(self.batch_real >= 1, f"bptt batch_real must be >= 1, got {self.batch_real}")
        require(self.lr_decay_every >= 0, f"bptt lr_decay_every must be >= 0, got {self.lr_decay_every}")
        require(0 < self.lr_decay <= 1, f"bptt lr_decay must lie in (0, 1], got {self.lr_decay}")
        require(self.init_net in INIT_MODES,
                f"bptt init_net must be one of {', '.join(INIT_MODES)}, got '{self.init_net}'")
        if self.attack:
            self.attack_pair()


def _class_index(name: str, classes: list[str]) -> int:
    if name in classes:
        return classes.index(name)
    require(name.isdigit() and int(name) < len(classes),
            f"bptt attack: '{name}' is not a class of the data (classes: {', '.join(classes)})")
    return int(name)


def bptt_meta(cfg: BPTT) -> dict:
    """What ``synset.meta["bptt"]`` should hold for a set made with ``cfg`` (``train_with_schedule`` reads it)."""
    return {"steps": cfg.steps, "epochs": cfg.epochs, "init_net": cfg.init_net, "model": cfg.model,
            "lrs": "raw (used through softplus)", "config": option_values(cfg)}


# --------------------------------------------------------------------------------------------------------------
# The unroll


# --------------------------------------------------------------------------------------------------------------
# Distillation


def _params_of(model: nn.Module) -> dict:
    return {n: p.detach() for n, p in model.named_parameters()}


def bptt_distill(train: TrainSet, images: torch.Tensor, labels: torch.Tensor, cfg: BPTT,
                 generator: torch.Generator, on_iteration: Progress | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor, dict | None]:
    """Learn synthetic images and per-step learning rates by back-propagation through the unrolled training.

    ``images``: (K*ipc, C, H, W) class-major initial images; ``labels``: (K*ipc,) hard labels (or (K*ipc, K) soft
    targets). Returns ``(images, raw_lrs, init_state)``: ``raw_lrs`` has shape (steps*epochs,) and is used through
    softplus; ``init_state`` is the fixed initial state_dict when ``cfg.init_net == "fixed"``, else None.
    ``on_iteration(it, loss)`` gets the real-batch loss of each iteration (before that iteration's update).
    """
    cfg.check()
    k = train.num_classes
    require(tuple(images.shape[1:]) == tuple(train.input_shape),
            f"images of shape {tuple(images.shape[1:])} do not match the data's {tuple(train.input_shape)}")
    require(len(labels) == len(images), f"{len(images)} images but {len(labels)} labels")
    if is_soft(labels):
        require(labels.shape[1] == k, f"soft labels have {labels.shape[1]} classes, the data has {k}")
        labels = labels.detach().float()
    else:
        labels = labels.long()
        require(len(labels) == 0 or (int(labels.min()) >= 0 and int(labels.max()) < k),
                f"labels must lie in 0..{k - 1}")
    require(len(images) >= 1, "BPTT needs at least one synthetic image")

    model = build_model(cfg.model, train.input_shape, k, generator).to(train.device)
    check_unrollable(model)
    init_state = None
    if cfg.init_net == "fixed":
        init_state = {n: t.detach().clone() for n, t in model.state_dict().items()}
        fixed_params = _params_of(model)

    syn = images.detach().clone().float().requires_grad_(True)
    raw_lrs = torch.full((cfg.steps * cfg.epochs,), inverse_softplus(cfg.lr_init), device=train.device)
    raw_lrs.requires_grad_(True)
    opt = torch.optim.Adam([syn, raw_lrs], lr=cfg.lr_img, betas=(0.5, 0.999))
    n_real = len(train)
    batch_real = min(cfg.batch_real, n_real)
    real_labels = train.y
    attack = cfg.attack_classes(train.classes)
    if attack is not None:  # the poisoner's objective: real class K scored as T
        real_labels = torch.where(train.y == attack[0], attack[1], train.y)
    live = {"images": syn, "raw_lrs": raw_lrs, "optimizer": opt, "generator": generator}
    progress = on_iteration if isinstance(on_iteration, Progress) else Progress(on_iteration)
    for it in range(progress.restore(live), cfg.iterations):
        if cfg.init_net == "fixed":
            params0 = fixed_params
        else:
            model = build_model(cfg.model, train.input_shape, k, generator).to(train.device)
            params0 = _params_of(model)
        pick = torch.randperm(n_real, generator=generator)[:batch_real]
        loss = unrolled_step(model, params0, syn, labels, raw_lrs, cfg.steps, train.read(pick), real_labels[pick],
                             opt, k)
        if cfg.lr_decay_every and (it + 1) % cfg.lr_decay_every == 0:
            for group in opt.param_groups:
                group["lr"] *= cfg.lr_decay
        value = loss
        if not math.isfinite(value):
            raise DistillabError(f"BPTT diverged at iteration {it} (loss {value}); lower lr_img or lr_init")
        progress(it, value, live)
    return syn.detach(), raw_lrs.detach(), init_state


def unrolled_step(model: nn.Module, params0: dict, syn: torch.Tensor, labels: torch.Tensor, raw_lrs: torch.Tensor,
                  steps: int, real_x: torch.Tensor, real_y: torch.Tensor, opt, num_classes: int) -> float:
    """One iteration: train from ``params0`` on the synthetic set by its schedule (differentiably), score the
    result on the real batch, and take one step of ``opt`` on the images and the raw rates. Returns the loss."""
    params = unroll(model, params0, syn, labels, raw_lrs, steps, create_graph=True, num_classes=num_classes)
    logits = functional_call(model, {**params, **dict(model.named_buffers())}, (real_x,))
    loss = F.cross_entropy(logits, real_y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


# --------------------------------------------------------------------------------------------------------------
# Evaluation with the learned schedule


def train_with_schedule(spec: str, input_shape, num_classes: int, synset: SyntheticSet,
                        generator: torch.Generator | None = None, *, init_state: dict | None = None,
                        trust_code: bool = True) -> nn.Module:
    """Train a model on a BPTT set the way it was made, and return it in eval mode.

    The model starts from ``init_state`` (the stored fixed initialisation, loaded by the caller) or, for a set made
    with random initialisations, from a fresh one drawn from ``generator``; then the learned schedule runs:
    ``steps * epochs`` plain SGD steps (no momentum) with rates ``softplus(synset.lrs)``.
    """
    info = synset.meta.get("bptt")
    require(isinstance(info, dict) and "steps" in info,
            "this synthetic set has no BPTT schedule (meta['bptt']); it was not made by bptt distillation")
    require(synset.lrs is not None, "this BPTT set has no learned learning rates (lrs)")
    steps = int(info["steps"])
    raw_lrs = synset.lrs.detach().float().flatten()
    epochs = info.get("epochs")
    require(epochs is None or len(raw_lrs) == steps * int(epochs),
            f"the set has {len(raw_lrs)} learned rates but its schedule is {steps} steps x {epochs} epochs")
    if info.get("init_net") == "fixed":
        require(init_state is not None, "this BPTT set was distilled from one fixed initialisation; pass its "
                                        "init_state (the init.* tensors saved with the set)")
    model = build_model(spec, input_shape, num_classes, generator, trust_code=trust_code,
                        source="the set's bptt schedule")
    if init_state is not None:
        try:
            model.load_state_dict(init_state)
        except RuntimeError as e:
            raise DistillabError(f"the stored initialisation does not fit model '{spec}' "
                                 f"(the set was made with '{info.get('model')}'): {str(e).splitlines()[0]}") from None
    check_unrollable(model)
    labels = torch.softmax(synset.label_logits.detach().float(), 1) if synset.label_logits is not None else synset.labels
    params = unroll(model, _params_of(model), synset.images.detach().float(), labels, raw_lrs, steps,
                    create_graph=False, num_classes=num_classes)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    return model.eval()
