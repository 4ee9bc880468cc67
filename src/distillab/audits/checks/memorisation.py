"""Memorisation: are synthetic images nearer the training images they were made from than real images the
condensation never saw? A copy (or a light edit) of a training image carries that image out with the set."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...errors import require
from ..audit import Audit, register_audit


def nearest(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index) of each query's nearest row of ``bank`` (Euclidean, float64 sums)."""
    q = queries.flatten(1).double()
    best = torch.full((len(q),), math.inf, dtype=torch.float64)
    where = torch.zeros(len(q), dtype=torch.long)
    for start in range(0, len(bank), chunk):
        d = torch.cdist(q, bank[start:start + chunk].flatten(1).double())
        value, idx = d.min(1)
        better = value < best
        best = torch.where(better, value, best)
        where = torch.where(better, idx + start, where)
    return best, where


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@register_audit("memorisation")
@dataclass
class Memorisation(Audit):
    """For each synthetic image: its distance to the nearest training image (the pool it was condensed from) and
    to the nearest held-out image (the validation split: drawn from the same data as the pool, never read by a
    condensation; the test split may come from elsewhere -- MNIST's are other writers -- which would bias the
    comparison). ``copy_ratio``: an image at most this fraction of its held-out distance from a training image is
    a near copy (flagged). Because a bigger pool is nearer by chance, the fair test draws as many training images
    as there are held-out ones: without memorisation, half of the images are nearer that sample than the held-out
    set."""

    needs = ("data",)
    privacy = True
    copy_ratio: float = 0.1

    def check(self) -> None:
        require(0 < self.copy_ratio < 1, f"memorisation: copy_ratio must lie in (0, 1), got {self.copy_ratio}")

    def run(self, inputs, generator):
        splits, synset = inputs.splits, inputs.synset
        held = splits.val.x
        pool = splits.train.x
        d_train, at = nearest(synset.images, pool)
        d_held, _ = nearest(synset.images, held)
        sample = torch.randperm(len(pool), generator=generator)[:len(held)]
        d_matched, _ = nearest(synset.images, pool[sample])
        ratio = d_train / d_held.clamp_min(1e-12)
        copies = (ratio <= self.copy_ratio).nonzero().flatten().tolist()
        closer = int((d_matched < d_held).sum())
        n = len(ratio)
        low, high = wilson(closer, n)
        quart = lambda t: [round(float(v), 4) for v in torch.quantile(t, torch.tensor([0.25, 0.5, 0.75], dtype=t.dtype))]
        stated = inputs.stated_labels()
        rows = [{"index": i, "class": synset.classes[int(stated[i])], "train_distance": round(float(d_train[i]), 4),
                 "held_out_distance": round(float(d_held[i]), 4), "train_index": int(splits.train_index[at[i]])}
                for i in copies]
        summary = (f"{len(copies)} of {n} images are near copies of a training image (distance <= "
                   f"{self.copy_ratio:g} x the nearest held-out); {closer} of {n} are nearer a size-matched "
                   f"training sample than the held-out set (95% CI {100 * low:.0f}-{100 * high:.0f}%; 50% without "
                   f"memorisation)")
        finding = {"flagged": bool(copies), "summary": summary, "copies": rows, "images": n,
                   "pool_images": len(pool), "held_out_images": len(held),
                   "distance_quartiles": {"train": quart(d_train), "train_size_matched": quart(d_matched),
                                          "held_out": quart(d_held), "ratio": quart(ratio)},
                   "nearer_training_sample": {"count": closer, "fraction": round(closer / n, 4),
                                              "ci95": [round(low, 4), round(high, 4)]}}
        if inputs.folder is not None:
            _plot(ratio, self.copy_ratio, inputs.folder / "memorisation.png")
            finding["figure"] = "memorisation.png"
        return finding

    def markdown(self, finding):
        q = finding["distance_quartiles"]
        return [finding["summary"] + ".", "", "| distance to nearest | 25% | median | 75% |", "|---|---:|---:|---:|",
                *(f"| {name} | " + " | ".join(f"{v:.3f}" for v in q[key]) + " |"
                  for name, key in (("training image (whole pool)", "train"),
                                    ("training image (size-matched sample)", "train_size_matched"),
                                    ("held-out image", "held_out"), ("ratio train / held-out", "ratio")))]


def _plot(ratio: torch.Tensor, copy_ratio: float, path) -> None:
    from ...figures import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(ratio.numpy(), bins=40, color="tab:blue")
    ax.axvline(copy_ratio, color="tab:red", linestyle="--", label=f"near copy (<= {copy_ratio:g})")
    ax.set_xlabel("distance to nearest training / nearest held-out image")
    ax.set_ylabel("synthetic images")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
