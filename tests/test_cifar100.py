"""``cifar100`` (data/sources/cifar100.py) from a tiny fake of Krizhevsky's python-version archive in a temporary
data home, its MD5 constant patched to the fake's: the right shapes, classes, labels and normalisation, the shared
contract, and every bad archive -- wrong checksum, a missing file, a pickle naming code, a file traversing out of
the data home -- ending in one DistillabError line with nothing run and nothing downloaded."""

import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error
from distillab import data
from distillab.data.sources import cifar100
from distillab.errors import DistillabError
from distillab.testing import check_dataset

NAMES = [f"class_{i:02d}" for i in range(100)]


def _batch(n, seed):
    rng = np.random.default_rng(seed)
    fine = [i % 100 for i in range(n)]
    return {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": "fake",
            "fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}


def _files(**replace):
    """The archive's members as bytes: 200 training images (every class twice), 20 test images, meta."""
    files = {"train": pickle.dumps(_batch(200, 0)), "test": pickle.dumps(_batch(20, 1)),
             "meta": pickle.dumps({"fine_label_names": NAMES, "coarse_label_names": [f"super_{i}" for i in range(20)]})}
    files.update(replace)
    return {k: v for k, v in files.items() if v is not None}


def _archive(home, monkeypatch, files=None, md5=True):
    """cifar-100-python.tar.gz in ``home`` holding ``files`` under cifar-100-python/; the MD5 constant made its."""
    path = home / "cifar-100-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in (files or _files()).items():
            member = tarfile.TarInfo(name if name.startswith("../") else f"cifar-100-python/{name}")
            member.size = len(blob)
            tar.addfile(member, io.BytesIO(blob))
    if md5:
        monkeypatch.setattr(cifar100, "CIFAR100_MD5", hashlib.md5(path.read_bytes()).hexdigest())
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLAB_DATA", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()

    def no_network(*a, **k):
        raise AssertionError("the test tried to download")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    return tmp_path / "home"


def test_loads_the_archive_with_fine_labels_and_the_kd_papers_normalisation(home, monkeypatch):
    _archive(home, monkeypatch)
    ds = data.load("cifar100", fetch=False)  # an archive already in the data home needs no fetching
    assert ds.spec == "cifar100" and ds.input_shape == (3, 32, 32)
    assert len(ds.train) == 200 and len(ds.test) == 20 and ds.num_classes == 100 and ds.classes == NAMES
    expected = _batch(200, 0)
    assert ds.train.y.dtype == torch.int64 and ds.train.y.tolist() == expected["fine_labels"]  # fine, not coarse
    assert torch.equal(ds.train.x, torch.from_numpy(expected["data"]).reshape(-1, 3, 32, 32).float() / 255)
    assert ds.mean == (0.5071, 0.4867, 0.4408) and ds.std == (0.2675, 0.2565, 0.2761)  # RepDistiller, mdistiller
    assert (home / "cifar-100-python" / "train").is_file()  # extracted once ...
    (home / "cifar-100-python.tar.gz").unlink()
    again = data.load("cifar100", fetch=False)  # ... and read from the folder from then on
    assert torch.equal(again.test.x, ds.test.x) and again.classes == NAMES


def test_meets_the_data_source_contract(home, monkeypatch):
    _archive(home, monkeypatch)
    check_dataset(cifar100.CIFAR100)


def test_data_fetch_uses_an_archive_put_in_the_data_home(cli, home, monkeypatch):
    _archive(home, monkeypatch)
    r = cli("data", "fetch", "cifar100")
    assert r.code == 0, r.err
    assert r.json["train"] == 200 and r.json["test"] == 20 and r.json["input_shape"] == [3, 32, 32]


def test_not_there_and_not_fetching_names_the_fetch_command(cli, home):
    assert_one_line_error(cli("data", "info", "cifar100"), "CIFAR-100 is not in", "distillab data fetch cifar100")


def test_a_wrong_checksum_is_refused_before_anything_is_extracted(cli, home, monkeypatch):
    _archive(home, monkeypatch, md5=False)
    assert_one_line_error(cli("data", "info", "cifar100"), "does not match the CIFAR-100 checksum")
    assert not (home / "cifar-100-python").exists()


@pytest.mark.parametrize("missing", ["test", "meta"])
def test_a_missing_file_is_one_line(cli, home, monkeypatch, missing):
    _archive(home, monkeypatch, _files(**{missing: None}))
    assert_one_line_error(cli("data", "info", "cifar100"), f"cifar-100-python/{missing} is missing",
                          "fetch CIFAR-100 again")


class Touch:
    """A pickle that would create a file when loaded by a full unpickler."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("what", ["code", "not a dict", "no fine_labels", "wrong size", "bad meta"])
def test_a_file_holding_anything_but_plain_data_and_arrays_is_one_line(cli, home, monkeypatch, tmp_path, what):
    sentinel = tmp_path / "ran"
    batch = _batch(200, 0)
    replace = {
        "code": {"train": pickle.dumps({"data": batch["data"], "fine_labels": Touch(sentinel)})},
        "not a dict": {"train": pickle.dumps([batch["data"], batch["fine_labels"]])},
        "no fine_labels": {"train": pickle.dumps({"data": batch["data"], "labels": batch["fine_labels"]})},
        "wrong size": {"train": pickle.dumps({"data": batch["data"][:, :100], "fine_labels": batch["fine_labels"]})},
        "bad meta": {"meta": pickle.dumps({"fine_label_names": NAMES[:10]})},
    }[what]
    _archive(home, monkeypatch, _files(**replace))
    r = cli("data", "info", "cifar100")
    if what == "bad meta":
        assert_one_line_error(r, "does not hold CIFAR-100's 100 fine_label_names")
    else:
        assert_one_line_error(r, "cifar-100-python/train is not a CIFAR-100 batch", "fetch again")
    if what == "code":
        assert "refusing to load" in r.err
    assert not sentinel.exists()


def test_an_archive_member_outside_its_folder_is_refused(cli, home, monkeypatch):
    _archive(home, monkeypatch, _files(**{"../../escaped": b"x"}))
    assert_one_line_error(cli("data", "info", "cifar100"), "could not be extracted")
    assert not (home.parent.parent / "escaped").exists()


def test_cifar10_keeps_its_own_messages(home):
    """The archive code is shared with cifar10 (CifarArchive): its messages still name CIFAR-10 and its files."""
    with pytest.raises(DistillabError, match=r"CIFAR-10 is not in .*cifar-10-batches-py; run 'distillab data fetch "
                                             r"cifar10'"):
        data.load("cifar10", fetch=False)
    (home / "cifar-10-python.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(DistillabError, match="does not match the CIFAR-10 checksum"):
        data.load("cifar10", fetch=False)
