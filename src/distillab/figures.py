"""Figures: training curves, the dark-knowledge picture, a matching-loss curve (the synthetic-set grid lives with
``SyntheticSet``). Everything draws with matplotlib's Agg backend, set up in one place."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .data import denormalise


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(histories: dict[str, list[dict]], path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, hist in histories.items():
        ax.plot([h["epoch"] for h in hist], [100 * h["val_accuracy"] for h in hist], marker=".", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pick_dark_knowledge_examples(probs: torch.Tensor, labels: torch.Tensor, count: int = 4,
                                 prefer=((9, 4), (4, 9), (7, 1), (3, 5))) -> list[int]:
    """Correctly classified test images whose runner-up class is most likely: where dark knowledge shows.

    The seed's example first: a 9 that the teacher finds 4-like.
    """
    top2 = probs.topk(2, dim=1)
    correct = top2.indices[:, 0] == labels
    runner_up = torch.where(correct, top2.values[:, 1], torch.zeros_like(top2.values[:, 1]))
    chosen: list[int] = []
    for true, other in prefer:
        mask = correct & (labels == true) & (top2.indices[:, 1] == other)
        if mask.any() and len(chosen) < count:
            scores = torch.where(mask, runner_up, torch.full_like(runner_up, -1))
            chosen.append(int(scores.argmax()))
    for i in runner_up.argsort(descending=True).tolist():
        if len(chosen) >= count:
            break
        if i not in chosen and int(labels[i]) not in [int(labels[j]) for j in chosen]:
            chosen.append(i)
    return chosen[:count]


def plot_dark_knowledge(images, logits, labels, classes, indices, temperatures, path: Path, mean, std) -> list[dict]:
    """Rows of (image, softened teacher probabilities at each T); returns what it drew."""
    plt = pyplot()
    rows = len(indices)
    fig, axes = plt.subplots(rows, 1 + len(temperatures), figsize=(2.2 + 2.6 * len(temperatures), 2.0 * rows),
                             squeeze=False)
    drawn = []
    pictures = denormalise(images[indices], mean, std).clamp(0, 1)
    for r, i in enumerate(indices):
        ax = axes[r][0]
        img = pictures[r].permute(1, 2, 0).numpy()
        ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        ax.set_title(f"label {classes[int(labels[i])]}", fontsize=9)
        ax.axis("off")
        entry = {"test_index": int(i), "label": classes[int(labels[i])], "probabilities": {}}
        for c, t in enumerate(temperatures):
            p = torch.softmax(logits[i] / t, 0)
            entry["probabilities"][f"T={t:g}"] = [round(float(v), 4) for v in p]
            ax = axes[r][c + 1]
            ax.bar(range(len(p)), p.numpy(), color=["C3" if k == int(labels[i]) else "C0" for k in range(len(p))])
            ax.set_xticks(range(len(p)))
            ax.set_xticklabels(classes, fontsize=7)
            ax.set_ylim(0, 1)
            if r == 0:
                ax.set_title(f"teacher, T = {t:g}", fontsize=9)
        drawn.append(entry)
    fig.suptitle("Dark knowledge: the teacher's softened probabilities", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def plot_loss(values, path, title):
    """A matching loss per iteration, log scale."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(values) + 1), values)
    ax.set_xlabel("iteration")
    ax.set_ylabel("matching loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_matrix(matrix: dict, path, title: str) -> None:
    """A heatmap of accuracies (``{rows, columns, mean, std}``, fractions): rows the set a model was condensed
    with, columns the model evaluated on, each cell annotated with mean ± std in %."""
    import numpy as np

    plt = pyplot()
    mean = 100 * np.asarray(matrix["mean"], dtype=float)
    std = 100 * np.asarray(matrix["std"], dtype=float)
    rows, columns = list(matrix["rows"]), list(matrix["columns"])
    fig, ax = plt.subplots(figsize=(2.0 + 1.6 * len(columns), 1.4 + 0.7 * len(rows)))
    image = ax.imshow(mean, cmap="viridis", aspect="auto")
    low, high = float(np.nanmin(mean)), float(np.nanmax(mean))
    for r in range(len(rows)):
        for c in range(len(columns)):
            dark = high > low and mean[r, c] < (low + high) / 2  # light text on the dark end of viridis
            ax.text(c, r, f"{mean[r, c]:.1f}\n± {std[r, c]:.1f}", ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels(columns, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    ax.set_xlabel("evaluated on")
    ax.set_ylabel("condensed with")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="test accuracy (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
