"""``gm``: gradient matching (dataset condensation, Zhao, Mopuri & Bilen 2021; docs/reference.md §2).

Each iteration draws a fresh network. Then, ``outer`` times: for every class, the gradient of the loss on a real
batch of the class and on the class's synthetic images are compared layer by layer -- the distance is the sum over
output channels of (1 - cosine) of the two gradients (bias gradients are left out, as in the reference) -- and the
summed distance moves the synthetic images; between two such steps the network trains ``inner`` steps on the
synthetic set. The reference's loop sizes per IPC are the default (``outer``/``inner`` 0 = by IPC: 1 -> 1/1,
10 -> 10/50, 50 -> 50/10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ...data import TrainSet
from ...dsa import DSA
from ...errors import require
from ...models import build_model, stateful_layers
from ..method import Method, Progress, initial_images, register_method
from ..synset import SyntheticSet

LOOPS = {1: (1, 1), 10: (10, 50), 50: (50, 10)}


def loops_for(ipc: int) -> tuple[int, int]:
    """The reference's (outer, inner) loop sizes for an IPC; between its settings, the nearest smaller one."""
    return LOOPS[max(k for k in LOOPS if k <= ipc)]


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

    def check(self) -> None:
        require(self.iterations >= 1, f"{self.name} iterations must be at least 1, got {self.iterations}")
        require(self.outer >= 0 and self.inner >= 0, f"{self.name} outer and inner must be >= 0 (0: by IPC)")
        require(self.lr_img > 0 and self.lr_net > 0, f"{self.name} lr_img and lr_net must be > 0")
        require(0 <= self.momentum < 1, f"{self.name} momentum must be in [0, 1), got {self.momentum}")
        require(self.batch_real >= 1 and self.batch_train >= 1, f"{self.name} batch sizes must be at least 1")

    def check_data(self, train: TrainSet) -> None:
        net = build_model(self.model, train.input_shape, train.num_classes)
        stateful = stateful_layers(net)
        require(not stateful, f"gradient matching compares per-class gradients of one network; '{self.model}' has "
                              f"batch norm or dropout ({', '.join(stateful[:3])}), whose batch statistics or masks "
                              "differ between the real and the synthetic batch: use norm=instance")

    def run(self, train, ipc, generator, progress=None):
        images = initial_images(train, ipc, self.init, generator)
        augment = DSA.for_inputs(train.input_shape) if self.dsa else None
        images = gradient_matching(train, images, ipc, self, generator, augment, progress)
        return SyntheticSet.class_major(train, images, ipc,
                                        meta={"dsa_families": augment.families} if augment else {})


def gradient_matching(train: TrainSet, images: torch.Tensor, ipc: int, cfg: GM, g: torch.Generator, augment=None,
                      progress: Progress | None = None) -> torch.Tensor:
    progress = progress if isinstance(progress, Progress) else Progress(progress)
    k = train.num_classes
    default_outer, default_inner = loops_for(ipc)
    outer, inner = cfg.outer or default_outer, cfg.inner or default_inner
    syn = images.clone().requires_grad_(True)
    labels = torch.arange(k, device=syn.device).repeat_interleave(ipc)
    opt_img = torch.optim.SGD([syn], lr=cfg.lr_img, momentum=cfg.momentum)
    by_class = train.class_indices()
    live = {"images": syn, "optimizer": opt_img, "generator": g}
    for it in range(progress.restore(live), cfg.iterations):
        net = build_model(cfg.model, train.input_shape, k, g).to(train.device).train()
        params = [p for p in net.parameters() if p.requires_grad]
        opt_net = torch.optim.SGD(net.parameters(), lr=cfg.lr_net)
        total = 0.0
        for step in range(outer):
            loss = syn.new_zeros(())
            for c, idx in enumerate(by_class):
                real = train.read(idx[torch.randint(len(idx), (min(cfg.batch_real, len(idx)),), generator=g)])
                mine = syn[c * ipc:(c + 1) * ipc]
                if augment is not None:  # siamese: one draw for the class's real and synthetic images
                    params_aug = augment.sample(1, g)
                    real, mine = augment.apply(real, params_aug), augment.apply(mine, params_aug)
                real_loss = F.cross_entropy(net(real), torch.full((len(real),), c, device=real.device))
                grads_real = [t.detach() for t in torch.autograd.grad(real_loss, params)]
                syn_loss = F.cross_entropy(net(mine), labels[c * ipc:(c + 1) * ipc])
                grads_syn = torch.autograd.grad(syn_loss, params, create_graph=True)
                loss = loss + gradient_distance(grads_real, list(grads_syn))
            opt_img.zero_grad(set_to_none=True)
            loss.backward()
            opt_img.step()
            total += float(loss.detach())
            if step == outer - 1:
                break
            pool = syn.detach().clone()  # the network learns on the synthetic set between matching steps
            for _ in range(inner):
                pick = torch.randperm(len(pool), generator=g)[:cfg.batch_train]
                xb = pool[pick]
                if augment is not None:
                    xb = augment(xb, g)
                step_loss = F.cross_entropy(net(xb), labels[pick])
                opt_net.zero_grad(set_to_none=True)
                step_loss.backward()
                opt_net.step()
        progress(it, total / outer, live)
    return syn.detach()
