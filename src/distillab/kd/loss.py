"""A distillation loss term: an options dataclass that computes named loss values; the registry of terms.

A term is registered by name and built from ``NAME:key=value,...`` (``--loss``): its dataclass fields are its
options, their defaults the only defaults, ``check`` their only checks. Each call returns a dict of named,
already weighted values (``{"kd_T4": ...}``) that the training loop sums and logs one by one.

A new term is one file in ``kd/losses/`` (or your own module, registered with ``distillab.register_loss``)::

    @register_loss("cosine")
    @dataclass
    class Cosine(LossTerm):
        distance_like = True
        def __call__(self, batch):
            return {"cosine": self.w * (1 - F.cosine_similarity(batch.student_logits, batch.teacher.logits)).mean()}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..errors import require
from ..registry import Registry
from ..specs import Plugin
from ..training import Schedule
from .teachers import TeacherBatch


@dataclass
class LossInputs:
    """What one training step offers a loss term."""

    student_logits: torch.Tensor
    labels: torch.Tensor | None
    teacher: TeacherBatch
    student_features: dict[str, torch.Tensor]
    schedule: Schedule = Schedule()  # where training stands (epoch, step, their totals): for warm-ups
    idx: torch.Tensor | None = None  # each row's position in the training set (a memory bank's key: crd)
    examples: int | None = None      # how many examples the training set holds (positions are 0..examples-1)


@dataclass
class LossTerm(Plugin):
    """Base class of loss terms. Subclasses are dataclasses; ``w`` weights every value they return."""

    # True when the term is zero wherever the student's outputs (and features) equal the teacher's; the
    # contract test checks it. A term for which it depends on the options makes it a property (kd with noise).
    distance_like: ClassVar[bool] = False
    # Options under which the term works between two small ConvNets (convnet:width=4,depth=2): the contract test
    # (distillab.testing.check_loss_term) uses them.
    example: ClassVar[dict] = {}

    w: float = 1.0

    def check(self) -> None:
        """Refuse impossible options (one line, naming the option)."""
        require(self.w >= 0, f"--loss {self}: w must be >= 0, got {self.w}")

    def student_taps(self) -> list[str]:
        """Module paths of the student whose outputs this term reads (forward hooks)."""
        return []

    def teacher_taps(self) -> list[str]:
        return []

    def check_teacher(self, teacher) -> None:
        """Refuse (or warn about) a teacher this term cannot learn from; ``teacher.kind`` is logits, logprobs or
        topk, ``teacher.gives_features`` says whether its feature taps can be read."""

    def build(self, sample: LossInputs, generator: torch.Generator) -> list[nn.Module]:
        """Called once before training, for every term: learned parts (connectors), made from one sample batch,
        whose parameters train with the student, and the term's own random streams (``generators``). Initial
        weights and the streams' seeds come from ``generator`` only."""
        return []

    def generators(self) -> dict[str, torch.Generator]:
        """The random streams the term draws from while training (made in ``build``), by name. The training loop
        checkpoints their state with the model's, so a resumed run draws what an uninterrupted one would."""
        return {}

    def state(self) -> dict[str, nn.Module]:
        """What else the term changes while training, not learned (made in ``build``), by name: modules whose
        buffers the training loop checkpoints with the run and puts back after a probe (crd's memory banks)."""
        return {}

    def __call__(self, batch: LossInputs) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@dataclass
class FeatureTerm(LossTerm):
    """A term on intermediate features: ``student``/``teacher`` are module paths or ``penultimate``."""

    student: str = "penultimate"
    teacher: str = "penultimate"

    def student_taps(self) -> list[str]:
        return [self.student]

    def teacher_taps(self) -> list[str]:
        return [self.teacher]

    def check_teacher(self, teacher) -> None:
        require(getattr(teacher, "gives_features", False),
                f"the {self.name} loss needs a teacher model (features), not a black box")

    def features(self, batch: LossInputs) -> tuple[torch.Tensor, torch.Tensor]:
        return batch.student_features[self.student], batch.teacher.features[self.teacher]

    def feature_maps(self, batch: LossInputs, what: str, same_size: bool = False):
        """The taps' features, refused in one line unless both are (N, C, H, W) maps (``what``: what the term does
        with them, for the message) and, with ``same_size``, of one spatial size."""
        s, t = self.features(batch)
        shapes = (f"the student's '{self.student}' gives {tuple(s.shape[1:])} and the teacher's '{self.teacher}' "
                  f"{tuple(t.shape[1:])}")
        require(s.dim() == 4 and t.dim() == 4,
                f"the {self.name} loss {what}, but {shapes}; tap convolutional layers (--tap student=PATH --tap "
                f"teacher=PATH, or {self.name}:student=PATH,teacher=PATH)")
        require(not same_size or s.shape[2:] == t.shape[2:],
                f"the {self.name} loss needs feature maps of one spatial size, but {shapes}; tap layers of one size")
        return s, t


@dataclass
class MultiFeatureTerm(LossTerm):
    """A term on several layers at once: ``student``/``teacher`` are module paths joined by ``+``
    (``student=layer1+layer2+layer3``), read pairwise in order."""

    student: str = "penultimate"
    teacher: str = "penultimate"

    def check(self) -> None:
        super().check()
        s, t = self.student_taps(), self.teacher_taps()
        require(all(s) and all(t), f"--loss {self}: student and teacher are module paths joined by '+'")
        require(len(s) == len(t), f"--loss {self}: {len(s)} student layer(s) but {len(t)} teacher layer(s); "
                                  "pair them one to one")

    def student_taps(self) -> list[str]:
        return self.student.split("+")

    def teacher_taps(self) -> list[str]:
        return self.teacher.split("+")

    def check_teacher(self, teacher) -> None:
        require(getattr(teacher, "gives_features", False),
                f"the {self.name} loss needs a teacher model (features), not a black box")

    def feature_pairs(self, batch: LossInputs) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(student, teacher) features of each pair of taps, in order."""
        return [(batch.student_features[s], batch.teacher.features[t])
                for s, t in zip(self.student_taps(), self.teacher_taps())]


LOSSES = Registry("loss", LossTerm, "--loss")


def register_loss(name: str, *, replace: bool = False):
    """Class decorator: make a LossTerm dataclass available as ``--loss NAME``."""
    return LOSSES.register(name, replace=replace)


def parse_loss(text: str, student_tap: str = "penultimate", teacher_tap: str = "penultimate", *,
               trust_code: bool = True) -> LossTerm:
    """``kd:T=4,w=0.9``, ``ce:w=0.1,smoothing=0.1``, ``rkd:distance=25,angle=50``, ``import:pkg.mod:Name:w=1``.
    ``student_tap``/``teacher_tap`` (the --tap flags) are the defaults of feature terms' ``student``/``teacher``."""
    return LOSSES.parse(text, trust_code=trust_code, defaults={"student": student_tap, "teacher": teacher_tap})
