"""Plain SGD unrolled functionally on a synthetic set, differentiable back to the images, the labels and the
learning rates: the core of bptt (the images and rates) and of learned labels (``labels.py``).

Only models without batch norm or active dropout can be unrolled (lenet5, mlp, convnet with instance/layer norm):
the unroll is functional (``torch.func.functional_call`` on a params dict), buffers pass through unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..errors import require
from ..models import stateful_layers
from ..training import is_soft, soft_cross_entropy


def inverse_softplus(y: float) -> float:
    """The raw value whose softplus is ``y`` (> 0)."""
    require(y > 0, f"a learning rate must be > 0, got {y}")
    return y + math.log(-math.expm1(-y))  # log(exp(y) - 1), stable for small and large y


def check_unrollable(model: nn.Module) -> None:
    """Batch norm (running statistics) and dropout (random masks) cannot be unrolled here."""
    stateful = stateful_layers(model)
    require(not stateful, f"BPTT cannot unroll a model with batch norm or dropout ({', '.join(stateful)}); "
                          "use lenet5, mlp without dropout, or convnet with norm=instance")


def step_batches(labels: torch.Tensor, num_classes: int, steps: int) -> list[torch.Tensor]:
    """Which synthetic images each of the ``steps`` GD steps (per epoch) uses.

    If every class has ``ipc`` images and ``ipc`` is a multiple of ``steps``, step ``s`` takes its own
    ``ipc / steps`` images of every class (100 images = 10 steps x 1 image per class); otherwise every step uses
    all images (10 images with 10 steps reuse the same 10 images each step). Soft labels count by their argmax.
    """
    require(steps >= 1, f"steps must be >= 1, got {steps}")
    hard = labels.argmax(1) if is_soft(labels) else labels.long()
    everything = torch.arange(len(hard))
    per_class = [torch.nonzero(hard == c, as_tuple=True)[0] for c in range(num_classes)]
    counts = {len(idx) for idx in per_class}
    if len(counts) != 1:
        return [everything] * steps
    ipc = counts.pop()
    if ipc == 0 or ipc % steps != 0:
        return [everything] * steps
    per = ipc // steps
    return [torch.cat([idx[s * per:(s + 1) * per] for idx in per_class]) for s in range(steps)]


def unroll(model: nn.Module, params0: dict, images: torch.Tensor, labels: torch.Tensor, raw_lrs: torch.Tensor,
           steps: int, create_graph: bool = True, num_classes: int | None = None) -> dict:
    """Functional SGD unroll of ``len(raw_lrs)`` steps on the synthetic set.

    Step ``s`` uses batch ``s % steps`` of ``step_batches`` and learning rate ``softplus(raw_lrs[s])``. With
    ``create_graph`` the returned params are differentiable w.r.t. ``images``, ``raw_lrs`` (and ``params0`` where
    they require grad); without it the unroll is a plain, detached training run. Buffers pass through unchanged.
    Returns the final params dict (name -> tensor).
    """
    check_unrollable(model)
    require(raw_lrs.dim() == 1 and len(raw_lrs) >= 1, f"raw_lrs must be a 1-d tensor, got shape {tuple(raw_lrs.shape)}")
    require(len(labels) == len(images), f"{len(images)} images but {len(labels)} labels")
    names = [name for name, _ in model.named_parameters()]
    missing = [n for n in names if n not in params0]
    require(not missing, f"params0 lacks {', '.join(missing[:3])}")
    if num_classes is None:
        num_classes = labels.shape[1] if is_soft(labels) else int(labels.max()) + 1
    batches = step_batches(labels, num_classes, steps)
    buffers = dict(model.named_buffers())
    lrs = F.softplus(raw_lrs)
    if create_graph:
        params = {n: p if p.requires_grad else p.detach().requires_grad_(True) for n, p in params0.items() if n in names}
    else:
        images, labels, lrs = images.detach(), labels.detach(), lrs.detach()
        params = {n: params0[n].detach().clone().requires_grad_(True) for n in names}
    for s in range(len(raw_lrs)):
        idx = batches[s % steps]
        logits = functional_call(model, {**params, **buffers}, (images[idx],))
        loss = soft_cross_entropy(logits, labels[idx])
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph)
        if create_graph:
            params = {n: params[n] - lrs[s] * g for n, g in zip(names, grads)}
        else:
            with torch.no_grad():
                params = {n: (params[n] - lrs[s] * g).requires_grad_(True) for n, g in zip(names, grads)}
    if not create_graph:
        params = {n: p.detach() for n, p in params.items()}
    return params
