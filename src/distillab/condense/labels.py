"""How a synthetic set is labelled, after its method has made the images (``--labels``).

- ``hard``: one class per image (the default);
- ``learn``: soft labels learned as logits: a fresh network trains ``steps`` plain gradient steps on the images
  with the current soft labels, its loss on a batch of real images is propagated back through that training to the
  logits (Adam), and again with a new network each iteration (Bohdal, Yang & Hospedales 2020, "Flexible dataset
  distillation: learn labels instead of images");
- ``teacher``: a trained model's outputs on the images (``teacher:PATH`` or ``teacher:model=PATH,temperature=T``).

Every method takes every mode, the random-subset control included: soft labels raise baselines too
(docs/reference.md §2), so a table of learned labels is honest only beside ``random`` with the same labels.
The images are not changed here, and the mode draws from its own random stream: a method makes the same images
under every label mode.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ..data import TrainSet
from ..errors import DistillabError, require
from ..models import build_model
from ..registry import Registry
from ..specs import Plugin
from .unroll import check_unrollable, inverse_softplus, unroll
from .synset import SyntheticSet


@dataclass
class Labels(Plugin):
    """Base class of label modes; subclasses are dataclasses whose fields are their options."""

    # Options for a seconds-long run on digits: the contract test (distillab.testing.check_labels) uses them.
    quick: ClassVar[dict] = {}

    def check_data(self, train: TrainSet, trust_code: bool = False) -> None:
        """Refuse data this mode cannot label, before any work."""

    @property
    def iterations_total(self) -> int:
        return int(getattr(self, "iterations", 0))

    def apply(self, train: TrainSet, synset: SyntheticSet, generator: torch.Generator, progress=None, *,
              trust_code: bool = False) -> SyntheticSet:
        raise NotImplementedError


LABELS = Registry("label mode", Labels, "--labels")


def register_labels(name: str, *, replace: bool = False):
    """Class decorator: make a Labels dataclass available as ``--labels NAME``."""
    return LABELS.register(name, replace=replace)


def parse_labels(text: str, *, trust_code: bool = True) -> Labels:
    """``hard``, ``learn:iterations=300``, ``teacher:PATH`` (shorthand) or ``teacher:model=PATH,temperature=2``."""
    if isinstance(text, str) and text.startswith("teacher:") and "=" not in text:
        return Teacher(model=text[len("teacher:"):])
    return LABELS.parse(text, trust_code=trust_code)


@register_labels("hard")
@dataclass
class Hard(Labels):
    def apply(self, train, synset, generator, progress=None, *, trust_code=False):
        return synset


@register_labels("learn")
@dataclass
class Learn(Labels):
    quick: ClassVar[dict] = dict(iterations=3, steps=2, batch_real=32, model="convnet:width=4,depth=2")

    iterations: int = 300
    steps: int = 10                      # gradient steps of the inner training, each on the whole set
    lr_inner: float = 0.1                # their step size (plain SGD)
    lr: float = 0.01                     # Adam on the logits
    batch_real: int = 256                # real images scoring each inner training
    model: str = "convnet:width=32,depth=3"
    init_logit: float = 3.0              # the own class's logit at the start (the others 0)

    def check(self) -> None:
        require(self.iterations >= 1, f"labels learn: iterations must be at least 1, got {self.iterations}")
        require(self.steps >= 1, f"labels learn: steps must be at least 1, got {self.steps}")
        require(self.lr_inner > 0 and self.lr > 0, "labels learn: lr_inner and lr must be > 0")
        require(self.batch_real >= 1, f"labels learn: batch_real must be at least 1, got {self.batch_real}")
        require(math.isfinite(self.init_logit), "labels learn: init_logit must be a finite number")

    def check_data(self, train, trust_code=False):
        check_unrollable(build_model(self.model, train.input_shape, train.num_classes))

    def apply(self, train, synset, generator, progress=None, *, trust_code=False):
        k = train.num_classes
        images = synset.images.detach().to(train.device)
        if synset.label_logits is not None:  # a method that learned labels itself: start from them
            logits = synset.label_logits.detach().clone().float()
        else:
            logits = self.init_logit * F.one_hot(synset.labels, k).float()
        logits = logits.to(train.device).requires_grad_(True)
        raw_lrs = torch.full((self.steps,), inverse_softplus(self.lr_inner), device=train.device)
        opt = torch.optim.Adam([logits], lr=self.lr)
        live = {"logits": logits, "optimizer": opt, "generator": generator}
        start = progress.restore(live) if progress is not None else 0
        for it in range(start, self.iterations):
            model = build_model(self.model, train.input_shape, k, generator).to(train.device)
            params0 = {n: p.detach() for n, p in model.named_parameters()}
            # steps=1: every inner step uses the whole set; the graph runs back to the logits only
            params = unroll(model, params0, images, torch.softmax(logits, 1), raw_lrs, 1, create_graph=True,
                            num_classes=k)
            pick = torch.randperm(len(train), generator=generator)[:self.batch_real]
            out = functional_call(model, {**params, **dict(model.named_buffers())}, (train.read(pick),))
            loss = F.cross_entropy(out, train.y[pick.to(train.y.device)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise DistillabError(f"learning labels diverged at iteration {it} (loss {value}); lower lr or "
                                     "lr_inner")
            if progress is not None:
                progress(it, value, live)
        synset.label_logits = logits.detach().cpu()
        return synset


@register_labels("teacher")
@dataclass
class Teacher(Labels):
    model: str = ""                      # a model file (model.safetensors) trained on the same data
    temperature: float = 1.0             # its logits are divided by this before the softmax

    def check(self) -> None:
        require(self.model != "", "--labels teacher needs a model file: teacher:PATH/model.safetensors")
        require(self.temperature > 0 and math.isfinite(self.temperature),
                f"labels teacher: temperature must be > 0, got {self.temperature}")

    def load(self, train: TrainSet, trust_code: bool):
        from ..kd.teachers import load_teacher_model

        require(Path(self.model).is_file(), f"--labels teacher: no model file at {self.model}")
        model, _ = load_teacher_model(self.model, train, "teacher", trust_code=trust_code)
        return model

    def check_data(self, train, trust_code=False):
        self.load(train, trust_code)

    def apply(self, train, synset, generator, progress=None, *, trust_code=False):
        model = self.load(train, trust_code).to(train.device).eval()
        with torch.no_grad():
            logits = torch.cat([model(chunk.to(train.device)).float().cpu()
                                for chunk in synset.images.split(512)])
        synset.label_logits = logits / self.temperature
        synset.meta["teacher"] = {"file": Path(self.model).name,
                                  "sha256": hashlib.sha256(Path(self.model).read_bytes()).hexdigest()}
        return synset
