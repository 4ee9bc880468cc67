"""Feature taps: forward hooks addressed by module path, so users' models need no edits; FitNets connectors."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import require
from ..models import final_linear_path


class FeatureTaps:
    """Records module outputs (or, for ``penultimate``, the input of the final linear layer) during forward."""

    def __init__(self, model: nn.Module, paths: list[str], role: str):
        self.features: dict[str, torch.Tensor] = {}
        self.handles = []
        modules = dict(model.named_modules())
        for path in dict.fromkeys(paths):
            if path == "penultimate":
                target = modules[final_linear_path(model)]
                self.handles.append(target.register_forward_pre_hook(self._pre_hook(path)))
            else:
                require(path in modules and path != "", f"{role} has no module '{path}'; names come from "
                                                        f"named_modules(), e.g. {', '.join(list(modules)[1:6])}")
                self.handles.append(modules[path].register_forward_hook(self._hook(path)))

    def _hook(self, path):
        def hook(module, inputs, output):
            self.features[path] = output
        return hook

    def _pre_hook(self, path):
        def hook(module, inputs):
            self.features[path] = inputs[0]
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def make_connector(student_shape, teacher_shape) -> nn.Module:
    """FitNets regressor from the student's feature shape to the teacher's (1x1 conv or linear)."""
    if student_shape == teacher_shape:
        return nn.Identity()
    if len(student_shape) == 3 and len(teacher_shape) == 3:
        layers: list[nn.Module] = [nn.Conv2d(student_shape[0], teacher_shape[0], 1, bias=False)]
        if student_shape[1:] != teacher_shape[1:]:
            layers.append(nn.AdaptiveAvgPool2d(teacher_shape[1:]))
        return nn.Sequential(*layers)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(student_shape), math.prod(teacher_shape)),
                         nn.Unflatten(1, teacher_shape))
