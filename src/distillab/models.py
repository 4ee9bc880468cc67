"""Models by spec string, for any input shape and class count.

    mlp:hidden=800-800[,dropout=0.5][,input_dropout=0.2]
    convnet:width=128,depth=3,norm=instance|batch|layer|none,pool=avg|max   (the dataset-distillation ConvNet-3)
    lenet5[:norm=none|batch], lenet5-half[:norm=...]
    resnet18[:width=64,norm=batch]                                            (CIFAR-style: 3x3 stem, no max-pool)
    any built-in model also takes init=default|xavier (xavier: Xavier-normal conv/linear weights, zero biases)
    import:pkg.module:factory[:key=value,...]                                 (factory(input_shape=, num_classes=))

Every built-in model ends in a linear layer called ``classifier``; its input is the "penultimate" feature.
Parameters are initialised from an explicit torch.Generator (the global RNG is left untouched).
``save_model``/``load_model`` write and rebuild a model from one self-describing safetensors file.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from pathlib import Path

import torch
from torch import nn

from . import seeds
from .errors import DistillabError, require
from .files import load_tensors, save_tensors
from .registry import IMPORT_PREFIX, import_object, untrusted_code_error
from .specs import Options, Spec, parse_spec

MODEL_FORMAT = "distillab.model"


class Dropout(nn.Module):
    """Dropout that draws its masks from an explicit generator (set by the trainer) for reproducible runs."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.empty_like(x).bernoulli_(1 - self.p, generator=self.generator)
        return x * keep / (1 - self.p)

    def extra_repr(self):
        return f"p={self.p}"


def set_dropout_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    for m in model.modules():
        if isinstance(m, Dropout):
            m.generator = generator


class MLP(nn.Module):
    def __init__(self, input_shape, num_classes, hidden=(800, 800), dropout=0.0, input_dropout=0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        if input_dropout:
            layers.append(Dropout(input_dropout))
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout:
                layers.append(Dropout(dropout))
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def _norm(kind: str, channels: int, one_d: bool = False) -> nn.Module:
    if kind == "instance":  # instance norm with affine parameters, as the DD reference code writes it
        return nn.GroupNorm(channels, channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind == "batch":
        return nn.BatchNorm1d(channels) if one_d else nn.BatchNorm2d(channels)
    return nn.Identity()


class ConvNet(nn.Module):
    """depth x [conv 3x3 -> norm -> ReLU -> pool 2x2] -> linear. 28x28 inputs get padding 3 first (as 32x32).

    Signals (inputs one row high, (C, 1, L)) get the 1-D form: conv 1x3, pool 1x2 along their length.
    """

    def __init__(self, input_shape, num_classes, width=128, depth=3, norm="instance", pool="avg"):
        super().__init__()
        channels, height, width_px = input_shape
        one_d = height == 1
        layers: list[nn.Module] = []
        size = [height, width_px]
        for i in range(depth):
            pad = 3 if (i == 0 and height == 28 and width_px == 28) else 1
            if one_d:
                layers.append(nn.Conv1d(channels if i == 0 else width, width, 3, padding=pad))
            else:
                layers.append(nn.Conv2d(channels if i == 0 else width, width, 3, padding=pad))
                size[0] = size[0] + 2 * pad - 2
            size[1] = size[1] + 2 * pad - 2
            pooled = size[1:] if one_d else size
            require(min(pooled) >= 2, f"convnet:depth={depth} halves its input {depth} times, but a {height}x{width_px} "
                                      f"input is down to {'x'.join(map(str, size))} at layer {i + 1}; use a smaller "
                                      "depth or larger inputs")
            layers += [_norm(norm, width, one_d), nn.ReLU()]
            layers.append((nn.AvgPool1d(2) if pool == "avg" else nn.MaxPool1d(2)) if one_d else
                          (nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2)))
            size = [size[0] if one_d else size[0] // 2, size[1] // 2]
        self.one_d = one_d
        self.features = nn.Sequential(*([nn.Flatten(1, 2)] if one_d else []), *layers, nn.Flatten())
        self.classifier = nn.Linear(width * size[0] * size[1], num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeNet-5 (ReLU, max-pool); ``half`` halves every layer's width (DAFL's LeNet-5-half)."""

    def __init__(self, input_shape, num_classes, half=False, norm="none"):
        super().__init__()
        c1, c2, f1, f2 = (3, 8, 60, 42) if half else (6, 16, 120, 84)
        batch = norm == "batch"  # BatchNorm after every conv and hidden linear layer (DeepInversion's teachers)
        channels, height, width = input_shape
        require(min(height, width) >= 4, f"lenet5 takes images of at least 4x4 pixels (it pools twice), got "
                                         f"{height}x{width}; use mlp or convnet")
        pad2 = 0 if min(height, width) // 2 >= 10 else 2  # small inputs (8x8 digits) keep their size
        self.features = nn.Sequential(
            nn.Conv2d(channels, c1, 5, padding=2), *([nn.BatchNorm2d(c1)] if batch else []), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=pad2), *([nn.BatchNorm2d(c2)] if batch else []), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten())
        was_training = self.features.training
        self.features.eval()  # the size probe must not move BatchNorm's running statistics
        with torch.no_grad():
            n = self.features(torch.zeros(1, *input_shape)).shape[1]
        self.features.train(was_training)
        self.fc = nn.Sequential(nn.Linear(n, f1), *([nn.BatchNorm1d(f1)] if batch else []), nn.ReLU(),
                                nn.Linear(f1, f2), *([nn.BatchNorm1d(f2)] if batch else []), nn.ReLU())
        self.classifier = nn.Linear(f2, num_classes)

    def forward(self, x):
        return self.classifier(self.fc(self.features(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3x3 stem, no max-pool, four stages of two basic blocks."""

    def __init__(self, input_shape, num_classes, width=64, norm="batch"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False), _norm(norm, width), nn.ReLU())
        blocks, cin = [], width
        for stage, mult in enumerate((1, 2, 4, 8)):
            for b in range(2):
                stride = 2 if (stage > 0 and b == 0) else 1
                blocks.append(BasicBlock(cin, width * mult, stride, norm))
                cin = width * mult
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.layers(self.stem(x))))


MODEL_NAMES = ("mlp", "convnet", "lenet5", "lenet5-half", "resnet18", "import")


def _build(spec: Spec, input_shape, num_classes) -> nn.Module:
    what = "model spec"
    o = Options(spec, what)
    if spec.name == "mlp":
        model = MLP(input_shape, num_classes, hidden=o.get_ints("hidden", [800, 800]),
                    dropout=o.get_float("dropout", 0.0, 0, 0.95), input_dropout=o.get_float("input_dropout", 0.0, 0, 0.95))
    elif spec.name == "convnet":
        model = ConvNet(input_shape, num_classes, width=o.get_int("width", 128, 1), depth=o.get_int("depth", 3, 1, 8),
                        norm=o.get_str("norm", "instance", ("instance", "batch", "layer", "none")),
                        pool=o.get_str("pool", "avg", ("avg", "max")))
    elif spec.name in ("lenet5", "lenet5-half"):
        model = LeNet5(input_shape, num_classes, half=spec.name == "lenet5-half",
                       norm=o.get_str("norm", "none", ("none", "batch")))
    elif spec.name == "resnet18":
        model = ResNet18(input_shape, num_classes, width=o.get_int("width", 64, 1),
                         norm=o.get_str("norm", "batch", ("batch", "instance", "layer", "none")))
    else:
        raise DistillabError(f"unknown model '{spec}'; choose one of mlp, convnet, lenet5, lenet5-half, resnet18, "
                             "or import:pkg.module:factory")
    if o.get_str("init", "default", ("default", "xavier")) == "xavier":
        _xavier(model)
    o.done()
    return model


def _xavier(model: nn.Module) -> None:
    """Xavier-normal weights and zero biases for every conv and linear layer (Wang et al. 2018 train LeNet so)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _literal(text: str):
    """A spec value as the number or truth value it reads as: '4' -> 4, '0.5' -> 0.5, 'true' -> True."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _call_factory(factory, input_shape, num_classes: int, name: str, kwargs: dict | None = None) -> nn.Module:
    kwargs = dict(kwargs or {})
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    for key, value in (("input_shape", tuple(input_shape)), ("num_classes", num_classes)):
        if key in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
            kwargs[key] = value
    try:
        model = factory(**kwargs)
    except TypeError as e:
        raise DistillabError(f"{name} could not be called with {sorted(kwargs)} ({e})") from None
    require(isinstance(model, nn.Module), f"{name} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _build_import(text: str, input_shape, num_classes) -> nn.Module:
    parts = text.split(":")
    require(len(parts) in (3, 4), f"bad model spec '{text}'; expected import:pkg.module:factory[:key=value,...]")
    kwargs = {k: _literal(v) for k, v in parse_spec("x:" + parts[3]).options.items()} if len(parts) == 4 else {}
    return _call_factory(import_object(text, "model spec"), input_shape, num_classes, f"{parts[1]}:{parts[2]}", kwargs)


@contextlib.contextmanager
def constructors_drawing_from(generator: torch.Generator):
    """Module constructors draw from the global RNG: run them on a forked copy seeded from ``generator``, so the
    caller's global RNG state is exactly as it was afterwards."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


PYTHON_PREFIX = "python:"


def model_name(model) -> str:
    """What files record for a model: its spec, or for one given from Python, ``python:module.Class``."""
    if isinstance(model, str):
        return model
    cls = model if isinstance(model, type) else type(model)
    if not isinstance(model, nn.Module) and not isinstance(model, type):
        cls = model  # a factory function
    return f"{PYTHON_PREFIX}{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', type(cls).__name__)}"


def build_model(spec, input_shape, num_classes: int, generator: torch.Generator | None = None, *,
                trust_code: bool = True, source: str = "") -> nn.Module:
    """Build a model; its initial weights come from ``generator`` (default: a fresh one seeded 0).

    ``spec``: a spec string, an ``nn.Module`` (used as it is, checked against the inputs), or a factory called as
    ``factory(input_shape=..., num_classes=...)`` (the arguments it takes) with the generator's seed.
    ``import:`` specs run the user's code: pass ``trust_code=False`` for specs read from a file (named ``source``).
    """
    require(num_classes >= 2, f"a classifier needs at least 2 classes, got {num_classes}")
    generator = generator if generator is not None else seeds.generator(0)
    if isinstance(spec, nn.Module) or (callable(spec) and not isinstance(spec, str)):
        if isinstance(spec, nn.Module):
            model = spec
        else:
            with constructors_drawing_from(generator):
                model = _call_factory(spec, input_shape, num_classes, model_name(spec))
        return _checked(model, model_name(spec), input_shape, num_classes)
    require(isinstance(spec, str) and spec != "", f"empty model spec{' in ' + source if source else ''}")
    require(not spec.startswith(PYTHON_PREFIX), f"model '{spec}' was given from Python; a file cannot rebuild it: "
                                                "pass the module, or load its weights into one (distillab.load(path, "
                                                "into=module))")
    if spec.startswith(IMPORT_PREFIX) and not trust_code:
        raise untrusted_code_error("model spec", spec, source or "this input")
    with constructors_drawing_from(generator):
        if spec.startswith(IMPORT_PREFIX):
            model = _build_import(spec, input_shape, num_classes)
        else:
            model = _build(parse_spec(spec, "model spec"), tuple(input_shape), num_classes)
    return _checked(model, spec, input_shape, num_classes)


def _checked(model, spec: str, input_shape, num_classes: int) -> nn.Module:
    require(isinstance(model, nn.Module), f"{spec} gave {type(model).__name__}, not a torch.nn.Module")
    try:
        with torch.no_grad():
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            out = model.eval()(torch.zeros(2, *input_shape, device=device))
    except Exception as e:
        raise DistillabError(f"model '{spec}' does not accept inputs of shape {tuple(input_shape)} "
                             f"({' '.join(str(e).split())[:150]})") from None
    require(isinstance(out, torch.Tensor) and out.shape == (2, num_classes),
            f"model '{spec}' gives outputs of shape {tuple(getattr(out, 'shape', ())[1:])}, expected ({num_classes},)")
    return model.train()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def final_linear_path(model: nn.Module) -> str:
    """Module path of the last nn.Linear: its input is the 'penultimate' feature."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    require(names, f"{type(model).__name__} has no nn.Linear layer, so 'penultimate' is undefined; name a module")
    return names[-1]


def stateful_layers(model: nn.Module) -> list[str]:
    """Layers with state or randomness inside the forward pass (batch norm, active dropout): such a model cannot
    be unrolled functionally or trained vectorised."""
    return [name or type(m).__name__ for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            or (isinstance(m, (Dropout, nn.Dropout, nn.Dropout2d, nn.AlphaDropout)) and m.p > 0)]


# --------------------------------------------------------------------------------------------------------------
# Model files


def save_model(path: str | Path, model: nn.Module, *, spec: str, input_shape, classes, mean, std,
               recipe: dict | None = None, data: dict | None = None, metrics: dict | None = None) -> None:
    meta = {"format": MODEL_FORMAT, "spec": spec, "input_shape": list(input_shape), "classes": list(classes),
            "normalisation": {"mean": list(mean), "std": list(std)}, "recipe": recipe or {}, "data": data or {},
            "metrics": metrics or {}}
    save_tensors(path, model.state_dict(), meta)


def load_model(path: str | Path, *, trust_code: bool = False) -> tuple[nn.Module, dict]:
    """Rebuild a saved model from its file alone; returns (model in eval mode, metadata).

    A file whose spec is ``import:...`` names code: it is built only with ``trust_code=True`` (``--trust-code``).
    """
    tensors, meta = load_tensors(path, MODEL_FORMAT)
    _check_model_meta(meta, path)
    require(all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point()),
            f"{path} holds NaN or infinite weights; a model trained that way cannot be used")
    model = build_model(meta["spec"], tuple(meta["input_shape"]), len(meta["classes"]), trust_code=trust_code,
                        source=str(path))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise DistillabError(f"{path}: weights do not fit model '{meta['spec']}' ({str(e).splitlines()[0][:100]})") from None
    return model.eval(), meta


def _check_model_meta(meta: dict, path) -> None:
    """The metadata a model is rebuilt from, checked for type and size before anything is built (it may be forged)."""
    require(isinstance(meta, dict), f"{path} has corrupt distillab metadata")
    for key in ("spec", "input_shape", "classes", "normalisation"):
        require(key in meta, f"{path} lacks '{key}' in its metadata; it was not written by distillab")
    bad = f"{path} has corrupt metadata:"
    require(isinstance(meta["spec"], str) and meta["spec"] != "", f"{bad} 'spec' is not a model spec")
    shape = meta["input_shape"]
    require(isinstance(shape, list) and len(shape) == 3 and all(type(v) is int and 1 <= v <= 4096 for v in shape),
            f"{bad} 'input_shape' is not three sizes (C, H, W)")
    require(shape[0] <= 1024, f"{bad} 'input_shape' has {shape[0]} channels, more than distillab takes (1024)")
    classes = meta["classes"]
    require(isinstance(classes, list) and 2 <= len(classes) <= 100_000, f"{bad} 'classes' is not a list of classes")
    norm = meta["normalisation"]
    require(isinstance(norm, dict) and all(
        isinstance(norm.get(k), list) and len(norm[k]) == shape[0]
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in norm[k])
        for k in ("mean", "std")) and all(v > 0 for v in norm["std"]),
        f"{bad} 'normalisation' is not a mean and a positive std per channel")


def check_compatible(meta: dict, classes, input_shape, what: str, path) -> None:
    """A model must see inputs of its own shape and predict the data's classes."""
    require(tuple(meta["input_shape"]) == tuple(input_shape),
            f"{what} {path} takes inputs of shape {tuple(meta['input_shape'])}, but the data has "
            f"{tuple(input_shape)}; use a {what} trained on this dataset")
    require(len(meta["classes"]) == len(classes),
            f"{what} {path} predicts {len(meta['classes'])} classes, but the data has {len(classes)}; "
            f"use a {what} trained on this dataset")
