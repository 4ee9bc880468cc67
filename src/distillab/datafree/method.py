"""A data-free method: an options dataclass whose ``run`` makes a transfer set from a teacher alone (no training
image); the registry of methods and ``synthesize()``, which runs one and records how the set was made.

A new method is one file in ``datafree/methods/`` (or your own module, registered with
``distillab.register_datafree``)::

    @register_datafree("uniform")
    @dataclass
    class Uniform(DataFreeMethod):
        def run(self, teacher, n, generator, progress=None):
            x = teacher.normalise(torch.rand(n, *teacher.input_shape, generator=generator))
            return x, teacher.labels(x)

``run`` returns normalised images and one label per image (the class it was made for, or the teacher's answer).
Every random draw comes from ``generator``; ``progress(iteration, loss)`` is told once per iteration of the
synthesis (``iterations`` of them). The student then learns from the teacher on these images (``distillab datafree``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from .. import seeds
from ..errors import require
from ..data import denormalise, normalise
from ..memory import PeakMemory
from ..registry import Registry
from ..specs import Plugin, option_values
from .records import model_digest


class FrozenTeacher:
    """The teacher a data-free method may use: frozen weights, eval mode (BatchNorm on its running statistics),
    gradients flowing to the inputs, and what its file says about them (shape, classes, normalisation). It runs on
    ``device``; methods draw on the CPU (from their generator) and move what they drew there, so a set made on a
    GPU starts from the same draws as one made on the CPU."""

    def __init__(self, model: nn.Module, input_shape, classes, mean, std, device: str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.input_shape, self.classes = tuple(input_shape), list(classes)
        self.mean, self.std = tuple(mean), tuple(std)
        self.digest = model_digest(model)
        linear = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        self._last_linear = linear[-1] if linear else None  # DAFL's feature term reads its input

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        return normalise(pixels, self.mean, self.std)

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        return denormalise(x, self.mean, self.std)

    @torch.no_grad()
    def labels(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """The teacher's answer for each image."""
        return torch.cat([self(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])

    def with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, the input of the last linear layer): DAFL's feature term reads the latter."""
        require(self._last_linear is not None, "the teacher has no linear layer before its outputs")
        found = {}
        hook = self._last_linear.register_forward_hook(lambda m, i, o: found.__setitem__("x", i[0]))
        try:
            logits = self(x)
        finally:
            hook.remove()
        return logits, found["x"].flatten(1)


@dataclass
class DataFreeMethod(Plugin):
    """Base class of data-free methods. Subclasses are dataclasses whose fields are their options."""

    # Options for a seconds-long run on digits: the contract test and `bench --quick` use them.
    quick: ClassVar[dict] = {}

    samples: int = 12_000  # images in the transfer set

    def check(self) -> None:
        require(self.samples >= 2, f"--method {self}: samples must be at least 2, got {self.samples}")

    def check_teacher(self, teacher: FrozenTeacher) -> None:
        """Refuse a teacher this method cannot use (one line that says what would work), before any work."""

    def steps(self, n: int) -> int:
        """How many times ``run`` reports progress for a set of ``n`` images (0 for one-shot methods)."""
        return int(getattr(self, "iterations", 0))

    def run(self, teacher: FrozenTeacher, n: int, generator: torch.Generator,
            progress=None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


DATAFREE = Registry("data-free method", DataFreeMethod, "--method")


def register_datafree(name: str, *, replace: bool = False):
    """Class decorator: make a DataFreeMethod dataclass available as ``distillab datafree --method NAME``."""
    return DATAFREE.register(name, replace=replace)


def parse_datafree(text: str, *, trust_code: bool = True) -> DataFreeMethod:
    """``dafl:iterations=2000``, ``lopes:metadata=meta.safetensors``, ``import:pkg.mod:Name:key=value``."""
    return DATAFREE.parse(text, trust_code=trust_code)


def balanced_labels(num_classes: int, n: int) -> torch.Tensor:
    """``n`` target classes, as even as ``n`` allows, in class order (0 0 1 1 2 ...) for methods that make images
    for a chosen class."""
    return torch.arange(num_classes).repeat_interleave(n // num_classes + 1)[torch.linspace(
        0, num_classes * (n // num_classes + 1) - 1, n).round().long()]


def optimise_inputs(x: torch.Tensor, loss_of, iterations: int, lr: float, progress=None, step: int = 0,
                    betas=(0.9, 0.999)) -> tuple[torch.Tensor, int]:
    """Adam on a batch of inputs ``x`` for ``iterations`` steps, minimising ``loss_of(x)``; each step reported to
    ``progress(step, loss)`` with a running count from ``step``. Returns the optimised inputs and the next step."""
    x = x.detach().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr, betas=betas)
    for _ in range(iterations):
        loss = loss_of(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress:
            progress(step, loss.item())
        step += 1
    return x.detach(), step


MAX_TRANSFER_BYTES = 8 << 30  # checked before anything is allocated: the set, its logits and its student's copy


def synthesize(teacher: FrozenTeacher, method: DataFreeMethod, *, seed: int = 0, progress=None) -> dict:
    """A transfer set of ``method.samples`` images from ``teacher`` alone: {"images", "labels" (what each was made
    as), "teacher_logits", "seconds", "peak", ...}."""
    n = method.samples
    require(n >= teacher.num_classes,
            f"--samples must be at least the number of classes ({teacher.num_classes}), got {n}")
    size = n * math.prod(teacher.input_shape) * 4
    require(size <= MAX_TRANSFER_BYTES, f"--samples {n} would make a transfer set of {size / 2**30:,.1f} GiB (float32 "
                                        f"images), over the {MAX_TRANSFER_BYTES / 2**30:g} GiB distillab holds in "
                                        "memory; ask for fewer samples")
    method.check()
    method.check_teacher(teacher)
    started = time.perf_counter()
    with PeakMemory(teacher.device) as peak:
        images, labels = method.run(teacher, n, seeds.generator(seed, "synthesis"), progress)
    images, labels = images.detach().float().cpu().contiguous(), labels.cpu()
    require(tuple(images.shape) == (n, *teacher.input_shape) and labels.shape == (n,),
            f"{method.name} made images of shape {tuple(images.shape)}, expected {(n, *teacher.input_shape)}")
    require(bool(torch.isfinite(images).all()), f"{method.name} made images with NaN or infinite values; "
                                                 "lower its learning rate")
    with torch.no_grad():
        logits = torch.cat([teacher(images[i:i + 1024].to(teacher.device)).float().cpu() for i in range(0, n, 1024)])
    seconds = round(time.perf_counter() - started, 2)
    return {"images": images, "labels": labels.long(), "teacher_logits": logits, "seconds": seconds,
            "peak": peak.describe(), "method": method.describe(), "options": option_values(method)}

