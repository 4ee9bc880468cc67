"""Synthetic sets made by the reference implementations, read into a ``SyntheticSet`` so that distillab's protocol
can evaluate them beside its own.

Two formats, both files written by ``torch.save``:

- ``vico``: VICO-UoE/DatasetCondensation (DC, DSA, DM: ``main.py``, ``main_DM.py``) saves ``res_*.pt``, a dict
  ``{"data": [[images, labels], ...one pair per experiment], "accs_all_exps": {model: [accuracy, ...]}}``.
  Images are (N, C, H, W) floats normalised with the dataset's mean and std, labels int64 in class-major order.
  One experiment is read (``experiment``, default 0); the accuracies they reported are recorded.
- ``mtt``: GeorgeCazenavette/mtt-distillation (``distill.py``) saves one tensor per file in its run folder:
  ``images_best.pt`` / ``images_N.pt`` and ``labels_best.pt`` / ``labels_N.pt`` beside them (some forks also
  ``lr_best.pt``, the learned learning rate, which is recorded but not used: the protocol has its own). The labels
  file beside the images is found by name, or given. A run with ``--zca`` keeps its images ZCA-whitened, a space
  distillab's protocol does not train in; such a run (``images_zca_*.pt`` beside the file) is refused. A ZCA run
  that wrote no ``images_zca_*.pt`` (IPC 50 and more without ``--force_save``) cannot be told apart.

Neither file says which dataset it holds: the caller names it, and the images must fit its input shape and class
count. The reference code normalises MNIST with (0.1307, 0.3081) and CIFAR-10 with its own constants (std 0.2023,
not the 0.2470 distillab uses); the set keeps the normalisation its images are in, and the protocol normalises the
test images the same way. For other datasets the dataset's own statistics are assumed.

A file is read with ``torch.load(weights_only=True)`` only, never a full unpickle, which could run code. Before
that it must be torch's zip format with uncompressed entries (what ``torch.save`` writes) and a small pickle; the
storages are memory-mapped, so only the experiment used is read. The numpy scalars VICO's accuracy lists hold
(np.float64) are allowed: numpy's scalar and dtype constructors build data, never run code.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from ..data import Dataset
from ..errors import DistillabError, require
from ..files import file_sha256
from .synset import SyntheticSet

FORMATS = ("vico", "mtt")
MAX_FILE_BYTES = 4 * 1024 ** 3       # a torch file to import (VICO: CIFAR-100 at IPC 50, five experiments, ~300 MB)
MAX_PICKLE_BYTES = 4 * 1024 ** 2     # its data.pkl: the object tree without the tensors (VICO's: a few KB)
MAX_ENTRIES = 10_000                 # zip members: one per tensor storage
MAX_EXPERIMENTS = 10_000
# The normalisation the reference code applies (VICO utils.get_dataset; MTT's is adapted from it), by distillab's
# dataset spec. Other datasets: the dataset's own statistics.
REFERENCE_NORMALISATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}
IMAGE_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
LABEL_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)
MTT_NAME = re.compile(r"images_(best|\d+)\.pt")


def read_vico(path, ds: Dataset, experiment: int = 0) -> SyntheticSet:
    """One experiment of a VICO ``res_*.pt`` file as a set for ``ds``."""
    path = Path(path)
    obj = torch_load(path)
    hint = "; an MTT images file? use --format mtt" if isinstance(obj, torch.Tensor) else ""
    require(isinstance(obj, dict) and "data" in obj,
            f"{path} is not a VICO res_*.pt file: expected a dict {{'data': [[images, labels], ...], ...}}, got "
            f"{_describe(obj)}{hint}")
    runs = obj["data"]
    require(isinstance(runs, (list, tuple)) and 1 <= len(runs) <= MAX_EXPERIMENTS,
            f"{path} is not a VICO res_*.pt file: 'data' must be a list of [images, labels] pairs, got "
            f"{_describe(runs)}")
    require(isinstance(experiment, int) and not isinstance(experiment, bool) and 0 <= experiment < len(runs),
            f"{path} holds {len(runs)} experiment(s), numbered 0..{len(runs) - 1}; --experiment {experiment} is not "
            "one of them")
    pair = runs[experiment]
    require(isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, torch.Tensor) for t in pair),
            f"{path} is not a VICO res_*.pt file: experiment {experiment} must be [images, labels] tensors, got "
            f"{_describe(pair)}")
    images, labels = pair
    source = {"experiment": experiment, "experiments": len(runs)}
    reported = _reported_accuracy(obj.get("accs_all_exps"))
    if reported:
        source["reported_accuracy"] = reported
    return _synset(path, "vico", images, labels, ds, source)


def read_mtt(path, ds: Dataset, labels=None) -> SyntheticSet:
    """An MTT images file (``images_best.pt``, ``images_N.pt``) and its labels as a set for ``ds``. ``labels``:
    the labels file; by default ``labels_X.pt`` beside ``images_X.pt``."""
    path = Path(path)
    require(path.is_file(), f"no such file: {path}")
    require(not path.name.startswith("images_zca_"),
            f"{path} holds MTT's images mapped back from ZCA space; the set was learned ZCA-whitened, which "
            "distillab's protocol does not use, so it cannot be compared here")
    zca = next(path.parent.glob("images_zca_*.pt"), None)
    require(zca is None, f"{path} comes from an MTT run with --zca ({zca.name if zca else ''} lies beside it): its "
                         "images are ZCA-whitened, which distillab's protocol does not use; import a run without --zca")
    images_obj = torch_load(path)
    hint = "; a VICO res_*.pt file? use --format vico" if isinstance(images_obj, dict) else ""
    require(isinstance(images_obj, torch.Tensor),
            f"{path} is not an MTT images file: expected one tensor (N, C, H, W), got {_describe(images_obj)}{hint}")
    match = MTT_NAME.fullmatch(path.name)
    if labels is None:
        require(match is not None, f"cannot tell which labels go with {path} (MTT names its files images_best.pt, "
                                   "images_N.pt); pass --labels FILE")
        labels = path.with_name(f"labels_{match.group(1)}.pt")
        require(labels.is_file(), f"no labels file {labels.name} beside {path}; pass --labels FILE")
    labels = Path(labels)
    labels_obj = torch_load(labels)
    require(isinstance(labels_obj, torch.Tensor),
            f"{labels} is not an MTT labels file: expected one tensor of N labels, got {_describe(labels_obj)}")
    source = {"labels_from": labels.name, "labels_sha256": file_sha256(labels)}
    lr = path.with_name(f"lr_{match.group(1)}.pt") if match else None
    if lr is not None and lr.is_file():
        value = torch_load(lr)
        require(isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()
                and bool(torch.isfinite(value).all()),
                f"{lr} is not an MTT learning-rate file: expected one finite number, got {_describe(value)}")
        source["learned_lr"] = float(value.reshape(()))
    return _synset(path, "mtt", images_obj, labels_obj, ds, source)


def read(path, fmt: str, ds: Dataset, *, experiment: int | None = None, labels=None) -> SyntheticSet:
    """``read_vico`` or ``read_mtt`` by format name; an option of the other format is refused."""
    require(fmt in FORMATS, f"unknown format '{fmt}'; choose {' or '.join(FORMATS)}")
    if fmt == "vico":
        require(labels is None, "--labels is for --format mtt; a VICO file holds its labels")
        return read_vico(path, ds, 0 if experiment is None else experiment)
    require(experiment is None, "--experiment is for --format vico; an MTT file holds one set")
    return read_mtt(path, ds, labels)


# ---- reading a torch file without running anything ----------------------------------------------------------------


def torch_load(path) -> object:
    """``torch.load(weights_only=True)`` of a file checked first to be torch's zip format: uncompressed members
    (no decompression bomb), a bounded pickle, at most ``MAX_FILE_BYTES``. Tensors come back memory-mapped."""
    path = Path(path)
    require(path.exists(), f"no such file: {path}")
    require(path.is_file(), f"{path} is a folder, expected a torch file")
    size = path.stat().st_size
    require(0 < size <= MAX_FILE_BYTES, f"{path} has {size:,} bytes; a torch file to import has 1 to "
                                        f"{MAX_FILE_BYTES:,}")
    with open(path, "rb") as f:
        head = f.read(4)
    require(head != b"\x80\x02\x8a\n", f"{path} is in torch's legacy format (torch < 1.6), which distillab does not "
                                       "read; save it again with a recent torch")
    not_torch = f"{path} is not a torch file (torch.save writes a zip archive)"
    require(head == b"PK\x03\x04", not_torch)
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError) as e:
        raise DistillabError(f"{not_torch}: {_first_line(e)}") from None
    require(1 <= len(members) <= MAX_ENTRIES, f"{path} has {len(members):,} archive members; a torch file has 1 to "
                                              f"{MAX_ENTRIES:,}")
    require(all(m.compress_type == zipfile.ZIP_STORED for m in members),
            f"{path} has compressed members; torch.save never compresses, so it was not written by torch.save")
    require(sum(m.file_size for m in members) <= size, f"{path} is corrupt: its members claim more bytes than it has")
    pickles = [m for m in members if m.filename.endswith("/data.pkl")]
    require(len(pickles) == 1, f"{not_torch}: no data.pkl in it")
    require(pickles[0].file_size <= MAX_PICKLE_BYTES,
            f"{path}: its object tree (data.pkl) has {pickles[0].file_size:,} bytes, more than a set's file needs "
            f"({MAX_PICKLE_BYTES:,})")
    try:
        with _numpy_scalars_allowed():
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise DistillabError(f"{path} needs a full unpickle to read; distillab never does that (it could run code)"
                             ) from None
    except Exception as e:  # anything else a forged or damaged archive makes torch raise
        raise DistillabError(f"{path} is not a readable torch file ({_first_line(e)})") from None


def _numpy_scalars_allowed():
    """What VICO's np.float64 accuracies pickle through: numpy's scalar constructor and plain numeric dtypes."""
    serialization = torch.serialization
    if not hasattr(serialization, "safe_globals"):  # torch < 2.5: only what weights_only takes by default
        return nullcontext()
    try:
        from numpy._core.multiarray import scalar
        name = "numpy._core.multiarray.scalar"
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
        name = "numpy.core.multiarray.scalar"
    allowed = [scalar, np.dtype, *{type(np.dtype(code)) for code in "?bhilqBHILQefd"}]
    if tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2]) >= (2, 6):
        # files pickled under the other numpy major name the same function differently
        other = "numpy.core.multiarray.scalar" if name.startswith("numpy._core") else "numpy._core.multiarray.scalar"
        allowed.append((scalar, other))
    return serialization.safe_globals(allowed)


# ---- checks shared by both formats ---------------------------------------------------------------------------------


def _synset(path: Path, fmt: str, images, labels, ds: Dataset, extra: dict) -> SyntheticSet:
    """The tensors of a reference file, checked against ``ds``, as a class-major set that records its source."""
    bad = f"{path} ({fmt}):"
    k, shape = ds.num_classes, tuple(ds.input_shape)
    for what, t in (("images", images), ("labels", labels)):
        require(t.layout == torch.strided and not t.is_quantized and t.device.type == "cpu",
                f"{bad} its {what} are not a plain dense tensor")
    require(images.dim() == 4 and images.dtype in IMAGE_DTYPES,
            f"{bad} images must be a float tensor (N, C, H, W), got {images.dtype} of shape {tuple(images.shape)}")
    require(tuple(images.shape[1:]) == shape,
            f"{bad} images of shape {tuple(images.shape[1:])} do not fit {ds.spec}, whose images are {shape}; "
            "name the dataset the set was made from with --data")
    require(labels.dim() != 2, f"{bad} its labels are a matrix (soft labels), which distillab does not import; "
                               "it takes one class index per image")
    require(labels.dim() == 1 and labels.dtype in LABEL_DTYPES,
            f"{bad} labels must be whole numbers, one per image; got {labels.dtype} of shape {tuple(labels.shape)}")
    n = len(images)
    require(len(labels) == n, f"{bad} {n} images but {len(labels)} labels")
    require(n >= k, f"{bad} {n} images for the {k} classes of {ds.spec}; a set has at least one image per class")
    labels = labels.to(torch.int64)
    low, high = int(labels.min()), int(labels.max())
    require(low >= 0 and high < k, f"{bad} labels lie in {low}..{high}, but {ds.spec} has classes 0..{k - 1}; name "
                                   "the dataset the set was made from with --data")
    counts = torch.bincount(labels, minlength=k)
    require(bool((counts == counts[0]).all()),
            f"{bad} classes have unequal counts of images (class {int(counts.argmin())} has {int(counts.min())}, class "
            f"{int(counts.argmax())} {int(counts.max())}); distillab's sets hold the same number per class")
    ipc = int(counts[0])
    images = images.detach().to(torch.float32).contiguous().clone()  # out of the memory map, into memory
    require(bool(torch.isfinite(images).all()), f"{bad} its images hold NaN or infinite values")
    class_major = torch.arange(k).repeat_interleave(ipc)
    reordered = not torch.equal(labels, class_major)
    if reordered:  # ours are class-major: class 0's images first, each class in the file's order
        images = images[torch.argsort(labels, stable=True)].contiguous()
    if ds.spec in REFERENCE_NORMALISATION:
        mean, std = REFERENCE_NORMALISATION[ds.spec]
        normalisation = "the reference code's constants for " + ds.spec
    else:
        mean, std = tuple(ds.mean), tuple(ds.std)
        normalisation = f"assumed: the statistics of {ds.spec} (the reference code does not know it)"
    source = {"imported_from": path.name, "format": fmt, "sha256": file_sha256(path), "data": ds.spec,
              "normalisation": normalisation, "reordered": reordered, **extra}
    recipe = {"method": "imported", "format": fmt, "file": path.name, "ipc": ipc,
              **{key: extra[key] for key in ("experiment", "labels_from") if key in extra}}
    return SyntheticSet(images=images, labels=class_major, classes=list(ds.classes), mean=tuple(mean),
                        std=tuple(std), meta={"method": "imported", "recipe": recipe, "source": source,
                                              **({"layout": ds.layout} if ds.layout else {})})


def _reported_accuracy(accs) -> dict | None:
    """VICO's ``accs_all_exps`` ({model: [test accuracy, ...]} over all experiments) as mean, std and count; None
    when absent or not of that shape (it only informs)."""
    if not isinstance(accs, dict) or not 1 <= len(accs) <= 1000:
        return None
    out = {}
    for model, values in accs.items():
        if not (isinstance(model, str) and isinstance(values, (list, tuple)) and len(values) <= 100_000):
            return None
        if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values):
            return None
        x = np.asarray(values, dtype=np.float64)
        if not np.isfinite(x).all():
            return None
        if len(x):
            out[model[:100]] = {"mean": float(x.mean()), "std": float(x.std()), "evaluations": len(x)}
    return out or None


def _describe(obj) -> str:
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, dict):
        keys = ", ".join(repr(k)[:30] for k in list(obj)[:5])
        return f"a dict with keys {keys}{', ...' if len(obj) > 5 else ''}" if obj else "an empty dict"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)}"
    return f"a {type(obj).__name__}"


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:120]}" if text else type(e).__name__
