"""Omni-supervised pseudo-labelling (Radosavovic et al. 2018, "Data Distillation: Towards Omni-Supervised Learning").

A trained teacher labels unlabeled images: it runs on every image under a fixed set of transformed views, its class
probabilities are averaged over the views (for a classifier nothing is spatial, so nothing is undone), and the
images whose averaged top probability reaches a threshold keep the argmax as a hard pseudo-label, or the averaged
probabilities as a soft one. Training then mixes labelled and pseudo-labelled rows in every batch at a set ratio
(``training.mixed_order``).

Views (``TRANSFORMS``, fixed: no random draws) act on raw images in [0, 1], empty pixels 0, before the teacher's own
normalisation; the original image is always the first view, and each named transform adds its views:

| name       | views |
|------------|-------|
| ``identity`` | none (the original alone: a single pass) |
| ``shift``  | content moved by 2 px right, left, down, up (signals: along their length only) |
| ``scale``  | zoomed by 0.9 and 1.1 about the centre (bilinear) |
| ``rotate`` | rotated by -10 and +10 degrees about the centre (bilinear; not for signals) |
| ``flip``   | mirrored left-right |

Probabilities are summed in float64 and divided by the number of views, so views that return the image unchanged
average to the single pass bit for bit.

The file (npz, read with ``allow_pickle=False``) holds no images: ``index`` (positions in the unlabeled data),
``labels`` (and ``probs`` for soft labels), ``confidence``, and the spec and sha256 of the unlabeled images, which
training loads again and refuses when they differ.
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .data import ImageSet, PseudoRows, Splits, Unlabeled, load_unlabeled, normalise, read_npz
from .errors import DistillabError, require
from .files import file_sha256, final_path
from .reporting import SILENT, Reporter
from .training import predict_logits

PSEUDO_FORMAT = "distillab-pseudolabels"
PSEUDO_VERSION = 1
SHIFT_PX = 2
SCALES = (0.9, 1.1)
DEGREES = (-10.0, 10.0)
BATCH = 500  # images per teacher forward pass


@dataclass
class PseudoLabelConfig:
    """``distillab pseudolabel``'s options. threshold 0 keeps every image: the paper keeps as many annotations per
    unlabeled image as a labelled image has, which for a classifier is one."""

    transforms: str = "shift,scale,rotate"
    threshold: float = 0.0
    soft: bool = False

    def check(self) -> "PseudoLabelConfig":
        require(isinstance(self.threshold, (int, float)) and not isinstance(self.threshold, bool)
                and math.isfinite(self.threshold) and 0 <= self.threshold <= 1,
                f"--threshold must be a probability in [0, 1], got {self.threshold}")
        parse_transforms(self.transforms)
        return self


@dataclass
class Mixing:
    """How training mixes pseudo-labelled rows in: ``ratio`` labelled:pseudo rows per batch (Radosavovic et al.)."""

    ratio: str = "6:4"


# --------------------------------------------------------------------------------------------------------------
# Views


@dataclass(frozen=True)
class View:
    name: str
    apply: Callable[[torch.Tensor], torch.Tensor]  # raw images (B, C, H, W) -> the same shape


def _shifted(dy: int, dx: int) -> Callable:
    """Content moved by (dy, dx) whole pixels, the uncovered border 0: exact, no interpolation."""
    def apply(x):
        out = torch.zeros_like(x)
        h, w = x.shape[2:]
        out[:, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            x[:, :, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
        return out
    return apply


def _affine(scale: float, degrees: float) -> Callable:
    """Zoomed by ``scale`` and rotated counter-clockwise (as displayed) by ``degrees`` about the centre."""
    def apply(x):
        b, _, h, w = x.shape
        a = math.radians(degrees)
        cos, sin = math.cos(a) / scale, math.sin(a) / scale
        # the output pixel at (X, Y) samples the input at R(-a)(X, Y) / scale, in pixel units
        theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=x.dtype)
        grid = F.affine_grid(theta.expand(b, 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return apply


def _shift_views(shape) -> list[View]:
    moves = [(0, SHIFT_PX), (0, -SHIFT_PX)] + ([] if shape[1] == 1 else [(SHIFT_PX, 0), (-SHIFT_PX, 0)])
    return [View(f"shift({dx:+d},{dy:+d})", _shifted(dy, dx)) for dy, dx in moves]


def _rotate_views(shape) -> list[View]:
    require(shape[1] > 1, "--transforms rotate does not apply to signals (one row high); use shift, scale or flip")
    return [View(f"rotate({d:+g})", _affine(1.0, d)) for d in DEGREES]


TRANSFORMS: dict[str, Callable[[tuple], list[View]]] = {
    "identity": lambda shape: [],
    "shift": _shift_views,
    "scale": lambda shape: [View(f"scale({s:g})", _affine(s, 0.0)) for s in SCALES],
    "rotate": _rotate_views,
    "flip": lambda shape: [View("flip", lambda x: x.flip(3))],
}


def parse_transforms(text) -> list[str]:
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip() for n in names]
    require(names and all(names), f"--transforms takes names joined by commas ({', '.join(TRANSFORMS)}), "
                                  f"got '{text}'")
    unknown = [n for n in names if n not in TRANSFORMS]
    require(not unknown, f"unknown transform '{unknown[0] if unknown else ''}'; choose from {', '.join(TRANSFORMS)}")
    require(len(set(names)) == len(names), f"--transforms names a transform twice: '{text}'")
    return names


def views(transforms, input_shape) -> list[View]:
    """The original image, then each named transform's views."""
    return [View("original", lambda x: x)] + [v for n in parse_transforms(transforms)
                                              for v in TRANSFORMS[n](tuple(input_shape))]


@torch.no_grad()
def averaged_probabilities(model, x: torch.Tensor, view_list: list[View], mean, std, device: str = "cpu",
                           batch_size: int = BATCH) -> torch.Tensor:
    """The model's class probabilities on raw images ``x`` averaged over the views (float64 sums), (N, K) float32.
    Each view of a batch of ``batch_size`` images is normalised with (mean, std) and run as one forward pass."""
    out = []
    for i in range(0, len(x), batch_size):
        chunk = x[i:i + batch_size]
        total = None
        for view in view_list:
            logits = predict_logits(model, normalise(view.apply(chunk), mean, std), batch_size=len(chunk),
                                    device=device)
            p = F.softmax(logits, 1).double()
            total = p if total is None else total + p
        out.append((total / len(view_list)).float())
    return torch.cat(out)


# --------------------------------------------------------------------------------------------------------------
# Pseudo-labels and their file


@dataclass
class PseudoLabels:
    index: torch.Tensor        # (M,) positions in the unlabeled data
    labels: torch.Tensor       # (M,) argmax of the averaged probabilities
    confidence: torch.Tensor   # (M,) the averaged top probability
    probs: torch.Tensor | None  # (M, K) averaged probabilities, for soft labels
    meta: dict                 # dataset, dataset_sha256, dataset_size, input_shape, classes, teacher, ...

    def __len__(self) -> int:
        return len(self.index)

    @property
    def soft(self) -> bool:
        return self.probs is not None

    def targets(self) -> torch.Tensor:
        return self.probs if self.soft else self.labels

    def save(self, path) -> None:
        m = self.meta
        arrays = {"format": np.array(PSEUDO_FORMAT), "version": np.array(PSEUDO_VERSION, dtype=np.int64),
                  "index": self.index.numpy().astype(np.int64), "labels": self.labels.numpy().astype(np.int64),
                  "confidence": self.confidence.numpy().astype(np.float32),
                  "dataset": np.array(m["dataset"]), "dataset_sha256": np.array(m["dataset_sha256"]),
                  "dataset_size": np.array(m["dataset_size"], dtype=np.int64),
                  "input_shape": np.array(m["input_shape"], dtype=np.int64), "classes": np.array(m["classes"]),
                  "teacher": np.array(m["teacher"]), "teacher_sha256": np.array(m["teacher_sha256"]),
                  "transforms": np.array(m["transforms"]), "views": np.array(m["views"]),
                  "threshold": np.array(m["threshold"], dtype=np.float64)}
        if self.soft:
            arrays["probs"] = self.probs.numpy().astype(np.float32)
        _write_npz(path, arrays)

    @classmethod
    def load(cls, path) -> "PseudoLabels":
        """A pseudo-label file, every array checked for type and shape (it may come from anywhere)."""
        arrays = read_npz(path)
        require(_text(arrays, "format", path, optional=True) == PSEUDO_FORMAT,
                f"{path} is not a pseudo-label file (write one with 'distillab pseudolabel')")
        require(_scalar(arrays, "version", path, integer=True) == PSEUDO_VERSION,
                f"{path} is a pseudo-label file of another version; write it again with 'distillab pseudolabel'")
        classes = _strings(arrays, "classes", path)
        k = len(classes)
        require(k >= 2, f"{path}: 'classes' must name at least 2 classes")
        shape = _numbers(arrays, "input_shape", path, integer=True)
        require(shape.shape == (3,) and all(1 <= v <= 4096 for v in shape.tolist()),
                f"{path}: 'input_shape' must be three sizes (C, H, W)")
        size = _scalar(arrays, "dataset_size", path, integer=True)
        require(size >= 1, f"{path}: 'dataset_size' must be at least 1")
        index = _numbers(arrays, "index", path, integer=True)
        require(index.ndim == 1, f"{path}: 'index' must be a 1-D array of positions")
        m = len(index)
        require(m >= 1, f"{path} holds no pseudo-labels (every image was filtered out); lower --threshold")
        require(int(index.min()) >= 0 and int(index.max()) < size,
                f"{path}: 'index' holds positions outside 0..{size - 1}, the unlabeled data it records")
        require(len(np.unique(index)) == m, f"{path}: 'index' names some positions twice")
        labels = _numbers(arrays, "labels", path, integer=True)
        require(labels.shape == (m,) and int(labels.min()) >= 0 and int(labels.max()) < k,
                f"{path}: 'labels' must hold one class 0..{k - 1} per row of 'index' ({m})")
        confidence = _numbers(arrays, "confidence", path)
        require(confidence.shape == (m,) and bool(np.isfinite(confidence).all()),
                f"{path}: 'confidence' must hold one probability per row ({m})")
        probs = None
        if "probs" in arrays:
            probs = _numbers(arrays, "probs", path).astype(np.float32)
            require(probs.shape == (m, k), f"{path}: 'probs' has shape {probs.shape}, expected ({m}, {k})")
            require(bool(np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
                         and (np.abs(probs.sum(1) - 1) < 1e-3).all()),
                    f"{path}: each row of 'probs' must be probabilities summing to 1")
        threshold = float(_scalar(arrays, "threshold", path))
        require(0 <= threshold <= 1, f"{path}: 'threshold' must be in [0, 1]")
        sha = _text(arrays, "dataset_sha256", path)
        require(len(sha) == 64 and all(c in "0123456789abcdef" for c in sha), f"{path}: 'dataset_sha256' is not a "
                                                                              "sha256")
        meta = {"dataset": _text(arrays, "dataset", path), "dataset_sha256": sha, "dataset_size": int(size),
                "input_shape": [int(v) for v in shape], "classes": classes,
                "teacher": _text(arrays, "teacher", path), "teacher_sha256": _text(arrays, "teacher_sha256", path),
                "transforms": _text(arrays, "transforms", path), "views": _strings(arrays, "views", path),
                "threshold": threshold}
        return cls(torch.from_numpy(index.astype(np.int64)), torch.from_numpy(labels.astype(np.int64)),
                   torch.from_numpy(confidence.astype(np.float32)),
                   None if probs is None else torch.from_numpy(probs), meta)


def _write_npz(path, arrays: dict) -> None:
    """An .npz that ``np.load`` reads, the same bytes for the same arrays (``np.savez`` stamps the time)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, value in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(value), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())


def _numbers(arrays, key, path, integer: bool = False) -> np.ndarray:
    require(key in arrays, f"{path} lacks '{key}'; write it with 'distillab pseudolabel'")
    value = arrays[key]
    kind = np.integer if integer else np.number
    require(np.issubdtype(value.dtype, kind) and not np.issubdtype(value.dtype, np.complexfloating),
            f"{path}: '{key}' must hold {'whole numbers' if integer else 'numbers'}, got {value.dtype}")
    return value


def _scalar(arrays, key, path, integer: bool = False):
    value = _numbers(arrays, key, path, integer)
    require(value.ndim == 0, f"{path}: '{key}' must be one number")
    return value.item()


def _text(arrays, key, path, optional: bool = False) -> str | None:
    if optional and key not in arrays:
        return None
    require(key in arrays, f"{path} lacks '{key}'; write it with 'distillab pseudolabel'")
    value = arrays[key]
    require(value.ndim == 0 and value.dtype.kind == "U", f"{path}: '{key}' must be one string")
    return str(value.item())


def _strings(arrays, key, path) -> list[str]:
    require(key in arrays, f"{path} lacks '{key}'; write it with 'distillab pseudolabel'")
    value = arrays[key]
    require(value.ndim == 1 and value.dtype.kind == "U", f"{path}: '{key}' must be a list of strings")
    return [str(v) for v in value.tolist()]


def pseudolabel(model, teacher_meta: dict, unlabeled: Unlabeled, config: PseudoLabelConfig, *,
                teacher_path: str = "", device: str = "cpu") -> PseudoLabels:
    """Label ``unlabeled`` with ``model`` (a classifier whose file metadata is ``teacher_meta``): averaged over the
    views of ``config.transforms``, kept where the averaged top probability is >= ``config.threshold``."""
    config.check()
    require(tuple(teacher_meta["input_shape"]) == unlabeled.input_shape,
            f"teacher {teacher_path} takes inputs of shape {tuple(teacher_meta['input_shape'])}, but the unlabeled "
            f"data {unlabeled.spec} has {unlabeled.input_shape}; use a classifier of images of that shape")
    view_list = views(config.transforms, unlabeled.input_shape)
    norm = teacher_meta["normalisation"]
    probs = averaged_probabilities(model, unlabeled.x, view_list, norm["mean"], norm["std"], device=device)
    confidence, labels = probs.max(1)
    keep = torch.nonzero(confidence >= config.threshold, as_tuple=True)[0]
    require(len(keep) > 0, f"no image of {unlabeled.spec} reaches --threshold {config.threshold} (the most "
                           f"confident has {float(confidence.max()):.4f}); lower the threshold")
    meta = {"dataset": unlabeled.spec, "dataset_sha256": unlabeled.sha256(), "dataset_size": len(unlabeled),
            "input_shape": list(unlabeled.input_shape), "classes": [str(c) for c in teacher_meta["classes"]],
            "teacher": final_path(teacher_path) if teacher_path else "",
            "teacher_sha256": file_sha256(teacher_path) if teacher_path else "",
            "transforms": ",".join(parse_transforms(config.transforms)), "views": [v.name for v in view_list],
            "threshold": float(config.threshold)}
    return PseudoLabels(keep, labels[keep], confidence[keep], probs[keep] if config.soft else None, meta)


# --------------------------------------------------------------------------------------------------------------
# Use in training


def parse_ratio(text) -> tuple[int, int]:
    """``L:P`` -> (L, P), two positive whole numbers."""
    parts = str(text).split(":")
    try:
        ratio = tuple(int(p) for p in parts)
    except ValueError:
        ratio = ()
    require(len(ratio) == 2 and all(1 <= r <= 1000 for r in ratio),
            f"--pseudo-ratio takes labelled:pseudo rows per batch as two whole numbers 1..1000, like 6:4; got "
            f"'{text}'")
    return ratio


def _same_data(a: str, b: str) -> bool:
    def resolved(spec):
        name, _, arg = spec.partition(":")
        return f"{name}:{Path(arg).resolve()}" if name in ("npz", "folder") and arg else spec
    return resolved(a) == resolved(b)


def pseudo_rows(path, splits: Splits, ratio=None, reporter: Reporter = SILENT) -> tuple[PseudoRows, dict]:
    """The pseudo-labelled rows of a file for training on ``splits`` (its images loaded again from the recorded
    spec and checked against the recorded hash, normalised like the training split), and what records say of
    them."""
    ratio_text = Mixing.ratio if ratio is None else str(ratio)
    mix = parse_ratio(ratio_text)
    labels = PseudoLabels.load(path)
    meta = labels.meta
    require(meta["classes"] == [str(c) for c in splits.classes],
            f"{path} labels the classes {', '.join(meta['classes'][:10])}, but {splits.spec} has "
            f"{', '.join(map(str, splits.classes[:10]))}; pseudo-label with a teacher of this dataset's classes")
    require(tuple(meta["input_shape"]) == tuple(splits.input_shape),
            f"{path} labels images of shape {tuple(meta['input_shape'])}, but {splits.spec} has "
            f"{tuple(splits.input_shape)}")
    try:
        unlabeled = load_unlabeled(meta["dataset"])
    except DistillabError as e:
        raise DistillabError(f"{path} was made from {meta['dataset']}, which cannot be read now ({e})") from None
    require(len(unlabeled) == meta["dataset_size"] and unlabeled.sha256() == meta["dataset_sha256"],
            f"the images of {meta['dataset']} are not those {path} was made from (their sha256 differs); "
            "pseudo-label them again")
    if _same_data(meta["dataset"], splits.spec):
        reporter.warn(f"{path} labels {splits.spec}'s own training images, the validation split among them; give "
                      "unlabeled data of its own for an honest validation accuracy")
    x = normalise(unlabeled.x[labels.index], splits.mean, splits.std).contiguous()
    record = {"pseudo": final_path(path), "pseudo_sha256": file_sha256(path), "pseudo_ratio": ratio_text,
              "pseudo_rows": len(labels), "pseudo_labels": "soft" if labels.soft else "hard",
              "pseudo_data": meta["dataset"], "pseudo_transforms": meta["transforms"]}
    return PseudoRows(ImageSet(x, labels.targets()), mix), record
