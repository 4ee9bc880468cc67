"""Teacher metadata (Lopes et al. 2017): per-class activation records a teacher's owner computes once on the training
data and publishes instead of the data; whoever distills later reconstructs inputs from them.

Three kinds of record, each a per-class Gaussian of some activations:

- ``top``: the temperature-scaled logits (mean and full covariance per class);
- ``all``: every layer's pre-activations (the outputs of its linear and conv layers; the logits, scaled, as ``top``)
  -- full covariance where a layer is small enough and its covariance is not singular, the diagonal elsewhere;
- ``spectral``: per layer, the top-k eigen-pairs (``basis``, ``eigenvalues``) of the graph whose nodes are the layer's
  units and whose edge weights are the covariances of their activations (all classes pooled); per class, mean and
  variance of the activations' coordinates on those k modes -- a layer summarised in k numbers instead of its width.

``activations(model, x)`` gives the recorded activations of a batch (with gradients to ``x``), ``sample`` draws
targets for a batch of classes. The file (``distillab.teacher-records``) names the teacher it describes (a digest of
its weights), the data's classes, shape and normalisation, and its own size beside the training set's.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import require
from ..files import load_tensors, save_tensors

RECORDS_FORMAT = "distillab.teacher-records"
KINDS = ("top", "all", "spectral")
TOP = "top"
MAX_STATISTIC = 1e8  # larger means, variances or factors come from a forged file, not from a network's activations


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def model_digest(model: nn.Module) -> str:
    """sha256 (16 hex digits) of a model's weights and buffers: which teacher a record describes."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def recorded_layers(model: nn.Module) -> list[str]:
    """Module paths of the layers whose pre-activations ``all`` and ``spectral`` record: every linear and conv layer
    but the last (the logits are recorded as ``top``)."""
    paths = [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    require(len(paths) >= 1, "the teacher has no linear or conv layer; its activations cannot be recorded")
    return paths[:-1]


def activations(model: nn.Module, x: torch.Tensor, layers: list[str], temperature: float) -> dict[str, torch.Tensor]:
    """{layer path: (N, D) pre-activations, TOP: logits / T} of one forward pass (gradients flow to ``x``)."""
    found: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [modules[p].register_forward_hook(lambda m, i, o, p=p: found.__setitem__(p, o.flatten(1)))
             for p in layers]
    try:
        logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return {**{p: found[p] for p in layers}, TOP: logits.float() / temperature}


@dataclass
class TeacherRecords:
    kind: str
    temperature: float
    classes: list[str]
    input_shape: tuple
    mean_px: tuple  # the data's normalisation (the teacher's inputs)
    std_px: tuple
    teacher: str  # model_digest of the teacher
    stats: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # layer -> {mean, cov | var | basis...}
    meta: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return [p for p in self.stats if p != TOP]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in self.stats.values() for t in s.values())

    def to(self, device) -> "TeacherRecords":
        """The same records with their tensors on ``device``; draws (``sample``) stay on the CPU generator's side."""
        moved = {p: {k: t.to(device) for k, t in s.items()} for p, s in self.stats.items()}
        return TeacherRecords(self.kind, self.temperature, self.classes, self.input_shape, self.mean_px, self.std_px,
                              self.teacher, moved, self.meta)

    def layer_variance(self, layer: str) -> float:
        """The average per-unit variance of a layer's records: the scale that weighs layers equally in a loss."""
        s = self.stats[layer]
        var = (s["chol"] ** 2).sum(-1) if "chol" in s else s["var"]
        return float(var.mean()) + 1e-8

    def targets(self, acts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What the records describe of a batch's activations: the activations themselves, or (spectral) their
        coordinates on each layer's modes."""
        if self.kind != "spectral":
            return {p: acts[p] for p in self.stats}
        return {p: (acts[p] - s["centre"]) @ s["basis"] for p, s in self.stats.items()}

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One draw per example from its class's Gaussian, for every recorded layer (layers drawn independently:
        the records keep no correlation between layers)."""
        out = {}
        for p, s in self.stats.items():
            mean = s["mean"].cpu()[labels.cpu()]
            z = torch.randn(mean.shape, generator=generator)
            if "chol" in s:
                out[p] = mean + torch.einsum("nij,nj->ni", s["chol"].cpu()[labels.cpu()], z)
            else:
                out[p] = mean + s["var"].cpu()[labels.cpu()].clamp_min(0).sqrt() * z
        return out

    # ---- files ----

    def save(self, path, train_images: int) -> dict:
        """Write the file; returns the metadata it holds (sizes included)."""
        tensors = {f"{p}/{k}": t.contiguous() for p, s in self.stats.items() for k, t in s.items()}
        pixels = train_images * int(torch.tensor(self.input_shape).prod())
        meta = dict(self.meta, format=RECORDS_FORMAT, kind=self.kind, temperature=self.temperature,
                    classes=list(self.classes), input_shape=list(self.input_shape),
                    normalisation={"mean": list(self.mean_px), "std": list(self.std_px)}, teacher=self.teacher,
                    layers=list(self.stats), size_bytes=self.nbytes(),
                    training_set={"images": train_images, "bytes_uint8": pixels, "bytes_float32": 4 * pixels})
        save_tensors(path, tensors, meta)
        return meta

    @classmethod
    def load(cls, path) -> "TeacherRecords":
        tensors, meta = load_tensors(path, RECORDS_FORMAT)
        bad = f"{path} is not a valid teacher-records file:"
        require(meta.get("kind") in KINDS, f"{bad} 'kind' must be one of {', '.join(KINDS)}")
        classes, shape, norm = meta.get("classes"), meta.get("input_shape"), meta.get("normalisation")
        require(isinstance(classes, list) and len(classes) >= 2, f"{bad} 'classes' must list the classes")
        require(isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape),
                f"{bad} 'input_shape' must be (C, H, W)")
        require(isinstance(norm, dict) and all(isinstance(norm.get(k), list) and len(norm[k]) == shape[0]
                                               and all(_finite(v) for v in norm[k]) for k in ("mean", "std"))
                and all(v > 0 for v in norm["std"]), f"{bad} 'normalisation' must give a finite mean and a positive "
                                                     "std per channel")
        t = meta.get("temperature")
        require(_finite(t) and t > 0, f"{bad} 'temperature' must be a finite number > 0")
        layers = meta.get("layers")
        require(isinstance(layers, list) and TOP in layers and all(isinstance(p, str) for p in layers),
                f"{bad} 'layers' must list the recorded layers, top included")
        k = len(classes)
        stats: dict[str, dict[str, torch.Tensor]] = {}
        for p in layers:
            s = {name.split("/", 1)[1]: v.float() for name, v in tensors.items() if name.split("/", 1)[0] == p}
            require("mean" in s and s["mean"].dim() == 2 and s["mean"].shape[0] == k,
                    f"{bad} layer {p} lacks a (classes, D) mean")
            d = s["mean"].shape[1]
            if meta["kind"] == "spectral":
                require("var" in s and "basis" in s and "centre" in s and s["basis"].dim() == 2
                        and s["basis"].shape[1] == d and s["centre"].shape == (s["basis"].shape[0],)
                        and s["var"].shape == (k, d) and s.get("eigenvalues", torch.zeros(d)).shape == (d,),
                        f"{bad} layer {p}'s spectral summary is malformed")
            else:
                require(("chol" in s and s["chol"].shape == (k, d, d)) or ("var" in s and s["var"].shape == (k, d)),
                        f"{bad} layer {p} needs a (classes, D, D) covariance factor or a (classes, D) variance")
            require(all(bool(torch.isfinite(v).all()) for v in s.values()), f"{bad} layer {p} holds NaN or inf")
            require(all(v.numel() == 0 or float(v.abs().max()) <= MAX_STATISTIC for v in s.values()),
                    f"{bad} layer {p} holds values beyond {MAX_STATISTIC:g}, which no activation statistic reaches")
            require("var" not in s or bool((s["var"] >= 0).all()), f"{bad} layer {p} has a negative variance")
            require("chol" not in s or bool((torch.diagonal(s["chol"], dim1=-2, dim2=-1) >= 0).all()),
                    f"{bad} layer {p}'s covariance factor is not a Cholesky factor (a negative diagonal)")
            stats[p] = s
        return cls(kind=meta["kind"], temperature=float(t), classes=list(classes), input_shape=tuple(shape),
                   mean_px=tuple(norm["mean"]), std_px=tuple(norm["std"]), teacher=str(meta.get("teacher", "")),
                   stats=stats, meta=meta)


class _Moments:
    """Per-class sums for means and (full or diagonal) covariances, accumulated batch by batch in float64."""

    def __init__(self, k: int, d: int, full: bool):
        self.n = torch.zeros(k, dtype=torch.float64)
        self.s = torch.zeros(k, d, dtype=torch.float64)
        self.full = full
        self.ss = torch.zeros(k, d, d, dtype=torch.float64) if full else torch.zeros(k, d, dtype=torch.float64)

    def add(self, a: torch.Tensor, y: torch.Tensor) -> None:
        a = a.double()
        for c in y.unique().tolist():
            ac = a[y == c]
            self.n[c] += len(ac)
            self.s[c] += ac.sum(0)
            self.ss[c] += ac.T @ ac if self.full else (ac * ac).sum(0)

    def mean(self) -> torch.Tensor:
        return self.s / self.n.clamp_min(1)[:, None]

    def cov(self) -> torch.Tensor:
        """Unbiased (n - 1) covariances, full (k, d, d) or diagonal (k, d)."""
        m, n = self.mean(), self.n.clamp_min(2)
        if self.full:
            return (self.ss - n[:, None, None] * m[:, :, None] * m[:, None, :]) / (n - 1)[:, None, None]
        return ((self.ss - n[:, None] * m * m) / (n - 1)[:, None]).clamp_min(0)


def _gaussian(mom: _Moments) -> dict[str, torch.Tensor]:
    """Mean and a Cholesky factor of every class's covariance, or the diagonal when one is singular (a class with
    fewer examples than dimensions, units that never vary)."""
    mean = mom.mean()
    if mom.full:
        cov = mom.cov()
        cov = (cov + cov.transpose(1, 2)) / 2
        chol, info = torch.linalg.cholesky_ex(cov)
        if bool((info == 0).all()):  # every class's covariance is positive definite
            return {"mean": mean.float(), "chol": chol.float()}
        return {"mean": mean.float(), "var": cov.diagonal(dim1=1, dim2=2).clamp_min(0).float()}
    return {"mean": mean.float(), "var": mom.cov().float()}


@torch.no_grad()
def record(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, kind: str, temperature: float = 1.0,
           *, max_full: int = 1536, modes: int = 32, batch_size: int = 512, progress=None) -> dict:
    """The statistics of ``kind`` records of ``model`` on normalised images ``x`` with labels ``y``: {layer: {...}}.
    ``max_full``: widest layer that gets a full covariance; ``modes``: eigen-pairs kept per layer (spectral)."""
    require(kind in KINDS, f"--records must be one of {', '.join(KINDS)}, got '{kind}'")
    require(temperature > 0, f"--temperature must be > 0, got {temperature}")
    require(modes >= 1, f"modes must be at least 1, got {modes}")
    require(bool((torch.bincount(y, minlength=num_classes) >= 2).all()),
            "every class needs at least 2 training images to record its statistics")
    model.eval()
    layers = [] if kind == "top" else recorded_layers(model)
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]

    def each_batch():
        for done, (xb, yb) in enumerate(batches):
            yield activations(model, xb, layers, temperature), yb
            if progress:
                progress(done)

    if kind != "spectral":
        moments: dict[str, _Moments] = {}
        for acts, yb in each_batch():
            for p, a in acts.items():
                if p not in moments:
                    moments[p] = _Moments(num_classes, a.shape[1], full=a.shape[1] <= max_full)
                moments[p].add(a, yb)
        return {p: _gaussian(m) for p, m in moments.items()}
    # spectral: the graph of each layer (covariance over all classes) first, then per-class coordinates on its modes
    pooled: dict[str, _Moments] = {}
    for acts, yb in each_batch():
        for p, a in acts.items():
            if p not in pooled:
                pooled[p] = _Moments(1, a.shape[1], full=a.shape[1] <= max_full)
            pooled[p].add(a, torch.zeros_like(yb))
    bases = {}
    for p, m in pooled.items():
        centre = m.mean()[0]
        if m.full:
            evals, evecs = torch.linalg.eigh(m.cov()[0])
            basis, values = evecs[:, -modes:].flip(1), evals[-modes:].flip(0)
        else:  # too wide for a D x D graph: its leading modes from the activations of (at most) 4,096 examples
            sample = torch.cat([a for a, _ in _layer_rows(batches, model, p, temperature, 4096)]).double()
            _, sv, vh = torch.linalg.svd(sample - centre, full_matrices=False)
            basis, values = vh[:modes].T, sv[:modes] ** 2 / max(1, len(sample) - 1)
        bases[p] = (centre.float(), basis.float(), values.float())
    coords: dict[str, _Moments] = {}
    for acts, yb in each_batch():
        for p, a in acts.items():
            centre, basis, _ = bases[p]
            c = (a - centre) @ basis
            if p not in coords:
                coords[p] = _Moments(num_classes, c.shape[1], full=False)
            coords[p].add(c, yb)
    return {p: {"mean": coords[p].mean().float(), "var": coords[p].cov().float(), "centre": bases[p][0],
                "basis": bases[p][1], "eigenvalues": bases[p][2]} for p in coords}


def _layer_rows(batches, model, layer: str, temperature: float, limit: int):
    """The first ``limit`` rows of one layer's activations (for a wide layer's modes)."""
    layers = [] if layer == TOP else [layer]
    seen = 0
    for xb, yb in batches:
        if seen >= limit:
            return
        a = activations(model, xb, layers, temperature)[layer][:limit - seen]
        seen += len(a)
        yield a, yb
