"""Loop bodies as the reference dataset-distillation code writes them, for ``bench perf`` to time in the same
process as distillab's, at the same allocator setting, in alternating bursts.

The operations are those the reference-equivalence tests prove distillab's loops equal to (tests/
test_reference_equivalence.py); what differs is how the reference arranges them: its DM iteration embeds class after
class (one real batch, then that class's synthetic images, each its own forward pass, the real one in full), where
distillab embeds all classes in one batched pass per side and the real images in cache-sized chunks. Own code: the
reference's order of work, not its text. The network is distillab's ConvNet, which equals the reference's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def protocol_epoch(net, opt, x: torch.Tensor, y: torch.Tensor, augment=None, g: torch.Generator | None = None,
                   batch_size: int = 256) -> None:
    """One training epoch of the reference's evaluation: shuffled batches, augmentation drawn per batch, SGD."""
    order = torch.randperm(len(x), generator=g)
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        xb = x[idx]
        if augment is not None:
            xb = augment.apply(xb, augment.sample(len(xb), g))
        loss = F.cross_entropy(net(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def dm_iteration(net, syn: torch.Tensor, opt_img, reals: list[torch.Tensor], ipc: int, augment=None,
                 draws: list | None = None) -> float:
    """One DM iteration as the reference loops it: per class, the real batch and the class's synthetic images
    augmented alike and embedded, the squared distance of their means added up; one step on the images."""
    loss = syn.new_zeros(())
    for c, real in enumerate(reals):
        img_syn = syn[c * ipc:(c + 1) * ipc]
        if augment is not None:
            real, img_syn = augment.apply(real, draws[c]), augment.apply(img_syn, draws[c])
        out_real = net.features(real).flatten(1).detach()
        out_syn = net.features(img_syn).flatten(1)
        loss = loss + ((out_real.mean(0) - out_syn.mean(0)) ** 2).sum()
    opt_img.zero_grad()
    loss.backward()
    opt_img.step()
    return float(loss.detach())


def gm_matching_step(net, syn: torch.Tensor, opt_img, reals: list[torch.Tensor], ipc: int, distance,
                     augment=None, draws: list | None = None) -> float:
    """One gradient-matching step as the reference loops it: per class, the gradient of the real batch's loss
    (the whole batch at once) and of the class's synthetic images' loss (with its graph), their distance added
    up; one step on the images. ``distance``: the layer-wise distance of the two gradients."""
    params = list(net.parameters())
    loss = syn.new_zeros(())
    for c, real in enumerate(reals):
        img_syn = syn[c * ipc:(c + 1) * ipc]
        if augment is not None:
            real, img_syn = augment.apply(real, draws[c]), augment.apply(img_syn, draws[c])
        lab_real = torch.full((len(real),), c, dtype=torch.long)
        gw_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), lab_real), params)]
        lab_syn = torch.full((ipc,), c, dtype=torch.long)
        gw_syn = torch.autograd.grad(F.cross_entropy(net(img_syn), lab_syn), params, create_graph=True)
        loss = loss + distance(gw_real, list(gw_syn))
    opt_img.zero_grad()
    loss.backward()
    opt_img.step()
    return float(loss.detach())
