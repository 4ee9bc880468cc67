"""``cifar10``: Krizhevsky's 50,000 + 10,000 colour images of 10 classes (the python version, fetched once and
checked by MD5; its pickled batches read by an unpickler that admits numpy arrays only)."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import DistillabError, require
from ..core import DOWNLOAD_TIMEOUT_S, Dataset, ImageSet, _safe_unpickle, data_home
from ..source import DataSource, register_dataset

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_cifar10(fetch: bool) -> Dataset:
    """The five training batches and the test batch of the python version, fetched and checked once."""
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


@register_dataset("cifar10")
@dataclass
class CIFAR10(DataSource):
    def load(self, path, fetch):
        return load_cifar10(fetch)
