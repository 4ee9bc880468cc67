"""The Python API takes PyTorch objects: modules and factories as models, Datasets, DataLoaders and tensors as data;
distillab.load returns a model file as an nn.Module; repeated notebook calls get fresh folders."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import distillab
from distillab.errors import DistillabError
from distillab.models import build_model


def blobs(n=300, seed=0):
    """Three well separated classes of 1x4x4 'images'."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 1, 4, 4, generator=g) * 0.3 + y.view(-1, 1, 1, 1).float()
    return x, y


class Tiny(nn.Module):
    def __init__(self, input_shape=(1, 4, 4), num_classes=3, hidden=8):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("make_data", [
    lambda x, y: (x, y),
    lambda x, y: (x.numpy(), y.numpy()),
    lambda x, y: TensorDataset(x, y),
    lambda x, y: DataLoader(TensorDataset(x, y), batch_size=64),
    lambda x, y: {"train": TensorDataset(x[:240], y[:240]), "test": (x[240:], y[240:])},
], ids=["tensors", "arrays", "Dataset", "DataLoader", "train-and-test"])
def test_data_from_pytorch_objects(tmp_path, make_data):
    x, y = blobs()
    r = distillab.train(data=make_data(x, y), model="mlp:hidden=8", epochs=5, batch_size=32, out=tmp_path / "t",
                        quiet=True)
    assert r.metrics["test_accuracy"] > 0.9
    assert distillab.load(tmp_path / "t/model.safetensors").distillab["data"]["data"].startswith("python:")


def test_a_module_or_a_factory_as_the_model(tmp_path):
    x, y = blobs()
    module = Tiny()
    r = distillab.train(data=(x, y), model=module, epochs=10, batch_size=32, out=tmp_path / "m", quiet=True)
    assert r.model is module and r.metrics["test_accuracy"] > 0.85  # trained in place, the PyTorch habit
    a = distillab.train(data=(x, y), model=Tiny, epochs=2, out=tmp_path / "f1", quiet=True, seed=3)
    b = distillab.train(data=(x, y), model=Tiny, epochs=2, out=tmp_path / "f2", quiet=True, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))  # seeded factory
    s = distillab.distill(data=(x, y), teacher=module, student=lambda num_classes: Tiny(num_classes=num_classes,
                          hidden=8), epochs=15, batch_size=32, out=tmp_path / "s", quiet=True)
    assert s.metrics["test_accuracy"] > 0.8


def test_load_gives_the_module_back(tmp_path):
    x, y = blobs()
    distillab.train(data=(x, y), model="mlp:hidden=8", epochs=2, out=tmp_path / "t", quiet=True)
    model = distillab.load(tmp_path / "t/model.safetensors")
    assert isinstance(model, nn.Module) and not model.training and model.distillab["spec"] == "mlp:hidden=8"
    assert model(torch.zeros(2, 1, 4, 4)).shape == (2, 3)
    r = distillab.train(data=(x, y), model=Tiny(), epochs=1, out=tmp_path / "m", quiet=True)
    with pytest.raises(DistillabError, match="given from Python"):
        distillab.load(tmp_path / "m/model.safetensors")
    back = distillab.load(tmp_path / "m/model.safetensors", into=Tiny())
    assert torch.equal(back(x[:5]), r.model.eval()(x[:5]))
    distillab.condense_data((x, y), "random", 2, out=tmp_path / "c", quiet=True)
    assert isinstance(distillab.load(tmp_path / "c/synset.safetensors"), distillab.SyntheticSet)


def test_import_specs_take_typed_keywords(tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "from torch import nn\n"
        "def make(input_shape, num_classes, width, deep, rate):\n"
        "    assert isinstance(width, int) and isinstance(deep, bool) and isinstance(rate, float)\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(16, width), nn.Dropout(rate), nn.Linear(width, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("import:mymodels:make:width=4,deep=true,rate=0.5", (1, 4, 4), 3)
    assert model[1].out_features == 4


def test_repeated_calls_get_fresh_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = blobs(60)
    outs = {distillab.train(data=(x, y), model="mlp:hidden=4", epochs=1, quiet=True).out for _ in range(3)}
    assert len(outs) == 3 and all(o.exists() for o in outs)


def test_bad_python_data_is_a_one_line_error():
    with pytest.raises(DistillabError, match="data must be"):
        distillab.train(data=42, model="mlp")
    with pytest.raises(DistillabError, match="items must be"):
        distillab.train(data=[1, 2, 3], model="mlp")
    with pytest.raises(DistillabError, match="not a torch.nn.Module"):
        distillab.train(data=blobs(), model=lambda: 3)
