"""A synthetic set: a few images per class that stand in for a training set, in one self-describing file.

``SyntheticSet`` holds normalised images, hard labels or learnable soft-label logits, optional learned per-step
learning rates and the network initialisation it was made for (bptt, fixed init), and the metadata that makes
``synset.safetensors`` self-describing (method, IPC, source data and its hash, input shape, normalisation, recipe;
for 1-D signals, the data's own ``layout``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import SIGNAL_LAYOUTS, TrainSet, denormalise, to_natural
from ..errors import require
from ..figures import pyplot
from ..files import atomic_path, load_tensors, save_tensors

SYNSET_FORMAT = "distillab.synset"
INIT_PREFIX = "init."


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

    @classmethod
    def class_major(cls, train: TrainSet, images: torch.Tensor, ipc: int, **parts) -> "SyntheticSet":
        """A set of ``ipc`` images per class in class-major order, with hard labels, normalised like ``train``."""
        labels = torch.arange(train.num_classes).repeat_interleave(ipc)
        return cls(images=images, labels=labels, classes=list(train.classes), mean=tuple(train.mean),
                   std=tuple(train.std), **parts)

    @property
    def ipc(self) -> int:
        return len(self.labels) // len(self.classes)

    @property
    def input_shape(self) -> tuple:
        return tuple(self.images.shape[1:])

    @property
    def layout(self) -> str | None:
        """For a set of 1-D signals, the data's own layout (NL: (N, L), NCL: (N, C, L)); None for images (and for
        sets written before layouts were recorded)."""
        return self.meta.get("layout")

    def pixels(self) -> torch.Tensor:
        """The images de-normalised, as the data holds them: (N, C, H, W) images; 1-D signals (N, L) or (N, C, L)
        in the data's own layout (``images`` holds them as (N, C, 1, L))."""
        return to_natural(denormalise(self.images, self.mean, self.std), self.layout)

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
        tensors.update(init_state_tensors(self.init_state))
        meta = dict(self.meta, format=SYNSET_FORMAT, classes=list(self.classes), ipc=self.ipc,
                    input_shape=list(self.input_shape), normalisation={"mean": list(self.mean), "std": list(self.std)},
                    size_bytes=self.nbytes())
        save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path) -> "SyntheticSet":
        tensors, meta = load_tensors(path, SYNSET_FORMAT)
        _check_file(tensors, meta, path)
        norm = meta["normalisation"]
        return cls(images=tensors["images"].float(), labels=tensors["labels"].long(), classes=list(meta["classes"]),
                   mean=tuple(norm["mean"]), std=tuple(norm["std"]),
                   label_logits=tensors.get("label_logits"), lrs=tensors.get("lrs"), meta=meta,
                   init_state=init_state_from_tensors(tensors))

    def export_npz(self, path) -> None:
        """Pixel-space images (N, C, H, W) and labels: the `npz:` data format. Values keep their range: synthetic
        pixels may leave [0, 1], and data that was never in [0, 1] (standardised signals) must come back as it was.
        1-D signals come out in the data's own layout, (N, L) or (N, C, L), with a ``layout`` array saying which
        (``pixels``)."""
        x = self.pixels().numpy()
        extra = {"layout": np.array(self.layout)} if self.layout else {}
        with atomic_path(path, ".npz") as tmp:
            np.savez(tmp, x=x, y=self.labels.numpy(), **extra)

    def save_grid(self, path, max_per_class: int = 10) -> None:
        """PNG grid: one row per class (its first ``max_per_class`` images, in any order), de-normalised."""
        plt = pyplot()
        k = len(self.classes)
        rows = [(self.labels == c).nonzero().flatten()[:max_per_class] for c in range(k)]  # any order, any count
        cols = max(1, max(len(r) for r in rows))
        shown = torch.cat(rows)
        pics = torch.zeros_like(self.images)
        pics[shown] = denormalise(self.images[shown], self.mean, self.std)  # only what is drawn
        low, high = pics.amin(dim=(1, 2, 3), keepdim=True), pics.amax(dim=(1, 2, 3), keepdim=True)
        outside = (low < 0) | (high > 1)  # for display only: an image outside [0, 1] is rescaled to it
        pics = torch.where(outside, (pics - low) / (high - low).clamp_min(1e-12), pics)
        fig, axes = plt.subplots(k, cols, figsize=(0.9 * cols + 0.6, 0.9 * k), squeeze=False)
        for c in range(k):
            for j in range(cols):
                ax = axes[c][j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(self.classes[c], rotation=0, labelpad=10, fontsize=8)
                if j >= len(rows[c]):  # a class with fewer images than the widest row
                    if j > 0:
                        ax.axis("off")
                    continue
                img = pics[int(rows[c][j])].permute(1, 2, 0).numpy()
                if img.shape[0] == 1:  # a signal: one line per channel
                    ax.plot(img[0])
                    ax.set_ylim(-0.05, 1.05)
                else:
                    ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        fig.tight_layout(pad=0.2)
        fig.savefig(path, dpi=100)
        plt.close(fig)


def init_state_tensors(init_state: dict | None) -> dict[str, torch.Tensor]:
    """Extra tensors for the set's file: a network's initial state, keys prefixed ``init.``."""
    if init_state is None:
        return {}
    return {INIT_PREFIX + name: t.detach().contiguous() for name, t in init_state.items()}


def init_state_from_tensors(tensors: dict) -> dict | None:
    """The initial state back from a file's tensors (``init.*`` keys), or None when there is none."""
    state = {name[len(INIT_PREFIX):]: t for name, t in tensors.items() if name.startswith(INIT_PREFIX)}
    return state or None


def _check_file(tensors: dict, meta: dict, path) -> None:
    """A set file is checked whole before use: it may be forged."""
    bad = f"{path} is not a valid synthetic set:"
    require("images" in tensors and "labels" in tensors, f"{path} lacks images or labels")
    images, labels = tensors["images"], tensors["labels"]
    require(images.dim() == 4 and images.is_floating_point() and len(images) >= 1,
            f"{bad} images must be a float tensor (N, C, H, W)")
    require(images.shape[1] <= 1024, f"{bad} images have {images.shape[1]} channels, more than distillab takes")
    require(labels.dim() == 1 and len(labels) == len(images) and not labels.is_floating_point(),
            f"{bad} labels must be N whole numbers, one per image")
    classes = meta.get("classes")
    require(isinstance(classes, list) and 2 <= len(classes) <= 100_000 and all(isinstance(c, str) for c in classes),
            f"{bad} 'classes' must be a list of class names")
    require(int(labels.min()) >= 0 and int(labels.max()) < len(classes),
            f"{bad} labels must lie in 0..{len(classes) - 1} (it has {len(classes)} classes)")
    norm = meta.get("normalisation")
    require(isinstance(norm, dict) and all(
        isinstance(norm.get(k), list) and len(norm[k]) == images.shape[1]
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in norm[k])
        for k in ("mean", "std")) and all(v > 0 for v in norm["std"]),
        f"{bad} 'normalisation' must give a mean and a positive std per channel")
    require(bool(torch.isfinite(images).all()), f"{bad} its images hold NaN or infinite values")
    logits = tensors.get("label_logits")
    require(logits is None or (logits.shape == (len(images), len(classes)) and bool(torch.isfinite(logits).all())),
            f"{bad} label_logits must be finite, one row of {len(classes)} per image")
    lrs = tensors.get("lrs")
    require(lrs is None or (lrs.dim() == 1 and len(lrs) >= 1 and bool(torch.isfinite(lrs).all())),
            f"{bad} lrs must be a finite 1-d tensor")
    require(meta.get("method") is None or isinstance(meta.get("method"), str), f"{bad} 'method' must be a name")
    layout = meta.get("layout")
    require(layout is None or (layout in SIGNAL_LAYOUTS and images.shape[2] == 1
                               and (layout == "NCL" or images.shape[1] == 1)),
            f"{bad} 'layout' must be NL (one channel) or NCL, for signals held as (N, C, 1, L)")
    require(isinstance(meta.get("source", {}), dict), f"{bad} 'source' must be a mapping")
