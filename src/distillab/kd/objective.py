"""The distillation objective: a teacher and a list of loss terms, summed as named values.

``Hinton`` is the --temperature/--alpha shorthand, ``alpha * T^2 * KL + (1 - alpha) * CE``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .. import seeds
from ..errors import require
from ..training import Schedule
from .loss import LossInputs, LossTerm
from .losses.ce import CE
from .losses.kd import KD
from .taps import FeatureTaps


@dataclass
class Hinton:
    """The foundation's shorthand for ``[kd:T=temperature,w=alpha, ce:w=1-alpha]``."""

    temperature: float = field(default=KD.T)
    alpha: float = 0.9

    def __post_init__(self):
        require(self.temperature > 0, f"--temperature must be > 0, got {self.temperature}")
        require(0 <= self.alpha <= 1, f"--alpha must be between 0 and 1, got {self.alpha}")

    def terms(self) -> list[LossTerm]:
        terms: list[LossTerm] = [KD(w=self.alpha, T=self.temperature)]
        if self.alpha < 1:
            terms.append(CE(w=round(1 - self.alpha, 12)))
        return terms


def hinton_losses(temperature: float = KD.T, alpha: float = Hinton.alpha) -> list[LossTerm]:
    return Hinton(temperature, alpha).terms()


class Distillation:
    """The training objective: a weighted sum of named loss terms, given a teacher."""

    def __init__(self, teacher, losses: list[LossTerm], examples: int | None = None):
        """``examples``: how many rows the training set holds (the positions ``idx`` index; a term with a memory
        bank per example, crd, needs it)."""
        require(losses, "no loss terms given")
        self.teacher, self.losses, self.examples = teacher, list(losses), examples
        self.student_taps: FeatureTaps | None = None
        for term in self.losses:
            term.check_teacher(teacher)

    def student_tap_paths(self) -> list[str]:
        return [p for term in self.losses for p in term.student_taps()]

    def teacher_tap_paths(self) -> list[str]:
        return [p for term in self.losses for p in term.teacher_taps()]

    def attach(self, student: nn.Module, sample_x: torch.Tensor, sample_idx: torch.Tensor,
               generator: torch.Generator | None = None) -> list[nn.Module]:
        """Hook the student's taps and let every term build, in order, from one sample batch: its learned parts
        (returned: the modules to train with the student) and its random streams. Their weights and seeds come
        from ``generator`` (default: seeded 0)."""
        paths = self.student_tap_paths()
        if paths:
            self.student_taps = FeatureTaps(student, paths, "student")
        was_training = student.training
        with torch.no_grad():
            logits = student.eval()(sample_x)
            sample = LossInputs(logits, None, self.teacher(sample_x, sample_idx),
                                self.student_taps.features if self.student_taps else {}, idx=sample_idx,
                                examples=self.examples)
        student.train(was_training)
        generator = generator if generator is not None else seeds.generator(0)
        return [module for term in self.losses for module in term.build(sample, generator)]

    def live_state(self) -> dict:
        """What the training loop checkpoints besides the model, the learned parts and the optimiser: the terms'
        random streams and other state (``state()``: a memory bank), empty when no term has any."""
        return {f"{i}:{name}": value for i, term in enumerate(self.losses)
                for name, value in {**term.generators(), **term.state()}.items()}

    def __call__(self, model, x, y, idx, schedule: Schedule = Schedule()) -> dict:
        teacher = self.teacher(x, idx)
        logits = model(x)
        batch = LossInputs(logits, y, teacher, self.student_taps.features if self.student_taps else {}, schedule,
                           idx=idx, examples=self.examples)
        values: dict[str, torch.Tensor] = {}
        for term in self.losses:
            for name, value in term(batch).items():
                values[_unique(values, name)] = value
        return values


def _unique(existing: dict, name: str) -> str:
    key, i = name, 2
    while key in existing:
        key, i = f"{name}_{i}", i + 1
    return key


def label_smoothing_warnings(teacher_meta: dict | None, losses: list[LossTerm], student_smoothing: float) -> list[str]:
    """The seed's lesson (Mueller et al. 2019): label smoothing and distillation do not mix."""
    msgs = []
    ls = float(((teacher_meta or {}).get("recipe") or {}).get("label_smoothing", 0) or 0)
    if ls > 0:
        msgs.append(f"the teacher was trained with label smoothing ({ls:g}); it erases the dark knowledge that "
                    "distillation transfers (Mueller et al. 2019), so expect a worse student than from a teacher "
                    "trained without it")
    if student_smoothing > 0 or any(getattr(t, "smoothing", 0) > 0 for t in losses):
        msgs.append("label smoothing on the student while distilling: do not combine them (Mueller et al. 2019)")
    return msgs
