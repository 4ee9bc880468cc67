"""``lopes``: inputs reconstructed from teacher metadata (Lopes, Fenu, Starner 2017). For each batch of target
classes, activation targets are drawn from the records' per-class Gaussians and the inputs (pixels, started at
N(0.15, 0.1) as the paper does for MNIST) are optimised with Adam until the teacher's activations match them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...errors import require
from ..method import DataFreeMethod, balanced_labels, optimise_inputs, register_datafree
from ..records import KINDS, TeacherRecords, activations


@register_datafree("lopes")
@dataclass
class Lopes(DataFreeMethod):
    quick = {"iterations": 30, "batch": 100, "samples": 500}

    metadata: str = ""      # the records file (distillab metadata)
    records: str = ""       # top | all | spectral: must be the file's kind (empty: the file's)
    iterations: int = 300   # optimisation steps per batch
    batch: int = 256
    lr: float = 0.07
    init_mean: float = 0.15  # initial pixels ~ N(init_mean, init_std), in [0, 1] pixel units
    init_std: float = 0.1

    def check(self) -> None:
        super().check()
        require(self.metadata != "", f"--method {self}: lopes needs metadata=FILE (made by distillab metadata)")
        require(self.records in ("", *KINDS), f"--method {self}: records must be one of {', '.join(KINDS)}")
        require(self.iterations >= 1 and self.batch >= 1, f"--method {self}: iterations and batch must be >= 1")
        require(self.lr > 0 and self.init_std >= 0, f"--method {self}: lr must be > 0 and init_std >= 0")

    def steps(self, n: int) -> int:
        return self.iterations * math.ceil(n / self.batch)

    def load_records(self, teacher) -> TeacherRecords:
        rec = TeacherRecords.load(self.metadata)
        require(self.records in ("", rec.kind), f"{self.metadata} holds '{rec.kind}' records, not "
                                                f"'{self.records}'; record them with distillab metadata "
                                                f"--records {self.records}")
        require(len(rec.classes) == teacher.num_classes,
                f"{self.metadata} records {len(rec.classes)} classes, but the teacher predicts "
                f"{teacher.num_classes}; use the metadata of this teacher")
        require(tuple(rec.input_shape) == tuple(teacher.input_shape),
                f"{self.metadata} describes inputs of shape {tuple(rec.input_shape)}, but the teacher takes "
                f"{tuple(teacher.input_shape)}; use the metadata of this teacher")
        require(rec.teacher == teacher.digest, f"{self.metadata} was recorded from another teacher (weights "
                                               f"{rec.teacher}, this one {teacher.digest}); use its own metadata")
        # the digest can be copied into a forged file: the layers it names must be the teacher's, of their widths
        modules = dict(teacher.model.named_modules())
        missing = [p for p in rec.layers if p not in modules]
        require(not missing, f"{self.metadata} records layer(s) {', '.join(missing[:3])} that the teacher does not "
                             "have; use the metadata of this teacher")
        with torch.no_grad():
            probe = torch.zeros(1, *teacher.input_shape, device=teacher.device)
            widths = {p: a.shape[1] for p, a in activations(teacher.model, probe, rec.layers, 1.0).items()}
        width = {p: s["centre"].shape[0] if "centre" in s else s["mean"].shape[1] for p, s in rec.stats.items()}
        wrong = [p for p in rec.stats if width[p] != widths[p]]  # spectral: the modes' centre has the layer's width
        require(not wrong, f"{self.metadata} records layer(s) {', '.join(wrong[:3])} at another width than the "
                           "teacher's; use the metadata of this teacher")
        return rec

    def check_teacher(self, teacher) -> None:
        self.load_records(teacher)

    def run(self, teacher, n, generator, progress=None):
        rec = self.load_records(teacher).to(teacher.device)
        scale = {p: rec.layer_variance(p) for p in rec.stats}
        labels = balanced_labels(teacher.num_classes, n)
        images, step = [], 0
        for start in range(0, n, self.batch):
            y = labels[start:start + self.batch]
            targets = {p: t.to(teacher.device) for p, t in rec.sample(y, generator).items()}
            pixels = self.init_mean + self.init_std * torch.randn(len(y), *teacher.input_shape, generator=generator)

            def mismatch(pixels):
                got = rec.targets(activations(teacher.model, teacher.normalise(pixels), rec.layers, rec.temperature))
                return sum(((got[p] - targets[p]) ** 2).mean() / scale[p] for p in rec.stats)

            pixels, step = optimise_inputs(pixels.to(teacher.device), mismatch, self.iterations, self.lr, progress,
                                           step)
            images.append(teacher.normalise(pixels))
        return torch.cat(images), labels
