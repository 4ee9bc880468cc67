"""``dm``: distribution matching (Zhao & Bilen 2023).

Each iteration draws a fresh random network and matches, class by class, the mean embedding of the synthetic
images to that of a real batch of the same class; all classes go through one batched forward pass per side, with
differentiable siamese augmentation (one DSA draw per class, applied to its real and its synthetic images alike).

``recipe=vico`` is VICO-UoE/DatasetCondensation's main_DM.py with its defaults (its README's command): 20,000
iterations, image rate 1, 256 real images per class drawn without replacement, initialised from real images, the
strategy color_crop_cutout_flip_scale_rotate (flip kept for every dataset, as its default is) with whole-pixel
crop and cutout (``dsa_style=vico``); one iteration equals the reference's on fixed inputs
(tests/test_reference_equivalence.py).

``compile=on|auto`` runs the embedding pass compiled by inductor (distillab.compiling): equal to eager within
float tolerance, faster on CPU where the pass is memory-bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ... import distributed
from ...compiling import CompileChoice, Compiled, check_mode, choose
from ...data import TrainSet
from ...dsa import DSA, STYLES, VICO_STRATEGY
from ...errors import require
from ...specs import execution_option
from ...models import build_model
from ..method import Method, Progress, initial_images, register_method
from ..synset import SyntheticSet
from .gm import real_batch, siamese_augmentation


@register_method("dm")
@dataclass
class DM(Method):
    quick = {"iterations": 3, "batch_real": 16, "model": "convnet:width=8,depth=2"}

    iterations: int = 1000
    lr_img: float = 1.0                  # SGD on the images
    momentum: float = 0.5
    batch_real: int = 256                # real images per class per iteration
    model: str = "convnet:width=128,depth=3"
    dsa: bool = True
    init: Literal["real", "noise"] = "real"
    # Clamp each channel's pixels to the range the real training images span: after every step, once at the end,
    # or never (the reference). Unclamped DM images leave that range far (88% of an MNIST IPC-10 set's pixels),
    # which batch-norm networks such as ResNet-18 trained on them do not survive; on the validation split `end`
    # fixed that at no cost to ConvNet-3 and `step` did not (docs/benchmarks.md, cross-arch).
    clamp: Literal["none", "step", "end"] = "none"
    real_draw: Literal["replace", "distinct"] = "replace"   # a class's real batch: with or without replacement
    dsa_strategy: str = ""                                  # "": every family, flip for colour images only
    dsa_style: Literal["distillab", "vico"] = "distillab"   # vico: the reference's whole-pixel crop and cutout
    # the embedding pass by torch.compile (auto: where it pays); how it runs, not what it makes: not in the recipe
    compile: Literal["off", "on", "auto"] = execution_option("off")

    recipes = {"vico": dict(iterations=20000, lr_img=1.0, momentum=0.5, batch_real=256,
                            model="convnet:width=128,depth=3", dsa=True, init="real", clamp="none",
                            real_draw="distinct", dsa_strategy=VICO_STRATEGY, dsa_style="vico")}

    def check(self) -> None:
        require(self.iterations >= 1, f"dm iterations must be at least 1, got {self.iterations}")
        require(self.lr_img > 0, f"dm lr_img must be > 0, got {self.lr_img}")
        require(0 <= self.momentum < 1, f"dm momentum must be in [0, 1), got {self.momentum}")
        require(self.batch_real >= 1, f"dm batch_real must be at least 1, got {self.batch_real}")
        require(self.dsa_style in STYLES, f"dm dsa_style must be one of {', '.join(STYLES)}")
        check_mode(self.compile, "dm compile")
        if self.dsa_strategy:
            DSA(strategy=self.dsa_strategy)  # unknown families: one line

    def check_data(self, train: TrainSet) -> None:
        net = build_model(self.model, train.input_shape, train.num_classes)
        require(hasattr(net, "features"), f"distribution matching embeds images with the model's .features part; "
                                          f"'{self.model}' has none (use mlp or convnet)")

    def run(self, train, ipc, generator, progress=None):
        images = initial_images(train, ipc, self.init, generator)
        augment = siamese_augmentation(train.input_shape, self) if self.dsa else None
        progress = progress if isinstance(progress, Progress) else Progress(progress)
        choice = compile_choice(train, ipc, self, augment, progress)
        images = distribution_matching(train, images, ipc, self, generator, augment=augment, on_iteration=progress,
                                       embed=Compiled(_embed) if choice.compiled else _embed)
        meta = {"dsa_families": augment.families} if augment else {}
        return SyntheticSet.class_major(train, images, ipc, meta={**meta, "compile": choice.record()})


# The real images are embedded in chunks this large: a chunk's activations stay in the CPU cache, which made the
# memory-bound parts (pooling, norm, ReLU) of a ConvNet-3 width 128 forward pass ~1.7x faster than one big batch
# (2,560 images: 8.4 s vs 14.9 s, one thread, 2-core AVX2 EPYC). The embeddings are the same per image.
REAL_CHUNK = 16


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The penultimate feature (the input of the final linear layer)."""
    return model.features(x).flatten(1)


def compile_choice(train: TrainSet, ipc: int, cfg: DM, augment, progress: Progress) -> CompileChoice:
    """Whether this run embeds compiled: ``cfg.compile`` decided (auto: timed on a probe iteration of its own
    network, noise images and draws, so the run's streams are untouched), or the choice a resumed run kept."""
    def decide() -> CompileChoice:
        if cfg.compile != "auto":  # off and on need no probe
            return choose(cfg.compile, None, None, steps=0)
        probe_g, k = torch.Generator().manual_seed(0), train.num_classes
        net = build_model(cfg.model, train.input_shape, k, probe_g).to(train.device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        shape = tuple(train.x.shape[1:])  # noise of the run's shapes: timing needs no real image
        reals = [torch.randn(cfg.batch_real, *shape, generator=probe_g).to(train.device) for _ in range(k)]
        syn = torch.randn(k * ipc, *shape, generator=probe_g).to(train.device)
        draws = [augment.sample(1, probe_g) for _ in reals] if augment is not None else []
        fast = Compiled(_embed)

        def probe(embed):
            images = syn.clone().requires_grad_(True)
            return lambda: matching_step(net, images, ipc, reals, None, augment, draws, embed=embed)
        return choose(cfg.compile, probe(_embed), probe(fast), steps=cfg.iterations)
    return progress.compile_choice(decide)


@torch.no_grad()
def _real_means(net: nn.Module, real: torch.Tensor, counts: list[int], embed=_embed) -> list[torch.Tensor]:
    """Each class's mean embedding of its real images. Under torchrun each rank embeds its shard of every class
    and the sums are added up over the ranks."""
    starts = [sum(counts[:c]) for c in range(len(counts))]
    if distributed.world() == 1:
        emb = torch.cat([embed(net, part) for part in real.split(REAL_CHUNK)])
        return [emb[s:s + n].mean(0) for s, n in zip(starts, counts)]
    sums = torch.zeros(len(counts), _embed(net, real[:1]).shape[1], device=real.device)
    for c, (s, n) in enumerate(zip(starts, counts)):
        part = distributed.shard(n)
        for chunk in real[s + part.start:s + part.stop].split(REAL_CHUNK):
            sums[c] += embed(net, chunk).sum(0)
    distributed.sum_(sums)
    return [sums[c] / n for c, n in enumerate(counts)]


def distribution_matching(train: TrainSet, images: torch.Tensor, ipc: int, cfg: DM, g: torch.Generator,
                          augment=None, on_iteration: Progress | None = None, embed=_embed) -> torch.Tensor:
    """Optimise ``images`` (class-major, ``ipc`` per class) so that, under a fresh random network each iteration,
    the mean embedding of each class's synthetic images matches that of a real batch of the same class.
    ``embed(net, x)``: the embedding pass (``_embed`` or its compiled form)."""
    k = train.num_classes
    syn = images.clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum)
    by_class = train.class_indices()
    live = {"images": syn, "optimizer": opt, "generator": g}
    progress = on_iteration if isinstance(on_iteration, Progress) else Progress(on_iteration)
    low, high = pixel_range(train) if cfg.clamp != "none" else (None, None)
    for it in range(progress.restore(live), cfg.iterations):
        net = build_model(cfg.model, train.input_shape, k, g).to(train.device).eval()  # this iteration's embedding
        for p in net.parameters():
            p.requires_grad_(False)
        reals, draws = [], []
        for idx in by_class:
            reals.append(real_batch(train, idx, cfg.batch_real, cfg.real_draw, g))
        if augment is not None:
            draws = [augment.sample(1, g) for _ in range(k)]
        loss = matching_step(net, syn, ipc, reals, opt, augment, draws, embed=embed)
        if cfg.clamp == "step":
            with torch.no_grad():
                syn.clamp_(low, high)
        progress(it, loss, live)
    out = syn.detach()
    return out.clamp(low, high) if cfg.clamp == "end" else out


def matching_step(net: nn.Module, syn: torch.Tensor, ipc: int, reals: list[torch.Tensor], opt, augment=None,
                  draws: list | None = None, embed=_embed) -> float:
    """One iteration under the frozen network ``net``: every class's real batch ``reals[c]`` and its synthetic
    images, both augmented by ``draws[c]`` (the same draw: siamese), embedded; the squared distance between their
    mean embeddings summed over the classes; one step of ``opt`` on the images (``opt=None``: the gradient only,
    as the compile probe times it). Returns the loss."""
    k = len(reals)
    counts = [len(r) for r in reals]
    real, syn_batch = torch.cat(reals), syn
    if augment is not None:
        real = torch.cat([augment.apply(r, d) for r, d in zip(reals, draws)])
        syn_batch = torch.cat([augment.apply(syn[c * ipc:(c + 1) * ipc], draws[c]) for c in range(k)])
    # One batched pass per side for all classes. The real side needs no graph: instance norm is per sample, so
    # two passes give the same embeddings as one, and backward then runs through the synthetic images only.
    emb_syn = embed(net, syn_batch)
    means_real = _real_means(net, real, counts, embed)
    loss = emb_syn.new_zeros(())
    for c in range(k):
        loss = loss + (means_real[c] - emb_syn[c * ipc:(c + 1) * ipc].mean(0)).pow(2).sum()
    if opt is None:
        loss.backward()
        return float(loss.detach())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def pixel_range(train: TrainSet) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel's lowest and highest value over the real training images, shaped (1, C, 1, 1): a statistic of
    the split, like its normalisation, so not counted as images read."""
    dims = (0, 2, 3)
    return train.x.amin(dim=dims, keepdim=True), train.x.amax(dim=dims, keepdim=True)
