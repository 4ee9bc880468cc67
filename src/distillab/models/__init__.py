"""Models by spec string, for any input shape and class count: ``NAME[:key=value,...]`` of a registered model
family (``family.py``; the built-in ones, one file each in ``families/``: ``mlp``, ``convnet``, ``lenet5``,
``lenet5-half``, ``resnet18``, and the KD papers' CIFAR networks: ``resnet8``..``resnet110``, ``resnet8x4``,
``resnet32x4``, ``wrn``, ``vgg8``..``vgg19``, ``mobilenetv2``, ``shufflenetv1``, ``shufflenetv2``; every one also
takes ``init=default|xavier``), or
``import:pkg.module:factory[:key=value,...]``, called as ``factory(input_shape=, num_classes=)``.

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

from .. import seeds
from ..layouts import SIGNAL_LAYOUTS
from ..errors import DistillabError, require
from ..files import load_tensors, save_tensors
from ..registry import IMPORT_PREFIX, import_object, untrusted_code_error
from ..specs import parse_spec
from . import families  # noqa: F401  (registers the built-in families)
from .families.convnet import ConvNet
from .families.lenet5 import LeNet5
from .families.mlp import MLP
from .families.resnet18 import ResNet18
from .family import MODELS, ModelFamily, register_model
from .layers import Dropout, FromSignals, Renormalise, SignalShapes, set_dropout_generator

__all__ = ["MODELS", "ModelFamily", "register_model", "build_model", "model_name", "save_model", "load_model",
           "check_compatible", "count_parameters", "final_linear_path", "stateful_layers", "constructors_drawing_from",
           "Dropout", "Renormalise", "set_dropout_generator", "MLP", "ConvNet", "LeNet5", "ResNet18", "MODEL_FORMAT",
           "SignalShapes", "FromSignals", "SIGNAL_LAYOUTS"]

MODEL_FORMAT = "distillab.model"
# A model file of 1-D data records its ``layout`` (the data's own, one of SIGNAL_LAYOUTS: (N, L) or (N, C, L)); its
# input_shape is the (C, 1, L) it holds them as. Files of images, and files written before layouts were recorded,
# have none.


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
    made = import_object(text, "model spec")
    if isinstance(made, type) and issubclass(made, ModelFamily):  # a family of one's own: its options, then build
        return MODELS.parse(text, trust_code=True).make(input_shape, num_classes)
    kwargs = {k: _literal(v) for k, v in parse_spec("x:" + parts[3]).options.items()} if len(parts) == 4 else {}
    return _call_factory(made, input_shape, num_classes, f"{parts[1]}:{parts[2]}", kwargs)


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
    family = None if spec.startswith(IMPORT_PREFIX) else MODELS.parse(spec, trust_code=False, source=source)
    with constructors_drawing_from(generator):
        model = family.make(input_shape, num_classes) if family else _build_import(spec, input_shape, num_classes)
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
               recipe: dict | None = None, data: dict | None = None, metrics: dict | None = None,
               layout: str | None = None) -> None:
    """``layout``: for 1-D data, its own layout (NL or NCL), so that the file's users take signals in that shape."""
    meta = {"format": MODEL_FORMAT, "spec": spec, "input_shape": list(input_shape), "classes": list(classes),
            "normalisation": {"mean": list(mean), "std": list(std)}, "recipe": recipe or {}, "data": data or {},
            "metrics": metrics or {}, **({"layout": layout} if layout in SIGNAL_LAYOUTS else {})}
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
    layout = meta.get("layout")
    require(layout is None or (layout in SIGNAL_LAYOUTS and shape[1] == 1 and (layout == "NCL" or shape[0] == 1)),
            f"{bad} 'layout' must be NL (one channel) or NCL, for signals of input_shape (C, 1, L)")
    classes = meta["classes"]
    require(isinstance(classes, list) and 2 <= len(classes) <= 100_000, f"{bad} 'classes' is not a list of classes")
    norm = meta["normalisation"]
    require(isinstance(norm, dict) and all(
        isinstance(norm.get(k), list) and len(norm[k]) == shape[0]
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in norm[k])
        for k in ("mean", "std")) and all(v > 0 for v in norm["std"]),
        f"{bad} 'normalisation' is not a mean and a positive std per channel")


def check_compatible(meta: dict, classes, input_shape, what: str, path, data: str | None = None) -> None:
    """A model must see inputs of its own shape and predict the data's classes. ``data``: the dataset's spec, named
    in the error beside the one the model records (a command run without --data uses its default dataset)."""
    recorded = (meta.get("data") or {}).get("data") if isinstance(meta.get("data"), dict) else None
    hint = (f"; it was trained on {recorded}, the data here is {data}: pass --data {recorded} (a command without "
            f"--data uses its default)" if isinstance(recorded, str) and data and recorded != data
            else f"; use a {what} trained on this dataset")
    require(tuple(meta["input_shape"]) == tuple(input_shape),
            f"{what} {path} takes inputs of shape {tuple(meta['input_shape'])}, but the data has "
            f"{tuple(input_shape)}{hint}")
    require(len(meta["classes"]) == len(classes),
            f"{what} {path} predicts {len(meta['classes'])} classes, but the data has {len(classes)}{hint}")
