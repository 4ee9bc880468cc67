"""Expert trajectories: what trajectory matching (``mtt``; Cazenavette et al. 2022, docs/reference.md §2) matches.

An expert is a network trained on the real training split; its *trajectory* is its parameters, flattened in
``named_parameters`` order, at every epoch: row 0 is the initialisation, row e the parameters after epoch e.
``distillab experts`` keeps one file per expert, ``OUT/expert-000.safetensors``, ``expert-001...``: one float32
tensor ``trajectory`` of shape (epochs + 1, P) and metadata saying what it is (format, model spec, parameter names and
shapes, the training split's source and hash, input shape, classes, normalisation, training settings, seed, index).

Training follows the authors' buffer script: plain SGD with learning rate 0.01, no momentum, no weight decay,
batches of 256, differentiable siamese augmentation drawn per image (flips dropped for digits), 50 epochs, 100
experts; those are ``ExpertConfig``'s defaults. Expert ``i`` draws everything from ``seeds.generator(seed, "expert",
i)``, so each expert is the same whether it was trained alone, after others, or after a resume.

A folder of trajectories may come from elsewhere and be forged: ``load_experts`` checks every file whole (format and
metadata types, the same model, data and settings in every file, the tensor's shape from the header before reading,
finite values row by row) before anything uses it, and matching reads two rows of one file per iteration.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from .checkpoint import Interrupted, stop_requested
from .data import TrainSet
from .dsa import DSA
from .errors import DistillabError, require
from .files import read_meta, save_tensors
from .models import build_model, stateful_layers
from .specs import parse_spec

EXPERT_FORMAT = "distillab.expert"
FILE_PATTERN = re.compile(r"^expert-(\d{3,6})\.safetensors$")
MAX_EXPERTS = 100_000
MAX_EPOCHS = 100_000


@dataclass
class ExpertConfig:
    """How experts are trained (the defaults are the reference's buffer script)."""

    model: str = "convnet:width=128,depth=3"
    experts: int = 100
    epochs: int = 50
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    dsa: bool = True
    seed: int = 0
    device: str = "cpu"

    def check(self) -> "ExpertConfig":
        require(isinstance(self.model, str) and self.model != "", "--model must be a model spec, e.g. "
                                                                  "convnet:width=128,depth=3")
        require(1 <= self.experts <= MAX_EXPERTS, f"--experts must be between 1 and {MAX_EXPERTS}, got {self.experts}")
        require(1 <= self.epochs <= MAX_EPOCHS, f"--epochs must be between 1 and {MAX_EPOCHS}, got {self.epochs}")
        require(self.lr > 0 and math.isfinite(self.lr), f"--lr must be a positive number, got {self.lr}")
        require(0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}")
        require(self.weight_decay >= 0 and math.isfinite(self.weight_decay),
                f"--weight-decay must be >= 0, got {self.weight_decay}")
        require(self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        return self

    def training(self) -> dict:
        """The settings a trajectory depends on (recorded in every file, compared across files)."""
        return {k: v for k, v in asdict(self).items() if k not in ("model", "experts", "seed", "device")}


def expert_model(spec: str, input_shape, num_classes: int, generator: torch.Generator | None = None,
                 what: str = "expert trajectories") -> nn.Module:
    """The model of a trajectory; batch norm and dropout are refused: the matching unrolls the model functionally,
    where running statistics and random masks have no place."""
    model = build_model(spec, input_shape, num_classes, generator)
    stateful = stateful_layers(model)
    require(not stateful, f"{what} need a model without batch norm or dropout; '{spec}' has "
                          f"{', '.join(stateful[:3])}: use convnet (instance norm), lenet5 or an mlp without dropout")
    return model


def parameter_layout(model: nn.Module) -> list[list]:
    """[[name, shape], ...] in the order trajectories are flattened."""
    return [[name, list(p.shape)] for name, p in model.named_parameters()]


def flat_parameters(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float().cpu()


def train_expert(train: TrainSet, cfg: ExpertConfig, generator: torch.Generator) -> tuple[torch.Tensor, list, nn.Module]:
    """Train one expert; returns its trajectory (epochs + 1, P) on the CPU, its mean training loss per epoch and the
    trained model. Stops (``Interrupted``) at an epoch boundary when a signal asked a run to stop."""
    model = expert_model(cfg.model, train.input_shape, train.num_classes, generator).to(train.device).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    augment = DSA.for_inputs(train.input_shape) if cfg.dsa else None
    rows, losses, n = [flat_parameters(model)], [], len(train)
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            x, y = train.read(idx), train.y[idx.to(train.y.device)]
            if augment is not None:
                x = augment(x, generator)  # parameters drawn per image, as when the reference trains its experts
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        value = total / n
        if not math.isfinite(value):
            raise DistillabError(f"an expert diverged (training loss {value}); lower --lr")
        losses.append(value)
        rows.append(flat_parameters(model))
        if stop_requested():
            raise Interrupted()
    return torch.stack(rows), losses, model.eval()


def data_record(train: TrainSet) -> dict:
    """The training split a trajectory was made on: its source and its hash (that of condense.dataset_hash)."""
    from .data import dataset_hash

    return {**train.source, "hash": dataset_hash(train.to("cpu"))}


def expert_meta(train: TrainSet, cfg: ExpertConfig, index: int, layout: list, losses: list, metrics: dict) -> dict:
    return {"format": EXPERT_FORMAT, "index": index, "model": cfg.model, "parameters": layout,
            "parameter_count": sum(math.prod(shape) for _, shape in layout), "epochs": cfg.epochs,
            "data": data_record(train), "input_shape": list(train.input_shape), "classes": list(train.classes),
            "normalisation": {"mean": list(train.mean), "std": list(train.std)}, "training": cfg.training(),
            "seed": cfg.seed, "stream": ["expert", index], "train_loss": losses, "metrics": metrics}


def expert_path(folder, index: int) -> Path:
    return Path(folder) / f"expert-{index:03d}.safetensors"


def save_expert(path, trajectory: torch.Tensor, meta: dict) -> None:
    save_tensors(path, {"trajectory": trajectory.float().contiguous()}, meta)  # atomic: never a half-written file


# --------------------------------------------------------------------------------------------------------------
# Reading trajectories


# What every file of one folder must share (compared with the first file).
SHARED = ("model", "parameters", "parameter_count", "epochs", "data", "input_shape", "classes", "normalisation",
          "training")


class Trajectories:
    """Expert trajectories, from files (read two rows at a time) or held in memory (``mtt`` training its own)."""

    def __init__(self, info: dict, *, paths: list[Path] | None = None, tensors: list[torch.Tensor] | None = None,
                 where: str = "the run's own experts"):
        self.info, self.paths, self.tensors, self.where = info, paths, tensors, where

    @property
    def count(self) -> int:
        return len(self.paths) if self.paths is not None else len(self.tensors)

    @property
    def epochs(self) -> int:
        return int(self.info["epochs"])

    @property
    def model(self) -> str:
        return self.info["model"]

    def rows(self, expert: int, epochs: tuple[int, ...]) -> list[torch.Tensor]:
        """The flat parameters of ``expert`` at each of ``epochs`` (CPU float32)."""
        if self.tensors is not None:
            return [self.tensors[expert][e] for e in epochs]
        path = self.paths[expert]
        count = int(self.info["parameter_count"])
        try:
            with safe_open(str(path), framework="pt") as f:
                part = f.get_slice("trajectory")
                rows = [part[e:e + 1].reshape(-1).float() for e in epochs]
        except (SafetensorError, OSError, ValueError, RuntimeError, KeyError) as e:
            raise DistillabError(f"{path} can no longer be read ({str(e).splitlines()[0][:80]}); was it changed "
                                 "during the run?") from None
        require(all(len(r) == count and bool(torch.isfinite(r).all()) for r in rows),
                f"{path} changed during the run (its epochs no longer have {count} finite parameters)")
        return rows


def _bad(path, why: str) -> DistillabError:
    return DistillabError(f"{path} is not a valid expert trajectory: {why}")


def _check_meta(meta: dict, path) -> None:
    """Types and sizes of one file's metadata, before anything is read or built from it."""
    for key in (*SHARED, "index"):
        if key not in meta:
            raise _bad(path, f"its metadata lacks '{key}'")
    if not (isinstance(meta["model"], str) and meta["model"]):
        raise _bad(path, "'model' is not a model spec")
    layout = meta["parameters"]
    if not (isinstance(layout, list) and 1 <= len(layout) <= 100_000 and all(
            isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], list)
            and len(item[1]) <= 8 and all(type(d) is int and 0 <= d <= 2**31 for d in item[1]) for item in layout)):
        raise _bad(path, "'parameters' is not a list of [name, shape]")
    count = meta["parameter_count"]
    if not (type(count) is int and count == sum(math.prod(shape) for _, shape in layout) and count >= 1):
        raise _bad(path, "'parameter_count' does not add up to its parameters' shapes")
    if not (type(meta["epochs"]) is int and 1 <= meta["epochs"] <= MAX_EPOCHS):
        raise _bad(path, "'epochs' is not a whole number of epochs")
    if not (type(meta["index"]) is int and 0 <= meta["index"] < MAX_EXPERTS):
        raise _bad(path, "'index' is not an expert's number")
    data = meta["data"]
    if not (isinstance(data, dict) and isinstance(data.get("hash"), str)):
        raise _bad(path, "'data' does not say which training split it was trained on")
    shape = meta["input_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(type(v) is int and 1 <= v <= 4096 for v in shape)):
        raise _bad(path, "'input_shape' is not three sizes (C, H, W)")
    classes = meta["classes"]
    if not (isinstance(classes, list) and 2 <= len(classes) <= 100_000 and all(isinstance(c, str) for c in classes)):
        raise _bad(path, "'classes' is not a list of class names")
    if not isinstance(meta["training"], dict):
        raise _bad(path, "'training' is not a mapping of settings")


# Files checked whole once in this process, by (path, size, modification time): condense checks its method's data
# twice (before the output folder exists, and again inside condense()), and a folder may hold gigabytes.
_CHECKED: dict[tuple, dict] = {}


def _check_file(path: Path) -> dict:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    if key in _CHECKED:
        return _CHECKED[key]
    meta = read_meta(path)
    if meta.get("format") != EXPERT_FORMAT:
        raise _bad(path, f"it holds a {meta.get('format', 'unknown')!r} file, expected {EXPERT_FORMAT!r}")
    _check_meta(meta, path)
    rows, count = meta["epochs"] + 1, meta["parameter_count"]
    try:
        with safe_open(str(path), framework="pt") as f:
            if list(f.keys()) != ["trajectory"]:
                raise _bad(path, f"it holds tensors {sorted(f.keys())[:4]}, expected one named 'trajectory'")
            part = f.get_slice("trajectory")
            if part.get_dtype() != "F32" or list(part.get_shape()) != [rows, count]:
                raise _bad(path, f"its trajectory is {part.get_dtype()} of shape {part.get_shape()}, expected F32 of "
                                 f"shape [{rows}, {count}] ({meta['epochs']} epochs + the initialisation, "
                                 f"{count} parameters)")
            for r in range(rows):  # row by row: memory stays at one epoch's parameters
                if not bool(torch.isfinite(part[r:r + 1]).all()):
                    raise _bad(path, f"epoch {r} holds NaN or infinite parameters")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DistillabError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:80]})") from None
    _CHECKED[key] = meta
    return meta


def _summary(meta: dict, key: str) -> str:
    return json.dumps(meta[key], sort_keys=True)[:120]


def load_experts(folder) -> Trajectories:
    """A folder written by ``distillab experts``, every file checked whole; one-line errors for anything else."""
    folder = Path(folder)
    how = f"make one with: distillab experts --data DATA --model SPEC --out {folder}"
    require(folder.exists(), f"no experts folder {folder}; {how}")
    require(folder.is_dir(), f"{folder} is a file; experts= takes the folder 'distillab experts' wrote")
    paths, seen = [], set()
    for p in sorted(folder.iterdir()):
        match = FILE_PATTERN.match(p.name)
        if match:
            paths.append(p)
            seen.add(int(match.group(1)))
        require(len(paths) <= MAX_EXPERTS, f"{folder} holds more than {MAX_EXPERTS} expert files")
    require(paths, f"{folder} holds no expert trajectories (expert-000.safetensors, ...); {how}")
    require(len(seen) == len(paths), f"{folder} numbers two expert files the same")
    first = None
    for p in paths:
        require(p.is_file(), f"{p} is not a file")
        meta = _check_file(p)
        require(meta["index"] == int(FILE_PATTERN.match(p.name).group(1)),
                f"{p} holds expert {meta['index']}, not the one its name says; the folder was changed by hand")
        if first is None:
            first = (p, meta)
            continue
        for key in SHARED:
            require(meta[key] == first[1][key],
                    f"the expert files in {folder} disagree: {first[0].name} has {key} {_summary(first[1], key)}, "
                    f"{p.name} has {_summary(meta, key)}; keep the experts of one 'distillab experts' run together")
    return Trajectories({k: first[1][k] for k in SHARED}, paths=paths, where=str(folder))


def same_model(a: str, b: str) -> bool:
    """Two model specs that name the same model (options in any order)."""
    try:
        sa, sb = parse_spec(a, "model spec"), parse_spec(b, "model spec")
    except DistillabError:
        return a == b
    return sa.name == sb.name and sa.options == sb.options


def check_fits(trajectories: Trajectories, train: TrainSet, model: str, layout: list) -> None:
    """Trajectories made on this training split with this model (``layout``: its parameter names and shapes)."""
    info, where = trajectories.info, trajectories.where
    mine = data_record(train)
    require(info["data"]["hash"] == mine["hash"],
            f"the experts in {where} were trained on other data ({info['data'].get('data', '?')}, val_size "
            f"{info['data'].get('val_size', '?')}, split seed {info['data'].get('split_seed', '?')}: hash "
            f"{info['data']['hash']}) than this run's training split ({mine.get('data', '?')}, val_size "
            f"{mine.get('val_size', '?')}, split seed {mine.get('split_seed', '?')}: hash {mine['hash']}); train "
            f"experts on this data with 'distillab experts'")
    require(same_model(info["model"], model),
            f"the experts in {where} are of model '{info['model']}' but mtt's model is '{model}'; pass "
            f"model=[{info['model']}] or train experts of '{model}'")
    require(info["parameters"] == layout,
            f"the experts in {where} hold parameters that do not fit model '{model}' (names or shapes differ)")


def kept_expert(path: Path, planned: dict) -> dict | None:
    """The metadata of an expert a stopped run finished, if ``path`` holds it whole and as ``planned`` (the same
    model, data, settings, seed and index); None when it must be trained (again)."""
    if not path.is_file():
        return None
    try:
        meta = _check_file(path)
    except DistillabError:
        return None
    same = all(meta.get(k) == planned.get(k) for k in (*SHARED, "index", "seed", "stream"))
    return meta if same and isinstance(meta.get("train_loss"), list) and isinstance(meta.get("metrics"), dict) else None
