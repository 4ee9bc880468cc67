"""Self-describing safetensors files (never pickle).

Each file carries one JSON metadata entry, ``distillab``, with its ``format`` (``distillab.model``,
``distillab.synset``), the distillab version and everything needed to use the tensors without any other file.
This module knows nothing of models or sets: ``models`` and ``condense.synset`` build on it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._version import __version__
from .errors import DistillabError, require


def to_jsonable(value):
    """Plain JSON types from dicts, lists, paths, dataclasses and 0-d tensors."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def final_path(path) -> str:
    """Where a file will be once its run finishes: ``runs/.demo.partial/teacher/m`` -> ``runs/demo/teacher/m``.
    Records and messages name these, never the temporary folder."""
    parts = [p[1:-len(".partial")] if p.startswith(".") and p.endswith(".partial") else p for p in Path(path).parts]
    return str(Path(*parts)) if parts else str(path)


def file_sha256(path) -> str:
    """sha256 of a file's bytes (records say which exact input a run used)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[Path]:
    """A temporary name beside ``path`` to write to (``suffix`` after ``.part``: ``.npz`` for numpy, which adds it
    otherwise); renamed to ``path`` when the block ends, removed if it raises -- a crash never leaves a
    half-written file under the final name."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part" + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict, durable: bool = False) -> None:
    """Write atomically: a crash never leaves a half-written file under the final name. ``durable``: also fsync the
    file and its folder, so a power cut after the rename cannot lose it (checkpoints)."""
    path = Path(path)
    meta = to_jsonable(dict(meta, distillab_version=__version__))
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    tmp = path.with_name(path.name + ".part")
    save_file(tensors, str(tmp), metadata={"distillab": json.dumps(meta, sort_keys=True)})
    if durable:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
        meta = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        raise DistillabError(f"{path} has corrupt distillab metadata") from None
    require(isinstance(meta, dict), f"{path} has corrupt distillab metadata (not a mapping)")
    return meta


def load_tensors(path: str | Path, expected_format: str) -> tuple[dict[str, torch.Tensor], dict]:
    meta = read_meta(path)
    require(meta.get("format") == expected_format,
            f"{path} holds a {meta.get('format', 'unknown')!r} file, expected {expected_format!r}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DistillabError(f"{path} is corrupt ({str(e).splitlines()[0][:80]})") from None
    return tensors, meta
