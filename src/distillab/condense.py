"""Dataset distillation: condense a training set into a few (synthetic) images per class.

A ``SyntheticSet`` holds normalised images, hard labels or learnable soft-label logits, optional learned per-step
learning rates, and the metadata that makes ``synset.safetensors`` self-describing.

Methods (``condense(method=...)``):
- baselines: ``random`` (real images), ``herding`` (greedy mean matching in pixel space), ``kmeans`` (cluster
  centres per class), ``mean`` (means of ``ipc`` random groups per class);
- ``dm``: distribution matching (Zhao & Bilen 2023): a fresh random ConvNet each iteration, match the mean embedding
  of real and synthetic images per class, all classes in one batched forward pass, siamese augmentation;
- ``bptt``: Wang et al. 2018, back-propagation through unrolled training with learned step sizes (``bptt.py``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import __version__
from .data import Splits, denormalise
from .errors import DistillabError, require
from .files import load_tensors, save_tensors
from .models import build_model

SYNSET_FORMAT = "distillab.synset"
METHODS = ("random", "herding", "kmeans", "mean", "dm", "bptt")
DEFAULT_MODEL = {"dm": "convnet:width=128,depth=3", "bptt": "lenet5"}


@dataclass
class SyntheticSet:
    images: torch.Tensor                     # (K * ipc, C, H, W), normalised
    labels: torch.Tensor                     # (K * ipc,) int64, class-major order
    classes: list[str]
    mean: tuple
    std: tuple
    label_logits: torch.Tensor | None = None  # learned soft labels (K * ipc, K), if any
    lrs: torch.Tensor | None = None           # learned per-step learning rates (raw, before softplus), if any
    meta: dict = field(default_factory=dict)
    init_state: dict | None = None            # the fixed network initialisation a bptt set was made for

    @property
    def ipc(self) -> int:
        return len(self.labels) // len(self.classes)

    @property
    def input_shape(self) -> tuple:
        return tuple(self.images.shape[1:])

    def targets(self) -> torch.Tensor:
        """Soft targets (probabilities) when labels are learned, else one-hot."""
        if self.label_logits is not None:
            return torch.softmax(self.label_logits, 1)
        return torch.nn.functional.one_hot(self.labels, len(self.classes)).float()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.images, self.labels, self.label_logits, self.lrs)
                   if t is not None)

    # ---- files ----

    def save(self, path) -> None:
        tensors = {"images": self.images, "labels": self.labels}
        if self.label_logits is not None:
            tensors["label_logits"] = self.label_logits
        if self.lrs is not None:
            tensors["lrs"] = self.lrs
        if self.init_state is not None:
            from .bptt import init_state_tensors
            tensors.update(init_state_tensors(self.init_state))
        meta = dict(self.meta, format=SYNSET_FORMAT, classes=list(self.classes), ipc=self.ipc,
                    input_shape=list(self.input_shape), normalisation={"mean": list(self.mean), "std": list(self.std)},
                    size_bytes=self.nbytes())
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path) -> "SyntheticSet":
        tensors, meta = load_tensors(path, SYNSET_FORMAT)
        require("images" in tensors and "labels" in tensors, f"{path} lacks images or labels")
        norm = meta.get("normalisation") or {}
        return cls(images=tensors["images"].float(), labels=tensors["labels"].long(), classes=meta["classes"],
                   mean=tuple(norm.get("mean", [0.0])), std=tuple(norm.get("std", [1.0])),
                   label_logits=tensors.get("label_logits"), lrs=tensors.get("lrs"), meta=meta,
                   init_state=_init_state(tensors))

    def export_npz(self, path) -> None:
        """Pixel-space images (N, C, H, W) in [0, 1] and labels: the `npz:` data format."""
        x = denormalise(self.images, self.mean, self.std).clamp(0, 1).numpy()
        np.savez(path, x=x, y=self.labels.numpy())

    def save_grid(self, path, max_per_class: int = 10) -> None:
        """PNG grid: one row per class, de-normalised."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        k, ipc = len(self.classes), self.ipc
        cols = min(ipc, max_per_class)
        pics = denormalise(self.images, self.mean, self.std).clamp(0, 1)
        fig, axes = plt.subplots(k, cols, figsize=(0.9 * cols + 0.6, 0.9 * k), squeeze=False)
        for c in range(k):
            for j in range(cols):
                ax = axes[c][j]
                img = pics[c * ipc + j].permute(1, 2, 0).numpy()
                ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(self.classes[c], rotation=0, labelpad=10, fontsize=8)
        fig.tight_layout(pad=0.2)
        fig.savefig(path, dpi=100)
        plt.close(fig)


def _init_state(tensors: dict) -> dict | None:
    from .bptt import init_state_from_tensors
    return init_state_from_tensors(tensors)


def dataset_hash(splits: Splits) -> str:
    """sha256 (first 16 hex digits) of the training split the set was condensed from."""
    h = hashlib.sha256()
    h.update(splits.train.x.numpy().tobytes())
    h.update(splits.train.y.numpy().tobytes())
    return h.hexdigest()[:16]


def class_indices(y: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    return [torch.nonzero(y == c, as_tuple=True)[0] for c in range(num_classes)]


def check_ipc(splits: Splits, ipc: int) -> None:
    require(ipc >= 1, f"--ipc must be at least 1, got {ipc}")
    counts = torch.bincount(splits.train.y, minlength=splits.num_classes)
    smallest = int(counts.min())
    require(ipc <= smallest, f"--ipc {ipc} is larger than the smallest class ({smallest} training images of class "
                             f"{splits.classes[int(counts.argmin())]}); choose --ipc <= {smallest}")


# --------------------------------------------------------------------------------------------------------------
# Baselines


def _random(splits, ipc, g):
    picks = [idx[torch.randperm(len(idx), generator=g)[:ipc]] for idx in class_indices(splits.train.y, splits.num_classes)]
    return splits.train.x[torch.cat(picks)].clone()


def _herding(splits, ipc, g):
    """Greedy herding (Welling 2009) in pixel space: each pick moves the running mean closest to the class mean."""
    out = []
    for idx in class_indices(splits.train.y, splits.num_classes):
        feats = splits.train.x[idx].flatten(1).double()
        target = feats.mean(0)
        chosen: list[int] = []
        total = torch.zeros_like(target)
        for t in range(1, ipc + 1):
            dist = ((total[None] + feats) / t - target[None]).pow(2).sum(1)
            if chosen:
                dist[chosen] = float("inf")
            i = int(dist.argmin())
            chosen.append(i)
            total += feats[i]
        out.append(splits.train.x[idx[chosen]])
    return torch.cat(out).clone()


def _kmeans(splits, ipc, g):
    from sklearn.cluster import KMeans

    out = []
    for idx in class_indices(splits.train.y, splits.num_classes):
        feats = splits.train.x[idx].flatten(1).numpy()
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
        km = KMeans(n_clusters=ipc, n_init=1, random_state=seed).fit(feats)
        out.append(torch.from_numpy(km.cluster_centers_).float().view(ipc, *splits.input_shape))
    return torch.cat(out)


def _mean(splits, ipc, g):
    out = []
    for idx in class_indices(splits.train.y, splits.num_classes):
        perm = idx[torch.randperm(len(idx), generator=g)]
        out += [splits.train.x[group].mean(0, keepdim=True) for group in perm.tensor_split(ipc)]
    return torch.cat(out)


# --------------------------------------------------------------------------------------------------------------
# Distribution matching


@dataclass
class DMConfig:
    iterations: int = 1000
    lr_img: float = 1.0
    momentum: float = 0.5
    batch_real: int = 256
    model: str = "convnet:width=128,depth=3"
    dsa: bool = True


# The real images are embedded in chunks this large: a chunk's activations stay in the CPU cache, which made the
# memory-bound parts (pooling, norm, ReLU) of a ConvNet-3 width 128 forward pass ~1.7x faster than one big batch
# (2,560 images: 8.4 s vs 14.9 s, one thread, 2-core AVX2 EPYC). The embeddings are the same per image.
REAL_CHUNK = 16


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The penultimate feature (the input of the final linear layer)."""
    if hasattr(model, "features"):
        return model.features(x).flatten(1)
    raise DistillabError("distribution matching needs a model with a .features part (mlp, convnet)")


def distribution_matching(splits: Splits, images: torch.Tensor, ipc: int, cfg: DMConfig, g: torch.Generator,
                          augment=None, on_iteration: Callable[[int, float], None] | None = None) -> torch.Tensor:
    """Optimise ``images`` (class-major, ``ipc`` per class) so that, under a fresh random network each iteration,
    the mean embedding of each class's synthetic images matches that of a real batch of the same class."""
    k = splits.num_classes
    syn = images.clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum)
    by_class = class_indices(splits.train.y, k)
    for it in range(cfg.iterations):
        net = build_model(cfg.model, splits.input_shape, k, g).eval()  # fixed random embedding this iteration
        for p in net.parameters():
            p.requires_grad_(False)
        real = torch.cat([splits.train.x[idx[torch.randint(len(idx), (min(cfg.batch_real, len(idx)),), generator=g)]]
                          for idx in by_class])
        counts_real = [min(cfg.batch_real, len(idx)) for idx in by_class]
        syn_batch = syn
        if augment is not None:
            # siamese: the same sampled augmentation per class for its real and synthetic images
            parts_r, parts_s, start = [], [], 0
            for c in range(k):
                params = augment.sample(1, g)
                parts_r.append(augment.apply(real[start:start + counts_real[c]], params))
                parts_s.append(augment.apply(syn[c * ipc:(c + 1) * ipc], params))
                start += counts_real[c]
            real, syn_batch = torch.cat(parts_r), torch.cat(parts_s)
        # One batched pass per side for all classes. The real side needs no graph: instance norm is per sample, so
        # two passes give the same embeddings as one, and backward then runs through the synthetic images only.
        with torch.no_grad():
            emb_real = torch.cat([_embed(net, part) for part in real.split(REAL_CHUNK)])
        emb_syn = _embed(net, syn_batch)
        loss = emb_syn.new_zeros(())
        start = 0
        for c in range(k):
            mean_real = emb_real[start:start + counts_real[c]].mean(0)
            start += counts_real[c]
            loss = loss + (mean_real - emb_syn[c * ipc:(c + 1) * ipc].mean(0)).pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_iteration:
            on_iteration(it, float(loss.detach()))
    return syn.detach()


# --------------------------------------------------------------------------------------------------------------


def condense(splits: Splits, method: str, ipc: int, *, seed: int = 0, init: str = "real",
             dm: DMConfig | None = None, bptt=None, augment=None, on_iteration=None) -> SyntheticSet:
    """Build a synthetic set of ``ipc`` images per class from ``splits.train`` (the validation split stays out)."""
    require(method in METHODS, f"unknown method '{method}'; choose from {', '.join(METHODS)}")
    require(init in ("real", "noise"), f"--init must be real or noise, got {init}")
    check_ipc(splits, ipc)
    g = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    recipe = {"method": method, "ipc": ipc, "seed": seed}
    if method == "random":
        images = _random(splits, ipc, g)
    elif method == "herding":
        images = _herding(splits, ipc, g)
    elif method == "kmeans":
        images = _kmeans(splits, ipc, g)
    elif method == "mean":
        images = _mean(splits, ipc, g)
    labels = torch.arange(splits.num_classes).repeat_interleave(ipc)
    lrs, init_state, extra_meta = None, None, {}
    if method in ("dm", "bptt"):
        images = _random(splits, ipc, g) if init == "real" else torch.randn(
            splits.num_classes * ipc, *splits.input_shape, generator=g)
        recipe["init"] = init
    if method == "dm":
        cfg = dm or DMConfig()
        images = distribution_matching(splits, images, ipc, cfg, g, augment=augment, on_iteration=on_iteration)
        recipe.update(**cfg.__dict__)
    elif method == "bptt":
        from .bptt import BPTTConfig, bptt_distill, bptt_meta

        cfg = (bptt or BPTTConfig()).check()
        images, lrs, init_state = bptt_distill(splits, images, labels, cfg, g, on_iteration=on_iteration)
        extra_meta["bptt"] = bptt_meta(cfg)
        recipe.update(**cfg.__dict__)
    meta = {"method": method, "recipe": recipe, "source": {**splits.describe(), "hash": dataset_hash(splits)},
            "condense_seconds": round(time.perf_counter() - started, 2), "distillab_version": __version__,
            **extra_meta}
    return SyntheticSet(images=images.float().contiguous(), labels=labels, classes=list(splits.classes),
                        mean=tuple(splits.mean), std=tuple(splits.std), lrs=lrs, meta=meta, init_state=init_state)
