"""A synthetic set: a few images per class that stand in for a training set, in one self-describing file.

``SyntheticSet`` holds normalised images, hard labels or learnable soft-label logits, optional learned per-step
learning rates and the network initialisation it was made for (bptt, fixed init), and the metadata that makes
``synset.safetensors`` self-describing (method, IPC, source data and its hash, input shape, normalisation, recipe).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data import TrainSet, denormalise
from ..errors import require
from ..figures import pyplot
from ..files import load_tensors, save_tensors

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
        require("images" in tensors and "labels" in tensors, f"{path} lacks images or labels")
        norm = meta.get("normalisation") or {}
        return cls(images=tensors["images"].float(), labels=tensors["labels"].long(), classes=meta["classes"],
                   mean=tuple(norm.get("mean", [0.0])), std=tuple(norm.get("std", [1.0])),
                   label_logits=tensors.get("label_logits"), lrs=tensors.get("lrs"), meta=meta,
                   init_state=init_state_from_tensors(tensors))

    def export_npz(self, path) -> None:
        """Pixel-space images (N, C, H, W) in [0, 1] and labels: the `npz:` data format."""
        x = denormalise(self.images, self.mean, self.std).clamp(0, 1).numpy()
        np.savez(path, x=x, y=self.labels.numpy())

    def save_grid(self, path, max_per_class: int = 10) -> None:
        """PNG grid: one row per class, de-normalised."""
        plt = pyplot()
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


def dataset_hash(train: TrainSet) -> str:
    """sha256 (first 16 hex digits) of the training split the set was condensed from."""
    h = hashlib.sha256()
    h.update(train.x.numpy().tobytes())
    h.update(train.y.numpy().tobytes())
    return h.hexdigest()[:16]


def init_state_tensors(init_state: dict | None) -> dict[str, torch.Tensor]:
    """Extra tensors for the set's file: a network's initial state, keys prefixed ``init.``."""
    if init_state is None:
        return {}
    return {INIT_PREFIX + name: t.detach().contiguous() for name, t in init_state.items()}


def init_state_from_tensors(tensors: dict) -> dict | None:
    """The initial state back from a file's tensors (``init.*`` keys), or None when there is none."""
    state = {name[len(INIT_PREFIX):]: t for name, t in tensors.items() if name.startswith(INIT_PREFIX)}
    return state or None
