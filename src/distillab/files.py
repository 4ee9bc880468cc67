"""Self-describing safetensors files (never pickle).

Each file carries one JSON metadata entry, ``distillab``, with its ``format`` (``model``, later ``synset`` ...),
the distillab version and everything needed to use the tensors without any other file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import DistillabError, require
from .models import build_model

MODEL_FORMAT = "distillab.model"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write atomically: a crash never leaves a half-written file under the final name."""
    path = Path(path)
    from .outputs import to_jsonable

    meta = to_jsonable(dict(meta, distillab_version=__version__))
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    tmp = path.with_name(path.name + ".part")
    save_file(tensors, str(tmp), metadata={"distillab": json.dumps(meta, sort_keys=True)})
    os.replace(tmp, path)


def read_meta(path: str | Path) -> dict:
    """The metadata of a distillab safetensors file, checking that it is one."""
    path = Path(path)
    require(path.exists(), f"no such file: {path}")
    require(path.is_file(), f"{path} is a folder, expected a .safetensors file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("distillab")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DistillabError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:80]})") from None
    require(raw is not None, f"{path} is a safetensors file without distillab metadata; save it with distillab")
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise DistillabError(f"{path} has corrupt distillab metadata") from None


def load_tensors(path: str | Path, expected_format: str) -> tuple[dict[str, torch.Tensor], dict]:
    meta = read_meta(path)
    require(meta.get("format") == expected_format,
            f"{path} holds a {meta.get('format', 'unknown')!r} file, expected {expected_format!r}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DistillabError(f"{path} is corrupt ({str(e).splitlines()[0][:80]})") from None
    return tensors, meta


def save_model(path: str | Path, model: torch.nn.Module, *, spec: str, input_shape, classes, mean, std,
               recipe: dict | None = None, data: dict | None = None, metrics: dict | None = None) -> None:
    meta = {"format": MODEL_FORMAT, "spec": spec, "input_shape": list(input_shape), "classes": list(classes),
            "normalisation": {"mean": list(mean), "std": list(std)}, "recipe": recipe or {}, "data": data or {},
            "metrics": metrics or {}}
    save_tensors(path, model.state_dict(), meta)


def load_model(path: str | Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild a saved model from its file alone; returns (model in eval mode, metadata)."""
    tensors, meta = load_tensors(path, MODEL_FORMAT)
    for key in ("spec", "input_shape", "classes", "normalisation"):
        require(key in meta, f"{path} lacks '{key}' in its metadata; it was not written by distillab")
    model = build_model(meta["spec"], tuple(meta["input_shape"]), len(meta["classes"]))
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise DistillabError(f"{path}: weights do not fit model '{meta['spec']}' ({str(e).splitlines()[0][:100]})") from None
    return model.eval(), meta


def check_compatible(meta: dict, classes, input_shape, what: str, path) -> None:
    """A model must see inputs of its own shape and predict the data's classes."""
    require(tuple(meta["input_shape"]) == tuple(input_shape),
            f"{what} {path} takes inputs of shape {tuple(meta['input_shape'])}, but the data has "
            f"{tuple(input_shape)}; use a {what} trained on this dataset")
    require(len(meta["classes"]) == len(classes),
            f"{what} {path} predicts {len(meta['classes'])} classes, but the data has {len(classes)}; "
            f"use a {what} trained on this dataset")
