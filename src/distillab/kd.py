"""Knowledge distillation: loss terms, feature taps and teachers.

Conventions (REFERENCE.md section 1):
- ``kd`` is KL(p_T || p_S) at temperature T with ``reduction="batchmean"``, times T**2 (Hinton section 2).
- ``logit-mse`` is Ba & Caruana's logit matching, 1/2 ||z_s - z_t||^2 per example, averaged over the batch;
  with ``center=1`` both sides are centred per example, so a teacher that gives only probabilities (log p_T equals
  the logits up to a per-example constant) is matched exactly.
- The teacher is frozen, in eval mode and under no_grad; that is enforced in ``ModelTeacher`` alone.

A distillation objective is a list of named, weighted terms; each term is logged separately.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .errors import require
from .models import constructors_drawing_from, final_linear_path
from .specs import Options, parse_spec

TINY = torch.finfo(torch.float32).tiny  # floor for log p: probabilities keep their information down to here

# --------------------------------------------------------------------------------------------------------------
# Loss functions on tensors


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_T || p_S) at temperature T, batchmean, times T^2."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t


def bucket_kd_loss(student_logits, topk_index, topk_logprob, temperature: float) -> torch.Tensor:
    """KD from a teacher that reveals only its top-k probabilities: the missing mass is one extra bucket.

    Both distributions are reduced to k + 1 buckets (the k named classes, everything else); at T=1 this is the
    exact KL between the bucketed distributions.
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits.float(), dim=1)
    s_top = log_p_s.gather(1, topk_index)
    s_rest = torch.log1p(-s_top.exp().sum(1).clamp(max=1 - 1e-6))
    t_rest = torch.log1p(-topk_logprob.exp().sum(1).clamp(max=1 - 1e-6))
    s_buckets = torch.cat([s_top, s_rest[:, None]], 1)
    t_buckets = torch.cat([topk_logprob.float(), t_rest[:, None]], 1)
    return F.kl_div(F.log_softmax(s_buckets / t, 1), F.log_softmax(t_buckets / t, 1), reduction="batchmean",
                    log_target=True) * t * t


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor, center: bool = False,
              reduce: str = "sum") -> torch.Tensor:
    """1/2 ||z_s - z_t||^2 summed over classes (``reduce="mean"``: averaged over classes), averaged over the batch;
    optionally centred per example."""
    s, t = student_logits.float(), teacher_logits.float()
    if center:
        s = s - s.mean(1, keepdim=True)
        t = t - t.mean(1, keepdim=True)
    per_example = (s - t).pow(2).sum(1) if reduce == "sum" else (s - t).pow(2).mean(1)
    return 0.5 * per_example.mean()


def _pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    sq = e.pow(2).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp_min(1e-12)
    d = d2.sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))


def rkd_distance_potential(e: torch.Tensor) -> torch.Tensor:
    """psi_D(i, j) = ||e_i - e_j|| / mu, mu the mean distance over distinct pairs."""
    d = _pairwise_distances(e.flatten(1).float())
    mu = d[d > 0].mean()
    return d / mu


def rkd_angle_potential(e: torch.Tensor) -> torch.Tensor:
    """psi_A(i, j, k) = <e_ij, e_kj>, unit difference vectors around the apex j.

    Computed from the Gram matrix: <e_i - e_j, e_k - e_j> = G_ik - G_ij - G_kj + G_jj, divided by the two
    distances, so the cost is O(B^2 D + B^3) rather than O(B^3 D). Entries with i == j or k == j are 0.
    """
    e = e.flatten(1).float()
    e = e - e.mean(0, keepdim=True)  # translation-invariant anyway; centring keeps the Gram differences accurate
    g = e @ e.t()
    sq = g.diagonal()
    d = (sq[:, None] + sq[None, :] - 2 * g).clamp_min(1e-12).sqrt()
    num = g[None, :, :] - g[:, :, None] - g[:, None, :] + sq[:, None, None]  # [j, i, k]
    den = d[:, :, None] * d[:, None, :]
    eye = torch.eye(len(e), dtype=torch.bool, device=e.device)
    apex = eye[:, :, None] | eye[:, None, :]
    return torch.where(apex, torch.zeros_like(num), num / den)


def rkd_distance_loss(student_feat, teacher_feat):
    with torch.no_grad():
        t = rkd_distance_potential(teacher_feat)
    return F.smooth_l1_loss(rkd_distance_potential(student_feat), t)


def rkd_angle_loss(student_feat, teacher_feat):
    with torch.no_grad():
        t = rkd_angle_potential(teacher_feat)
    return F.smooth_l1_loss(rkd_angle_potential(student_feat), t)


def attention_map(feat: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis: mean of squared activations over channels, flattened, L2-normalised."""
    return F.normalize(feat.float().pow(2).mean(1).flatten(1), dim=1)


def attention_loss(student_feat, teacher_feat):
    s, t = attention_map(student_feat), attention_map(teacher_feat)
    if s.shape != t.shape:  # different spatial sizes: bring the student's map to the teacher's
        side = int(round(t.shape[1] ** 0.5))
        s_side = int(round(s.shape[1] ** 0.5))
        s = F.normalize(F.interpolate(s.view(-1, 1, s_side, s_side), size=(side, side), mode="bilinear",
                                      align_corners=False).flatten(1), dim=1)
    return (s - t).pow(2).mean()


# --------------------------------------------------------------------------------------------------------------
# Feature taps: forward hooks addressed by module path, so users' models need no edits


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
    import math
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(student_shape), math.prod(teacher_shape)),
                         nn.Unflatten(1, teacher_shape))


# --------------------------------------------------------------------------------------------------------------
# Teachers


@dataclass
class TeacherBatch:
    """What a teacher says about a batch: logits (or log-probabilities, equal up to a per-example constant),
    or, for a top-k black box, the indices and log-probabilities of its k most likely classes."""

    logits: torch.Tensor | None = None
    topk_index: torch.Tensor | None = None
    topk_logprob: torch.Tensor | None = None
    features: dict = field(default_factory=dict)
    kind: str = "logits"  # logits | logprobs | topk


class ModelTeacher:
    """A live teacher model: frozen, eval mode, no_grad. The one place where that is enforced."""

    kind = "logits"

    def __init__(self, model: nn.Module, tap_paths: list[str] = (), device: str = "cpu"):
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.taps = FeatureTaps(self.model, list(tap_paths), "teacher") if tap_paths else None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> TeacherBatch:
        self.model.eval()  # even if someone called .train() on it
        logits = self.model(x).float()
        feats = {k: v.detach().float() for k, v in self.taps.features.items()} if self.taps else {}
        return TeacherBatch(logits=logits, features=feats, kind="logits")


class TableTeacher:
    """Teacher outputs looked up by training-example position: a cache or a black box's answers.

    ``rows`` maps positions in the student's training split to rows of the table.
    """

    def __init__(self, rows: torch.Tensor, logits=None, topk_index=None, topk_logprob=None, features=None,
                 kind="logits"):
        self.rows, self.kind = rows, kind
        self.logits, self.topk_index, self.topk_logprob = logits, topk_index, topk_logprob
        self.feature_table = features or {}

    def __call__(self, x, idx) -> TeacherBatch:
        require(idx is not None, "a cached or black-box teacher needs the positions of the batch's examples")
        r = self.rows[idx.cpu()]
        pick = (lambda t: None if t is None else t[r].to(x.device))
        return TeacherBatch(logits=pick(self.logits), topk_index=pick(self.topk_index),
                            topk_logprob=pick(self.topk_logprob),
                            features={k: v[r].to(x.device) for k, v in self.feature_table.items()}, kind=self.kind)


class EnsembleTeacher:
    """Average of several teachers' probabilities; gives log of the mean probability (a valid logit vector)."""

    kind = "logprobs"

    def __init__(self, teachers: list):
        require(len(teachers) >= 1, "an ensemble needs at least one teacher")
        self.teachers = teachers

    def __call__(self, x, idx=None) -> TeacherBatch:
        outs = [t(x, idx) for t in self.teachers]
        require(all(o.logits is not None for o in outs), "ensembles need teachers with full outputs, not top-k")
        probs = torch.stack([F.softmax(o.logits, 1) for o in outs]).mean(0)
        feats = outs[0].features
        return TeacherBatch(logits=probs.clamp_min(TINY).log(), features=feats, kind="logprobs")


class CallableTeacher:
    """Any Python function x -> probabilities (an API, say) as a black-box teacher."""

    kind = "logprobs"

    def __init__(self, fn):
        self.fn = fn

    @torch.no_grad()
    def __call__(self, x, idx=None) -> TeacherBatch:
        probs = torch.as_tensor(self.fn(x), dtype=torch.float32, device=x.device)
        return TeacherBatch(logits=probs.clamp_min(TINY).log(), kind="logprobs")


@torch.no_grad()
def cache_teacher(teacher: ModelTeacher, x: torch.Tensor, batch_size: int = 1000) -> TableTeacher:
    """Run the teacher once over the (non-augmented) training inputs; lookups then cost nothing per epoch."""
    logits, feats = [], {}
    for i in range(0, len(x), batch_size):
        out = teacher(x[i:i + batch_size])
        logits.append(out.logits.cpu())
        for k, v in out.features.items():
            feats.setdefault(k, []).append(v.cpu())
    return TableTeacher(torch.arange(len(x)), logits=torch.cat(logits),
                        features={k: torch.cat(v) for k, v in feats.items()}, kind="logits")


# --------------------------------------------------------------------------------------------------------------
# Named loss terms


LOSS_NAMES = ("ce", "kd", "logit-mse", "rkd", "hint", "at")
FEATURE_LOSSES = ("rkd", "hint", "at")


@dataclass
class LossTerm:
    name: str
    weight: float
    temperature: float = 1.0
    smoothing: float = 0.0
    center: bool = False
    reduce: str = "sum"
    distance: float = 0.0
    angle: float = 0.0
    student_tap: str = ""
    teacher_tap: str = ""

    def describe(self) -> dict:
        d = {"name": self.name, "w": self.weight}
        if self.name == "kd":
            d["T"] = self.temperature
        if self.name == "ce" and self.smoothing:
            d["smoothing"] = self.smoothing
        if self.name == "logit-mse":
            d.update(center=self.center, reduce=self.reduce)
        if self.name == "rkd":
            d.update(distance=self.distance, angle=self.angle)
        if self.name in FEATURE_LOSSES:
            d.update(student=self.student_tap, teacher=self.teacher_tap)
        return d


def parse_loss(text: str, student_tap: str = "penultimate", teacher_tap: str = "penultimate") -> LossTerm:
    """``kd:T=4,w=0.9``, ``ce:w=0.1,smoothing=0.1``, ``logit-mse:center=1``, ``rkd:distance=25,angle=50``,
    ``hint:w=1,student=PATH,teacher=PATH``, ``at:w=1000``."""
    spec = parse_spec(text, "loss")
    require(spec.name in LOSS_NAMES, f"unknown loss '{spec.name}'; choose from {', '.join(LOSS_NAMES)}")
    o = Options(spec, "--loss")
    default_w = {"at": 1000.0}.get(spec.name, 1.0)
    term = LossTerm(spec.name, o.get_float("w", default_w, 0))
    if spec.name == "kd":
        term.temperature = o.get_float("T", 4.0, 0, low_inclusive=False)
    elif spec.name == "ce":
        term.smoothing = o.get_float("smoothing", 0.0, 0, 0.99)
    elif spec.name == "logit-mse":
        term.center = o.get_str("center", "0", ("0", "1", "true", "false")) in ("1", "true")
        term.reduce = o.get_str("reduce", "sum", ("sum", "mean"))
    elif spec.name == "rkd":
        term.distance = o.get_float("distance", 25.0, 0)
        term.angle = o.get_float("angle", 50.0, 0)
        term.weight = 1.0
    if spec.name in FEATURE_LOSSES:
        term.student_tap = o.get_str("student", student_tap)
        term.teacher_tap = o.get_str("teacher", teacher_tap)
    o.done()
    return term


def hinton_losses(temperature: float, alpha: float) -> list[LossTerm]:
    """The foundation's shorthand: alpha * T^2 * KL + (1 - alpha) * CE."""
    require(temperature > 0, f"--temperature must be > 0, got {temperature}")
    require(0 <= alpha <= 1, f"--alpha must be between 0 and 1, got {alpha}")
    terms = [LossTerm("kd", alpha, temperature=temperature)]
    if alpha < 1:
        terms.append(LossTerm("ce", round(1 - alpha, 12)))
    return terms


class Distillation:
    """The training objective: a weighted sum of named loss terms, given a teacher."""

    def __init__(self, teacher, losses: list[LossTerm]):
        require(losses, "no loss terms given")
        self.teacher, self.losses = teacher, losses
        self.connectors = nn.ModuleDict()
        self.student_taps: FeatureTaps | None = None
        kind = getattr(teacher, "kind", "logits")
        for term in losses:
            if term.name == "logit-mse" and kind == "logprobs" and not term.center:
                warnings.warn("logit-mse against a teacher that gives probabilities: use center=1 "
                              "(log-probabilities equal logits only up to a per-example constant)")
            if term.name == "logit-mse":
                require(kind != "topk", "logit-mse needs the teacher's full outputs, not only its top-k; use kd")
            if term.name in FEATURE_LOSSES:
                require(isinstance(teacher, (ModelTeacher, TableTeacher)) and kind == "logits",
                        f"the {term.name} loss needs a teacher model (features), not a black box")

    def student_tap_paths(self) -> list[str]:
        return [t.student_tap for t in self.losses if t.name in FEATURE_LOSSES]

    def teacher_tap_paths(self) -> list[str]:
        return [t.teacher_tap for t in self.losses if t.name in FEATURE_LOSSES]

    def attach(self, student: nn.Module, sample_x: torch.Tensor, sample_idx: torch.Tensor,
               generator: torch.Generator | None = None) -> list[nn.Module]:
        """Hook the student's taps and build connectors from one sample batch; returns modules to train.

        Connectors are initialised from ``generator`` (default: seeded 0), never from the global RNG."""
        paths = self.student_tap_paths()
        if not paths:
            return []
        self.student_taps = FeatureTaps(student, paths, "student")
        was_training = student.training
        with torch.no_grad():
            student.eval()(sample_x)
            t = self.teacher(sample_x, sample_idx)
        student.train(was_training)
        for term in self.losses:
            if term.name == "hint":
                s_shape = tuple(self.student_taps.features[term.student_tap].shape[1:])
                t_shape = tuple(t.features[term.teacher_tap].shape[1:])
                key = f"{term.student_tap}->{term.teacher_tap}".replace(".", "_")
                with constructors_drawing_from(generator if generator is not None else torch.Generator().manual_seed(0)):
                    self.connectors[key] = make_connector(s_shape, t_shape).to(sample_x.device)
        return [self.connectors]

    def __call__(self, model, x, y, idx) -> dict:
        t = self.teacher(x, idx)
        logits = model(x)
        feats = self.student_taps.features if self.student_taps else {}
        terms = {}
        for term in self.losses:
            w = term.weight
            if term.name == "ce":
                terms["ce"] = w * F.cross_entropy(logits, y, label_smoothing=term.smoothing)
            elif term.name == "kd":
                if t.topk_index is not None:
                    value = bucket_kd_loss(logits, t.topk_index, t.topk_logprob, term.temperature)
                else:
                    value = kd_loss(logits, t.logits, term.temperature)
                terms[_unique(terms, f"kd_T{term.temperature:g}")] = w * value
            elif term.name == "logit-mse":
                terms[_unique(terms, "logit_mse")] = w * logit_mse(logits, t.logits, term.center, term.reduce)
            elif term.name == "rkd":
                s_f, t_f = feats[term.student_tap], t.features[term.teacher_tap]
                if term.distance:
                    terms["rkd_distance"] = term.distance * rkd_distance_loss(s_f, t_f)
                if term.angle:
                    terms["rkd_angle"] = term.angle * rkd_angle_loss(s_f, t_f)
            elif term.name == "hint":
                key = f"{term.student_tap}->{term.teacher_tap}".replace(".", "_")
                s_f = self.connectors[key](feats[term.student_tap].float())
                terms[_unique(terms, "hint")] = w * F.mse_loss(s_f, t.features[term.teacher_tap])
            elif term.name == "at":
                terms[_unique(terms, "at")] = w * attention_loss(feats[term.student_tap], t.features[term.teacher_tap])
        return terms


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
    if student_smoothing > 0 or any(t.name == "ce" and t.smoothing > 0 for t in losses):
        msgs.append("label smoothing on the student while distilling: do not combine them (Mueller et al. 2019)")
    return msgs
