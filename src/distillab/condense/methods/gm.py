"""``gm``: gradient matching (dataset condensation, Zhao, Mopuri & Bilen 2021; docs/reference.md §2).

Each iteration draws a fresh network. Then, ``outer`` times: for every class, the gradient of the loss on a real
batch of the class and on the class's synthetic images are compared layer by layer -- the distance is the sum over
output channels of (1 - cosine) of the two gradients (bias gradients are left out, as in the reference) -- and the
summed distance moves the synthetic images; between two such steps the network trains ``inner`` steps on the
synthetic set. The reference's loop sizes per IPC are the default (``outer``/``inner`` 0 = by IPC: 1 -> 1/1,
10 -> 10/50, 50 -> 50/10).

``recipe=vico`` is VICO-UoE/DatasetCondensation's main.py as its README runs it (``--method DC``, and for ``dsa``
``--method DSA --init real``): 1,000 iterations, noise initialisation, 256 real images per class drawn without
replacement, ``inner`` counted in epochs over the synthetic set (``inner_unit=epoch``), whole-pixel siamese
augmentation (``dsa_style=vico``). One outer step equals the reference's loop body on fixed inputs
(tests/test_reference_equivalence.py).

``compile=on|auto`` runs the network's inner training steps compiled by inductor (distillab.compiling); the
matching step differentiates a gradient (double backward), which inductor cannot compile, and stays eager.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ...compiling import CompileChoice, Compiled, check_mode, choose
from ...data import TrainSet
from ...dsa import DSA, STYLES
from ...errors import require
from ...specs import execution_option
from ...models import build_model, stateful_layers
from ..method import Method, Progress, initial_images, register_method
from ..synset import SyntheticSet

LOOPS = {1: (1, 1), 10: (10, 50), 50: (50, 10)}


def loops_for(ipc: int) -> tuple[int, int]:
    """The reference's (outer, inner) loop sizes for an IPC; between its settings, the nearest smaller one."""
    return LOOPS[max(k for k in LOOPS if k <= ipc)]


def loops_of(cfg, ipc: int) -> tuple[int, int]:
    """A run's (outer, inner): its options, 0 taking the reference's setting for the IPC."""
    default_outer, default_inner = loops_for(ipc)
    return cfg.outer or default_outer, cfg.inner or default_inner


def gradient_distance(real: list[torch.Tensor], syn: list[torch.Tensor]) -> torch.Tensor:
    """Σ over layers and output channels of (1 - cos) between real and synthetic gradients; biases left out."""
    total = syn[0].new_zeros(())
    for gr, gs in zip(real, syn):
        if gs.dim() == 1:  # a bias (or a norm's scale): the reference matches weights only
            continue
        gr, gs = gr.reshape(gr.shape[0], -1), gs.reshape(gs.shape[0], -1)
        cos = (gr * gs).sum(1) / (gr.norm(dim=1) * gs.norm(dim=1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


@register_method("gm")
@dataclass
class GM(Method):
    quick = {"iterations": 2, "outer": 2, "inner": 2, "batch_real": 16, "model": "convnet:width=4,depth=2"}

    iterations: int = 1000
    outer: int = 0                    # 0: the reference's setting for the IPC
    inner: int = 0
    lr_img: float = 0.1               # SGD on the images
    momentum: float = 0.5
    lr_net: float = 0.01              # SGD on the network between matching steps
    batch_real: int = 256             # real images per class per matching step
    batch_train: int = 256            # synthetic images per network step
    model: str = "convnet:width=128,depth=3"
    dsa: bool = False
    init: Literal["real", "noise"] = "real"
    real_draw: Literal["replace", "distinct"] = "replace"   # a class's real batch: with or without replacement
    inner_unit: Literal["step", "epoch"] = "step"          # inner: steps on batch_train images, or epochs of the set
    dsa_strategy: str = ""                                  # "": every family, flip for colour images only
    dsa_style: Literal["distillab", "vico"] = "distillab"   # vico: the reference's whole-pixel crop and cutout
    # the inner steps by torch.compile (auto: where it pays); how it runs, not what it makes: not in the recipe
    compile: Literal["off", "on", "auto"] = execution_option("off")

    recipes = {"vico": dict(iterations=1000, outer=0, inner=0, lr_img=0.1, momentum=0.5, lr_net=0.01, batch_real=256,
                            batch_train=256, model="convnet:width=128,depth=3", dsa=False, init="noise",
                            real_draw="distinct", inner_unit="epoch", dsa_strategy="", dsa_style="vico")}

    def check(self) -> None:
        require(self.iterations >= 1, f"{self.name} iterations must be at least 1, got {self.iterations}")
        require(self.outer >= 0 and self.inner >= 0, f"{self.name} outer and inner must be >= 0 (0: by IPC)")
        require(self.lr_img > 0 and self.lr_net > 0, f"{self.name} lr_img and lr_net must be > 0")
        require(0 <= self.momentum < 1, f"{self.name} momentum must be in [0, 1), got {self.momentum}")
        require(self.batch_real >= 1 and self.batch_train >= 1, f"{self.name} batch sizes must be at least 1")
        require(self.dsa_style in STYLES, f"{self.name} dsa_style must be one of {', '.join(STYLES)}")
        check_mode(self.compile, f"{self.name} compile")
        if self.dsa_strategy:
            DSA(strategy=self.dsa_strategy)  # unknown families: one line

    def check_data(self, train: TrainSet) -> None:
        net = build_model(self.model, train.input_shape, train.num_classes)
        stateful = stateful_layers(net)
        require(not stateful, f"gradient matching compares per-class gradients of one network; '{self.model}' has "
                              f"batch norm or dropout ({', '.join(stateful[:3])}), whose batch statistics or masks "
                              "differ between the real and the synthetic batch: use norm=instance")

    def run(self, train, ipc, generator, progress=None):
        images = initial_images(train, ipc, self.init, generator)
        augment = siamese_augmentation(train.input_shape, self) if self.dsa else None
        progress = progress if isinstance(progress, Progress) else Progress(progress)
        choice = compile_choice(train, ipc, self, augment, progress)
        images = gradient_matching(train, images, ipc, self, generator, augment, progress,
                                   forward=Compiled(_forward) if choice.compiled else None)
        meta = {"dsa_families": augment.families} if augment else {}
        return SyntheticSet.class_major(train, images, ipc, meta={**meta, "compile": choice.record()})


def _forward(net, x):
    return net(x)


def compile_choice(train: TrainSet, ipc: int, cfg: GM, augment, progress: Progress) -> CompileChoice:
    """Whether this run's inner steps run compiled: ``cfg.compile`` decided (auto: an inner step timed on a
    network, noise images and draws of its own), or the choice a resumed run kept."""
    def decide() -> CompileChoice:
        if cfg.compile != "auto":  # off and on need no probe
            return choose(cfg.compile, None, None, steps=0)
        probe_g, k = torch.Generator().manual_seed(0), train.num_classes
        outer, inner = loops_of(cfg, ipc)
        pool = torch.randn(k * ipc, *train.x.shape[1:], generator=probe_g).to(train.device)
        labels = torch.arange(k, device=pool.device).repeat_interleave(ipc)
        per_inner = len(list(inner_batches(len(pool), cfg, probe_g, 1)))
        pick = next(iter(inner_batches(len(pool), cfg, probe_g, 1)))
        batch = [(pick, augment.sample(len(pick), probe_g) if augment is not None else None)]

        def probe(forward):
            net = build_model(cfg.model, train.input_shape, k, probe_g).to(train.device).train()
            opt = torch.optim.SGD(net.parameters(), lr=cfg.lr_net)
            return lambda: network_steps(net, opt, pool, labels, batch, augment, forward=forward)
        steps = cfg.iterations * (outer - 1) * inner * per_inner
        return choose(cfg.compile, probe(None), probe(Compiled(_forward)), steps=steps)
    return progress.compile_choice(decide)


def siamese_augmentation(input_shape, cfg) -> DSA:
    """The DSA a method's ``dsa_strategy`` and ``dsa_style`` options ask for, set up for these inputs."""
    return DSA.for_inputs(input_shape, strategy=cfg.dsa_strategy, style=cfg.dsa_style)


def real_batch(train: TrainSet, idx: torch.Tensor, n: int, how: str, g: torch.Generator) -> torch.Tensor:
    """``n`` real images of one class (its positions ``idx``): drawn with replacement, or ``distinct`` ones (the
    first n of a random permutation, as the reference's ``get_images`` takes them)."""
    n = min(n, len(idx))
    pick = torch.randperm(len(idx), generator=g)[:n] if how == "distinct" else torch.randint(len(idx), (n,), generator=g)
    return train.read(idx[pick])


def inner_batches(count: int, cfg, g: torch.Generator, inner: int):
    """The network's batches between two matching steps: ``inner`` steps on ``batch_train`` images drawn afresh
    each, or (``inner_unit=epoch``) ``inner`` epochs, each a fresh shuffle cut into batches of ``batch_train``
    (the reference's DataLoader with shuffle=True)."""
    for _ in range(inner):  # drawn as they are used: the augmentation draws between them come from g too
        if cfg.inner_unit == "epoch":
            yield from torch.randperm(count, generator=g).split(cfg.batch_train)
        else:
            yield torch.randperm(count, generator=g)[:cfg.batch_train]


# Real batches larger than this have their gradient summed over chunks of it: the mean cross-entropy of the whole
# batch, with activations that stay in the CPU cache (256 images in chunks of 64: 0.96 s against 1.71 s for a
# ConvNet-3 width 128 forward and backward, one Zen 4 core). Equal up to float rounding: every norm is per sample.
REAL_CHUNK = 64


def real_gradient(net, params: list, real: torch.Tensor, c: int) -> list[torch.Tensor]:
    """The gradient of the mean cross-entropy of class ``c``'s real batch, detached."""
    n = len(real)
    if n <= REAL_CHUNK:
        loss = F.cross_entropy(net(real), torch.full((n,), c, device=real.device))
        return [t.detach() for t in torch.autograd.grad(loss, params)]
    total = None
    for part in real.split(REAL_CHUNK):
        loss = F.cross_entropy(net(part), torch.full((len(part),), c, device=real.device), reduction="sum") / n
        grads = torch.autograd.grad(loss, params)
        total = [g.detach() for g in grads] if total is None else [a + b for a, b in zip(total, grads)]
    return total


def gradient_matching(train: TrainSet, images: torch.Tensor, ipc: int, cfg: GM, g: torch.Generator, augment=None,
                      progress: Progress | None = None, forward=None) -> torch.Tensor:
    """``forward(net, x)``: the inner steps' forward pass (compiled), or None for ``net(x)``."""
    progress = progress if isinstance(progress, Progress) else Progress(progress)
    k = train.num_classes
    outer, inner = loops_of(cfg, ipc)
    syn = images.clone().requires_grad_(True)
    labels = torch.arange(k, device=syn.device).repeat_interleave(ipc)
    opt_img = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum)
    by_class = train.class_indices()
    live = {"images": syn, "optimizer": opt_img, "generator": g}
    for it in range(progress.restore(live), cfg.iterations):
        net = build_model(cfg.model, train.input_shape, k, g).to(train.device).train()
        opt_net = torch.optim.SGD(net.parameters(), lr=cfg.lr_net)
        total = 0.0
        for step in range(outer):
            reals, draws = [], []
            for idx in by_class:  # each class: its real batch, then its siamese draw (for its real and synthetic images)
                reals.append(real_batch(train, idx, cfg.batch_real, cfg.real_draw, g))
                draws.append(augment.sample(1, g) if augment is not None else None)
            total += matching_step(net, syn, ipc, reals, opt_img, augment, draws)
            if step == outer - 1:
                break
            pool = syn.detach().clone()  # the network learns on the synthetic set between matching steps
            batches = [(pick, augment.sample(len(pick), g) if augment is not None else None)
                       for pick in inner_batches(len(pool), cfg, g, inner)]
            network_steps(net, opt_net, pool, labels, batches, augment, forward=forward)
        progress(it, total / outer, live)
    return syn.detach()


def matching_step(net, syn: torch.Tensor, ipc: int, reals: list[torch.Tensor], opt_img, augment=None,
                  draws: list | None = None) -> float:
    """One outer step: for every class c, the distance between the gradients of the loss on its real batch
    ``reals[c]`` and on its synthetic images (both augmented by ``draws[c]``, the same draw: siamese), summed over
    the classes; then one step of ``opt_img`` on the images. Returns the summed distance."""
    params = [p for p in net.parameters() if p.requires_grad]
    loss = syn.new_zeros(())
    for c, real in enumerate(reals):
        mine = syn[c * ipc:(c + 1) * ipc]
        if augment is not None:
            real, mine = augment.apply(real, draws[c]), augment.apply(mine, draws[c])
        grads_real = real_gradient(net, params, real, c)
        syn_loss = F.cross_entropy(net(mine), torch.full((len(mine),), c, device=mine.device))
        grads_syn = torch.autograd.grad(syn_loss, params, create_graph=True)
        loss = loss + gradient_distance(grads_real, list(grads_syn))
    opt_img.zero_grad(set_to_none=True)
    loss.backward()
    opt_img.step()
    return float(loss.detach())


def network_steps(net, opt_net, pool: torch.Tensor, labels: torch.Tensor, batches: list, augment=None,
                  forward=None) -> None:
    """The network's training between two matching steps: one SGD step per (positions, augmentation draw) of
    ``batches`` on the synthetic images ``pool`` (each image its own draw: not siamese); ``forward(net, x)``
    replaces ``net(x)`` (the compiled pass)."""
    for pick, draw in batches:
        xb = pool[pick]
        if augment is not None:
            xb = augment.apply(xb, draw)
        step_loss = F.cross_entropy(forward(net, xb) if forward is not None else net(xb), labels[pick])
        opt_net.zero_grad(set_to_none=True)
        step_loss.backward()
        opt_net.step()
