"""``crd``: Contrastive Representation Distillation (Tian, Krishnan & Isola, ICLR 2020). Each side's features
(flattened per example) pass through a learned linear embedding into ``feat_dim`` (128) dimensions and are
l2-normalised: v_s, v_t. A memory bank per side keeps, for every training example (its position ``idx``), the
momentum average of its embeddings. For a batch of B rows, each row i is contrasted with the other side's memory at
its own position (the positive) and at K other positions (the negatives, drawn anew each step):

    P(i, j) = exp(<v_s(i), M_t(j)> / nce_t) / Z_s      (and P_t likewise with v_t and M_s, over Z_t)
    loss_s  = -(1/B) sum_i [ log(P(i, i) / (P(i, i) + K/N + eps))
                             + sum_{j in negatives(i)} log((K/N) / (P(i, j) + K/N + eps)) ]

with N the training set's size, eps 1e-7, and Z_s, Z_t constants set once, from the first batch, to N times the
mean of its exp(<.,.> / nce_t) (before any division). The value is w * (loss_s + loss_t). After the values are
computed the memory moves: M(idx) <- normalise(momentum * M(idx) + (1 - momentum) * v) on each side. This is
mdistiller's ``CRD.crd_loss`` (embeddings, ``ContrastMemory``, ``ContrastLoss``); its CIFAR-100 config is the paper's:
K 16384, nce_t 0.07, momentum 0.5, weight 0.8 (``CRD.LOSS.FEAT_WEIGHT``, beside cross-entropy of weight 1: ``--loss ce
--loss crd``). Only the contrastive part is this term; mdistiller's CE weight is the ``ce`` term's.

The negatives are K distinct positions other than the row's own, uniform over the training set, K capped at N - 1;
they come from the term's own generator (seeded in ``build`` from the run's, checkpointed with the run).
mdistiller's data loader draws them from examples of the other classes (``CRD.MODE`` exact); a loss term sees no
labels but the batch's, so here they are drawn from all other examples.

Learned parts: the two embeddings (``CRDHead``), trained with the student; the teacher's embedding learns from
loss_t, the student's features get gradients from loss_s. State: the memory banks and Z (``CRDMemory``, drawn
uniform in +-sqrt(3 / feat_dim) in ``build`` as mdistiller draws them), made in ``build`` and checkpointed with the
run (``state()``). A step counts once in the memory: a second call for the same training step and the same rows (a
probe, a replay) first puts back what the first one changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ... import distributed
from ...errors import require
from ...models import constructors_drawing_from
from ..loss import FeatureTerm, register_loss

EPS = 1e-7  # mdistiller's ContrastLoss: inside both ratios


class CRDHead(nn.Module):
    """The learned parts: a linear embedding of each side's flattened features into ``feat_dim`` dimensions."""

    def __init__(self, student_width: int, teacher_width: int, feat_dim: int):
        super().__init__()
        self.student = nn.Linear(student_width, feat_dim)
        self.teacher = nn.Linear(teacher_width, feat_dim)


class CRDMemory(nn.Module):
    """The state: per training example, each side's momentum-averaged embedding (``student``, ``teacher``:
    (examples, feat_dim)), and ``z``, the normalisation constants of the student's and the teacher's scores (-1
    until the first batch sets them)."""

    def __init__(self, student: torch.Tensor, teacher: torch.Tensor):
        super().__init__()
        self.register_buffer("student", student)
        self.register_buffer("teacher", teacher)
        self.register_buffer("z", torch.full((2,), -1.0, device=student.device))


def embed(linear: nn.Linear, features: torch.Tensor) -> torch.Tensor:
    e = linear(features.flatten(1)).float()
    return e / e.pow(2).sum(1, keepdim=True).sqrt()


def scores(bank: torch.Tensor, v: torch.Tensor, indices: torch.Tensor, nce_t: float) -> torch.Tensor:
    """exp(<v(i), bank(indices(i, j))> / nce_t): (B, 1 + K); the bank is not differentiated."""
    rows = bank.index_select(0, indices.reshape(-1)).view(*indices.shape, -1)
    return torch.exp(torch.bmm(rows, v.unsqueeze(2)).squeeze(2) / nce_t)


def nce_loss(p: torch.Tensor, examples: int) -> torch.Tensor:
    """Column 0 of ``p`` (B, 1 + K) the positive, the rest the negatives; noise K / examples."""
    noise = (p.shape[1] - 1) / examples
    positive, negatives = p[:, 0], p[:, 1:]
    return -(torch.log(positive / (positive + noise + EPS)).sum()
             + torch.log(noise / (negatives + noise + EPS)).sum()) / len(p)


def crd_loss(head: CRDHead, memory: CRDMemory, student: torch.Tensor, teacher: torch.Tensor, indices: torch.Tensor,
             nce_t: float, momentum: float) -> torch.Tensor:
    """loss_s + loss_t for contrast ``indices`` (B, 1 + K; column 0 each row's own position), then the memory's
    update with the batch's embeddings (in place)."""
    vs, vt = embed(head.student, student), embed(head.teacher, teacher)
    examples = memory.student.shape[0]
    ps = scores(memory.teacher, vs, indices, nce_t)  # the student's embedding against the teacher's memory
    pt = scores(memory.student, vt, indices, nce_t)  # and the other way round
    first = torch.stack([ps.detach().mean(), pt.detach().mean()]) * examples
    z = torch.where(memory.z > 0, memory.z, first)
    value = nce_loss(ps / z[0], examples) + nce_loss(pt / z[1], examples)
    with torch.no_grad():
        memory.z.copy_(z)
        idx = indices[:, 0]
        for bank, v in ((memory.student, vs), (memory.teacher, vt)):
            moved = bank.index_select(0, idx) * momentum + v.detach() * (1 - momentum)
            bank.index_copy_(0, idx, moved / moved.pow(2).sum(1, keepdim=True).sqrt())
    return value


@register_loss("crd")
@dataclass
class CRD(FeatureTerm):
    # not distance-like: a student equal to the teacher still has the NCE loss of its embeddings and memories
    example = {"feat_dim": 8, "negatives": 4}

    w: float = 0.8
    feat_dim: int = 128
    negatives: int = 16384
    nce_t: float = 0.07
    momentum: float = 0.5

    head: CRDHead | None = field(default=None, init=False, repr=False, compare=False)
    memory: CRDMemory | None = field(default=None, init=False, repr=False, compare=False)

    def check(self) -> None:
        super().check()
        require(self.feat_dim >= 1, f"--loss {self}: feat_dim must be >= 1, got {self.feat_dim}")
        require(self.negatives >= 1, f"--loss {self}: negatives must be >= 1, got {self.negatives}")
        require(self.nce_t > 0, f"--loss {self}: nce_t must be > 0, got {self.nce_t}")
        require(0 <= self.momentum < 1, f"--loss {self}: momentum must be in [0, 1), got {self.momentum}")

    def build(self, sample, generator):
        n = sample.examples
        require(n is not None and n >= 2, f"the {self.name} loss keeps a memory per training example and needs at "
                                          f"least 2 of them (the training set's size), got {n}")
        require(distributed.world() == 1, f"the {self.name} loss keeps its memory banks in one process; run it "
                                          "without torchrun")
        s, t = self.features(sample)
        with constructors_drawing_from(generator):
            self.head = CRDHead(s[0].numel(), t[0].numel(), self.feat_dim).to(s.device)
        bound = 1.0 / math.sqrt(self.feat_dim / 3)
        banks = [(torch.rand(n, self.feat_dim, generator=generator) * 2 * bound - bound).to(s.device)
                 for _ in range(2)]
        self.memory = CRDMemory(*banks)
        seed = int(torch.randint(0, 2 ** 62, (), generator=generator))
        self._draws = torch.Generator(device=s.device).manual_seed(seed)
        self._last = None
        return [self.head]

    def generators(self) -> dict[str, torch.Generator]:
        return {"negatives": self._draws} if getattr(self, "_draws", None) is not None else {}

    def state(self) -> dict[str, nn.Module]:
        return {"memory": self.memory} if self.memory is not None else {}

    def draw_negatives(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, K): for each row, K distinct positions other than its own (all of them when K is N - 1)."""
        n = self.memory.student.shape[0]
        k = min(self.negatives, n - 1)
        if k == n - 1:
            r = torch.arange(n - 1, device=idx.device).expand(len(idx), -1)
        else:
            r = torch.rand(len(idx), n - 1, generator=self._draws, device=idx.device).argsort(1)[:, :k]
        return r + (r >= idx[:, None]).long()  # skip the row's own position

    def contrast(self, student: torch.Tensor, teacher: torch.Tensor, indices: torch.Tensor,
                 step: int | None = None) -> torch.Tensor:
        """The weighted value for given contrast ``indices`` (B, 1 + K; column 0 the rows' positions) and the
        memory's update. A second call for the same ``step`` and rows first puts back what the last one changed."""
        memory, idx = self.memory, indices[:, 0]
        last = self._last
        if last is not None and last[0] == step and torch.equal(last[1], idx):
            with torch.no_grad():
                memory.student.index_copy_(0, idx, last[2])
                memory.teacher.index_copy_(0, idx, last[3])
                memory.z.copy_(last[4])
        self._last = (step, idx.clone(), memory.student.index_select(0, idx), memory.teacher.index_select(0, idx),
                      memory.z.clone())
        return self.w * crd_loss(self.head, memory, student, teacher, indices, self.nce_t, self.momentum)

    def __call__(self, batch):
        require(self.memory is not None, f"--loss {self}: its memory is made by Distillation.attach(); call it "
                                         "before training")
        require(batch.idx is not None, f"the {self.name} loss needs each row's position in the training set (idx)")
        s, t = self.features(batch)
        idx = batch.idx.to(self.memory.student.device)
        indices = torch.cat([idx[:, None], self.draw_negatives(idx)], 1)
        return {"crd": self.contrast(s, t, indices, batch.schedule.step)}
