"""A dark-knowledge meter: what a teacher's soft outputs carry (``distillab inspect``).

Accuracy, calibration (ECE), the entropy of the softened wrong-class distribution per temperature, the most
confused class pairs, and signs of label smoothing (Mueller et al. 2019), which erases what distillation transfers.
"""

from __future__ import annotations

import numpy as np
import torch

from .functional import TINY


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += float(mask.float().mean()) * abs(float(conf[mask].mean()) - float(correct[mask].mean()))
    return ece


def non_target_entropy(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean entropy (in bits, relative to its maximum log2(K-1)) of the softened distribution over the wrong
    classes: how much relative information the teacher's 'dark knowledge' carries at this temperature."""
    k = logits.shape[1]
    mask = torch.ones_like(logits, dtype=torch.bool)
    mask[torch.arange(len(labels)), labels] = False
    others = logits[mask].view(len(labels), k - 1) / temperature
    p = torch.softmax(others, 1)
    h = -(p * p.clamp_min(TINY).log()).sum(1) / np.log(k - 1)
    return float(h.mean())


def dark_knowledge_report(logits: torch.Tensor, labels: torch.Tensor, classes: list[str], meta: dict, *,
                          temperatures=(1, 2, 4, 8, 20), top_pairs: int = 5) -> dict:
    """The meter's figures from a teacher's test-set logits and its file's metadata (its recipe)."""
    probs = torch.softmax(logits, 1)
    pred = probs.argmax(1)
    k = len(classes)
    confusion = torch.zeros(k, k)
    confusion.index_put_((labels, pred), torch.ones(len(labels)), accumulate=True)
    # soft confusion: mean probability the teacher gives class j on images of class i (dark knowledge, not errors)
    soft = torch.zeros(k, k).index_add_(0, labels, probs) / torch.bincount(labels, minlength=k).clamp_min(1)[:, None]
    pairs = [(i, j) for i in range(k) for j in range(k) if i != j]
    pairs.sort(key=lambda ij: -(float(soft[ij[0], ij[1]]) + float(soft[ij[1], ij[0]])))
    seen, confused = set(), []
    for i, j in pairs:
        if (j, i) in seen:
            continue
        seen.add((i, j))
        confused.append({"classes": [classes[i], classes[j]], "errors": int(confusion[i, j] + confusion[j, i]),
                         "mean_probability": round(float(soft[i, j] + soft[j, i]) / 2, 5)})
        if len(confused) == top_pairs:
            break
    # A label-smoothed teacher squeezes its wrong-class logits together (Mueller et al. 2019): their spread,
    # relative to the gap to the top logit, is small and nearly the same for every image.
    top = logits.max(1).values
    mask = torch.ones_like(logits, dtype=torch.bool)
    mask[torch.arange(len(pred)), pred] = False
    others = logits[mask].view(len(pred), k - 1)
    spread = float((others.std(1) / (top - others.mean(1)).clamp_min(1e-6)).median())
    entropy = {f"T={t:g}": round(non_target_entropy(logits, labels, t), 4) for t in temperatures}
    trained_ls = float((meta.get("recipe") or {}).get("label_smoothing", 0) or 0)
    looks_smoothed = spread < 0.08
    # suggest temperatures where the wrong-class distribution is informative: neither a spike nor uniform
    useful = [t for t in temperatures if 0.5 <= entropy[f"T={t:g}"] <= 0.97]
    suggestion = [min(useful), max(useful)] if useful else [min(temperatures), max(temperatures)]
    acc = float((pred == labels).float().mean())
    report = {"test_accuracy": acc, "test_errors": int((pred != labels).sum()),
              "ece": round(expected_calibration_error(probs, labels), 5), "mean_confidence": round(float(probs.max(1).values.mean()), 5),
              "non_target_entropy": entropy, "most_confused_pairs": confused,
              "label_smoothing_in_recipe": trained_ls, "non_target_logit_spread": round(spread, 4),
              "looks_label_smoothed": looks_smoothed, "suggested_temperature_range": suggestion}
    warn = []
    if trained_ls > 0 or looks_smoothed:
        warn.append("this teacher was trained with label smoothing" if trained_ls > 0 else
                    "this teacher's wrong-class logits are unusually uniform: it looks label-smoothed")
        warn.append("label smoothing erases the dark knowledge distillation needs (Mueller et al. 2019)")
    report["warnings"] = warn
    return report
