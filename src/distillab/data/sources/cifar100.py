"""``cifar100``: Krizhevsky's CIFAR-100, 50,000 + 10,000 colour images 32x32 of 100 classes (the "fine" labels), the
python version: ``cifar-100-python.tar.gz`` fetched into the data home once and checked by MD5 (or the archive, or
its extracted ``cifar-100-python`` folder, put there by hand), the pickled ``train``, ``test`` and ``meta`` files
read by the unpickler that admits numpy arrays only -- the fetching, checking and reading shared with ``cifar10``
(``CifarArchive``).

The 20 "coarse" superclasses (``coarse_labels``) are not offered: a dataset without a path takes no options.

Normalisation: the mean and std of the KD papers' CIFAR-100 code -- CRD's RepDistiller (``dataset/cifar100.py``) and
mdistiller (``mdistiller/dataset/cifar100.py``), which DKD, ReviewKD's and LSKD's CIFAR-100 tables were trained
with -- so that a teacher or student trained here sees its inputs as theirs did."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import DistillabError
from ..core import Dataset, ImageSet
from ..source import DataSource, register_dataset
from .cifar10 import CifarArchive

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"  # torchvision.datasets.CIFAR100.tgz_md5
CIFAR100_CLASSES = 100
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)


def cifar100_archive() -> CifarArchive:
    return CifarArchive("CIFAR-100", "cifar100", "cifar-100-python.tar.gz", "cifar-100-python", CIFAR100_URL,
                        CIFAR100_MD5)


def load_cifar100(fetch: bool) -> Dataset:
    """The ``train`` and ``test`` files of the python version with their fine labels, the class names from
    ``meta``'s ``fine_label_names``."""
    archive = cifar100_archive()
    folder = archive.ensure(fetch)
    names = archive.read("meta").get("fine_label_names")
    if not (isinstance(names, list) and len(names) == CIFAR100_CLASSES and all(isinstance(n, (str, bytes))
                                                                               for n in names)):
        raise DistillabError(f"{folder / 'meta'} does not hold CIFAR-100's {CIFAR100_CLASSES} fine_label_names; "
                             f"delete {folder} and fetch again")
    classes = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    parts = []
    for file in ("train", "test"):
        x, y = archive.batch(file, "fine_labels")
        if len(y) and not (0 <= int(y.min()) and int(y.max()) < CIFAR100_CLASSES):
            raise DistillabError(f"{folder / file} holds fine labels outside 0..{CIFAR100_CLASSES - 1}; delete "
                                 f"{folder} and fetch again")
        parts.append(ImageSet(torch.from_numpy(x).float() / 255.0, torch.from_numpy(y)))
    return Dataset("cifar100", parts[0], parts[1], classes, CIFAR100_MEAN, CIFAR100_STD, str(folder))


@register_dataset("cifar100")
@dataclass
class CIFAR100(DataSource):
    def load(self, path, fetch):
        return load_cifar100(fetch)
