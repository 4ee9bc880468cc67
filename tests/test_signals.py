"""Data of other shapes: 1-D signals (N, L) and (N, C, L) load through npz:, train with mlp and a 1-D convnet,
distill, condense and evaluate end to end, and export keeps their (standardised) range."""

import json

import numpy as np
import pytest
import torch

from distillab import data
from distillab.dsa import DSA
from distillab.models import build_model

from conftest import assert_one_line_error


def signals(path, channels=None, n=240, length=48, classes=3, seed=0):
    """Noisy sine waves whose frequency is the class, standardised (values well outside [0, 1])."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    t = np.linspace(0, 1, length)
    waves = np.sin(2 * np.pi * (y[:, None] + 1) * t[None, :] + rng.uniform(0, 6.28, (n, 1)))
    x = (waves + 0.3 * rng.standard_normal((n, length))).astype(np.float32) * 2.5 - 1.0
    if channels:
        x = np.stack([x, -x][:channels], axis=1)
        np.savez(path, x=x, y=y, layout=np.array("NCL"))
    else:
        np.savez(path, x=x, y=y)
    return path


def test_signals_load_as_one_row_images(tmp_path):
    ds = data.load(f"npz:{signals(tmp_path / 's.npz')}")
    assert ds.input_shape == (1, 1, 48) and ds.num_classes == 3 and float(ds.train.x.min()) < -1
    two = data.load(f"npz:{signals(tmp_path / 'c.npz', channels=2)}")
    assert two.input_shape == (2, 1, 48)


def test_the_convnet_turns_1d_for_signals():
    net = build_model("convnet:width=8,depth=3", (2, 1, 48), 3)
    assert any(isinstance(m, torch.nn.Conv1d) for m in net.modules())
    assert not any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    assert net(torch.zeros(4, 2, 1, 48)).shape == (4, 3)


def test_dsa_for_signals_keeps_the_ops_that_make_sense_along_a_length():
    dsa = DSA.for_inputs((1, 1, 48))
    assert set(dsa.families) == {"color", "crop", "cutout", "scale"}
    x = torch.randn(5, 1, 1, 48)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        out = dsa(x, g)
        assert out.shape == x.shape and bool(torch.isfinite(out).all())


def test_signals_train_distill_condense_and_evaluate_end_to_end(cli, tmp_path):
    npz = signals(tmp_path / "s.npz", channels=2)
    d = f"npz:{npz}"
    t = cli("train", "--data", d, "--model", "convnet:width=8,depth=2", "--epochs", "15", "--batch-size", "32",
            "--augment", "shift:2", "--quiet", "--out", tmp_path / "t")
    assert t.code == 0, t.err
    assert t.json["test_accuracy"] > 0.6  # chance is 1/3
    k = cli("kd", "--data", d, "--teacher", tmp_path / "t/model.safetensors", "--student", "mlp:hidden=32",
            "--epochs", "15", "--batch-size", "32", "--quiet", "--out", tmp_path / "k")
    assert k.code == 0, k.err
    assert k.json["test_accuracy"] > 0.5
    for method in ("dm:iterations=20,batch_real=16,model=[convnet:width=8,depth=2]", "herding",
                   "bptt:iterations=5,steps=1,epochs=2,batch_real=64,model=[mlp:hidden=16]"):
        c = cli("condense", "--data", d, "--method", method, "--ipc", "4", "--quiet", "--out", tmp_path / method[:4])
        assert c.code == 0, (method, c.err)
    meta = json.loads(json.dumps(__import__("distillab").SyntheticSet.load(tmp_path / "dm:i/synset.safetensors").meta))
    assert meta["dsa_families"] == ["color", "crop", "cutout", "scale"]  # the 1-D choice is recorded
    e = cli("evaluate", tmp_path / "dm:i/synset.safetensors", "--models", "mlp:hidden=32", "convnet:width=8,depth=2",
            "--runs", "2", "--epochs", "200", "--dsa", "--quiet", "--out", tmp_path / "e")
    assert e.code == 0, e.err
    assert e.json["models"]["mlp:hidden=32"]["mean"] > 0.6  # 12 synthetic signals teach well above chance (1/3)
    x = cli("export", tmp_path / "herd/synset.safetensors", "--to", tmp_path / "herding.npz")
    assert x.code == 0, x.err
    exported = np.load(tmp_path / "herding.npz")
    original = np.load(npz)["x"]
    # the data's own layout (N, C, L), and its own range, not clamped to [0, 1]
    assert exported["x"].shape == (12, 2, 48) and str(exported["layout"]) == "NCL" and exported["x"].min() < 0
    # herding picks real examples: each exported one is a training signal, to float precision
    assert all(np.abs(original - e).max(axis=(1, 2)).min() < 1e-5 for e in exported["x"])
    assert cli("export", tmp_path / "herd/synset.safetensors", "--to", tmp_path / "herding.png").code == 0


@pytest.mark.parametrize("spec,fragment", [("lenet5", "at least 4x4"), ("convnet:depth=6", "halves its input")])
def test_models_refuse_signals_they_cannot_take(cli, tmp_path, spec, fragment):
    d = f"npz:{signals(tmp_path / 's.npz')}"
    assert_one_line_error(cli("train", "--data", d, "--model", spec, "--out", tmp_path / "o"), fragment)


def test_one_dimensional_rows_and_function_teachers_come_in_the_datas_own_shape(tmp_path):
    """data export writes 1-D rows as the data came ((N, L) here), and a function teacher gets them so."""
    import numpy as np

    import distillab

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 24)).astype(np.float32)
    y = (x[:, :12].sum(1) > 0).astype(np.int64)
    np.savez(tmp_path / "signals.npz", x=x, y=y)
    data = f"npz:{tmp_path / 'signals.npz'}"
    info = distillab.data_export(data, out=tmp_path / "rows.npz", quiet=True)
    rows = np.load(tmp_path / "rows.npz")
    assert info["layout"] == "NL" and rows["x"].shape == (72, 24) and str(rows["layout"]) == "NL"
    seen = []

    def teacher(batch):
        seen.append(tuple(batch.shape[1:]))
        return np.stack([(batch[:, :12].sum(1) <= 0).float().numpy(), (batch[:, :12].sum(1) > 0).float().numpy()], 1)

    distillab.distill(data=data, teacher=teacher, student="mlp:hidden=8", epochs=1, batch_size=16,
                      out=tmp_path / "kd", quiet=True)
    assert set(seen) == {(24,)}
