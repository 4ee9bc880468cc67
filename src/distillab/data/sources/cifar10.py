"""``cifar10``: Krizhevsky's 50,000 + 10,000 colour images of 10 classes (the python version, fetched once and
checked by MD5; its pickled batches read by an unpickler that admits numpy arrays only).

``CifarArchive`` is what the python versions of CIFAR-10 and CIFAR-100 (``cifar100.py``) share: the archive
fetched into the data home once, checked by MD5 and extracted with tarfile's ``data`` filter, and its pickled
batches (dicts of numpy arrays and lists) read without running anything they name."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...errors import DistillabError, require
from ..core import DOWNLOAD_TIMEOUT_S, Dataset, ImageSet, _safe_unpickle, data_home
from ..source import DataSource, register_dataset

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass(frozen=True)
class CifarArchive:
    """One python-version CIFAR archive: ``title`` (CIFAR-10) and ``name`` (cifar10) for messages, the archive's
    file name, the folder it extracts to (both in the data home), its URL and MD5."""

    title: str
    name: str
    archive_name: str
    folder_name: str
    url: str
    md5: str

    @property
    def folder(self) -> Path:
        return data_home() / self.folder_name

    def ensure(self, fetch: bool) -> Path:
        """The extracted folder: as it is in the data home, else extracted from the archive there (downloaded
        first when ``fetch``), which must match the MD5."""
        folder, archive = self.folder, data_home() / self.archive_name
        if folder.exists():
            return folder
        if not archive.exists():
            require(fetch, f"{self.title} is not in {folder}; run 'distillab data fetch {self.name}'")
            try:
                archive.parent.mkdir(parents=True, exist_ok=True)
                with urllib.request.urlopen(self.url, timeout=DOWNLOAD_TIMEOUT_S) as r, \
                        open(archive.with_suffix(".part"), "wb") as f:
                    shutil.copyfileobj(r, f)
                archive.with_suffix(".part").replace(archive)
            except Exception:
                raise DistillabError(f"could not download {self.title}; put {self.archive_name} (python version) "
                                     f"or its extracted {self.folder_name} folder in {data_home()}") from None
        if hashlib.md5(archive.read_bytes()).hexdigest() != self.md5:
            raise DistillabError(f"{archive} does not match the {self.title} checksum; delete it and fetch again")
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(data_home(), filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DistillabError(f"{archive} could not be extracted ({' '.join(str(e).split())[:150]}); delete it "
                                 f"and {folder} and fetch again") from None
        return folder

    def read(self, file: str) -> dict:
        """A pickled file of the extracted folder as a dict with str keys (the python 2 pickles may have bytes)."""
        path = self.folder / file
        require(path.exists(), f"{path} is missing; delete {self.folder} and fetch {self.title} again")
        try:
            d = _safe_unpickle(path.read_bytes())
            if not isinstance(d, dict):
                raise ValueError(f"it holds a {type(d).__name__}, not a dict")
        except Exception as e:
            raise DistillabError(f"{path} is not a {self.title} batch ({e}); delete {self.folder} and fetch "
                                 "again") from None
        return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}

    def batch(self, file: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
        """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one batch; ``labels``: the key they are under."""
        path, d = self.folder / file, self.read(file)
        try:
            missing = [key for key in ("data", labels) if key not in d]
            if missing:
                raise ValueError(f"no '{missing[0]}'")
            x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[labels], dtype=np.int64).reshape(-1)
            if len(x) != len(y):
                raise ValueError(f"{len(x)} images for {len(y)} labels")
        except Exception as e:
            raise DistillabError(f"{path} is not a {self.title} batch ({e}); delete {self.folder} and fetch "
                                 "again") from None
        return x, y


def load_cifar10(fetch: bool) -> Dataset:
    """The five training batches and the test batch of the python version, fetched and checked once."""
    archive = CifarArchive("CIFAR-10", "cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py", CIFAR10_URL,
                           CIFAR10_MD5)
    folder = archive.ensure(fetch)
    parts = [archive.batch(f"data_batch_{i}", "labels") for i in range(1, 6)]
    xte, yte = archive.batch("test_batch", "labels")
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    train = ImageSet(torch.from_numpy(xtr).float() / 255.0, torch.from_numpy(ytr))
    test = ImageSet(torch.from_numpy(xte).float() / 255.0, torch.from_numpy(yte))
    return Dataset("cifar10", train, test, list(CIFAR10_CLASSES), (0.4914, 0.4822, 0.4465),
                   (0.2470, 0.2435, 0.2616), str(folder))


@register_dataset("cifar10")
@dataclass
class CIFAR10(DataSource):
    def load(self, path, fetch):
        return load_cifar10(fetch)
