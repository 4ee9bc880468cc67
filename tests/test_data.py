import pickle

import numpy as np
import pytest
import torch

from distillab import data
from distillab.data.sources import mnist
from distillab.errors import DistillabError

from conftest import write_npz


def test_digits_shapes_and_range():
    ds = data.load("digits")
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    assert len(ds.train) + len(ds.test) == 1797
    assert 0 <= float(ds.train.x.min()) and float(ds.train.x.max()) <= 1


def test_split_is_seeded_disjoint_and_normalised():
    ds = data.load("digits")
    a, b = data.split(ds, val_size=100, seed=3), data.split(ds, val_size=100, seed=3)
    c = data.split(ds, val_size=100, seed=4)
    assert torch.equal(a.train_index, b.train_index) and not torch.equal(a.train_index, c.train_index)
    assert len(a.val) == 100 and len(a.train) == len(ds.train) - 100
    all_index = set(range(len(ds.train)))
    assert set(a.train_index.tolist()) < all_index
    # normalised with the dataset's statistics
    assert abs(float(a.train.x.mean())) < 0.1 and abs(float(a.train.x.std()) - 1) < 0.1
    with pytest.raises(DistillabError, match="val-size"):
        data.split(ds, val_size=len(ds.train))


def test_npz_channel_last_uint8_and_holdout(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (50, 6, 6, 3), dtype=np.uint8)
    y = np.arange(50) % 5
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = data.load(f"npz:{tmp_path / 'd.npz'}")
    assert ds.input_shape == (3, 6, 6) and ds.num_classes == 5 and ds.is_colour
    assert len(ds.train) == 40 and len(ds.test) == 10
    # every image survives the channel move and the /255 scaling
    ours = torch.cat([ds.train.x, ds.test.x]).mul(255).round().sum(dim=(1, 2, 3)).sort().values
    theirs = torch.tensor(x, dtype=torch.float32).sum(dim=(1, 2, 3)).sort().values
    assert torch.equal(ours, theirs)


def test_npz_with_test_arrays(tmp_path):
    ds = data.load(f"npz:{write_npz(tmp_path / 'd.npz', with_test=True)}")
    assert len(ds.train) == 60 and len(ds.test) == 20 and ds.input_shape == (1, 8, 8)


def test_npz_errors(tmp_path):
    with pytest.raises(DistillabError, match="no such file"):
        data.load(f"npz:{tmp_path / 'missing.npz'}")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DistillabError, match="not a readable"):
        data.load(f"npz:{tmp_path / 'bad.npz'}")
    x = np.zeros((10, 8, 8), np.float32)
    x[0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(10) % 2)
    with pytest.raises(DistillabError, match="NaN"):
        data.load(f"npz:{tmp_path / 'nan.npz'}")
    np.savez(tmp_path / "noy.npz", x=x)
    with pytest.raises(DistillabError, match="'x' and 'y'"):
        data.load(f"npz:{tmp_path / 'noy.npz'}")


def test_unknown_dataset():
    with pytest.raises(DistillabError, match="unknown dataset"):
        data.load("imagenet")


def test_folder_source(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.fromarray((rng.random((5, 5)) * 100 + 100 * c).astype(np.uint8)).save(tmp_path / name / f"{i}.png")
    ds = data.load(f"folder:{tmp_path}")
    assert ds.classes == ["cat", "dog"] and ds.input_shape == (1, 5, 5)
    assert len(ds.train) == 16 and len(ds.test) == 4


def test_idx_roundtrip(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    mnist._write_idx(tmp_path / "x", a)
    assert np.array_equal(mnist._read_idx(tmp_path / "x"), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03")
    with pytest.raises(DistillabError):
        mnist._read_idx(tmp_path / "bad")


def test_safe_unpickler_allows_arrays_refuses_code():
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2]))
    assert np.array_equal(data._safe_unpickle(pickle.dumps(arrays))[0], arrays[0])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError):
        data._safe_unpickle(pickle.dumps(Evil()))


def test_cifar10_from_local_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLAB_DATA", str(tmp_path))
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), b"labels": list(range(10))}
        (folder / name).write_bytes(pickle.dumps(batch))
    ds = data.load("cifar10")
    assert ds.input_shape == (3, 32, 32) and len(ds.train) == 50 and len(ds.test) == 10 and ds.num_classes == 10


def test_mnist_cache_corruption_detected(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLAB_DATA", str(tmp_path))
    folder = tmp_path / "mnist"
    folder.mkdir()
    arrays = [np.zeros((60000, 28, 28), np.uint8), np.zeros(60000, np.uint8), np.zeros((10000, 28, 28), np.uint8),
              np.zeros(10000, np.uint8)]
    for name, a in zip(mnist.MNIST_FILES, arrays):
        mnist._write_idx(folder / name, a)
    (folder / "SHA256").write_text("0" * 64)
    with pytest.raises(DistillabError, match="corrupt"):
        data.load("mnist")


@pytest.mark.mnist
def test_mnist_real():
    ds = data.load("mnist")
    assert len(ds.train) == 60000 and len(ds.test) == 10000 and ds.input_shape == (1, 28, 28)
    assert torch.bincount(ds.test.y).tolist()[3] == 1010  # Hinton et al. 2015: 1010 test 3s
    assert ds.mean == (0.1307,) and ds.std == (0.3081,)
    assert float(ds.train.x.max()) <= 1.0 and (ds.train.x * 255).round().eq(ds.train.x * 255).float().mean() > 0.99
