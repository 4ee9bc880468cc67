"""A trained model runs without distillab: exported to torch.export (.pt2) and TorchScript (.ts), loaded in a plain
PyTorch process, or to ONNX, run in ONNX Runtime, it gives the same outputs as the model distillab loads
(normalisation built in), for any batch size. Models and synthetic sets of 1-D signals take and give them in the
data's own shape, (B, L) or (B, C, L), not the (B, C, 1, L) distillab holds them in."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import distillab
from distillab import data
from distillab.files import read_meta, save_tensors

from conftest import assert_one_line_error

PLAIN = """
import sys, json, numpy, torch
path, kind = sys.argv[1], sys.argv[2]
model = torch.export.load(path).module() if kind == "pt2" else torch.jit.load(path)
x = torch.from_numpy(numpy.load(sys.argv[3]))
print(json.dumps(model(x).tolist()))
assert "distillab" not in sys.modules
"""


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "s"
    distillab.train(data="digits", model="convnet:width=8,depth=2", epochs=1, out=out, quiet=True)
    return out / "model.safetensors"


@pytest.mark.parametrize("kind", ["pt2", "ts"])
def test_an_exported_model_runs_in_plain_pytorch_with_equal_outputs(cli, tmp_path, student, kind):
    r = cli("export", student, "--to", tmp_path / f"m.{kind}")
    assert r.code == 0, r.err
    raw = data.load("digits").test.x[:7]  # pixels in [0, 1], as the data holds them
    np.save(tmp_path / "x.npy", raw.numpy())
    plain = subprocess.run([sys.executable, "-c", PLAIN, str(tmp_path / f"m.{kind}"), kind, str(tmp_path / "x.npy")],
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr
    model = distillab.load(student)
    norm = model.distillab["normalisation"]
    expected = model(data.normalise(raw, norm["mean"], norm["std"]))
    assert torch.allclose(torch.tensor(json.loads(plain.stdout)), expected, atol=1e-5)


def test_export_refuses_what_it_cannot_do(cli, tmp_path, student):
    assert_one_line_error(cli("export", student, "--to", tmp_path / "m.npz"), "a model exports to")
    try:
        import onnx  # noqa: F401
    except ImportError:
        assert_one_line_error(cli("export", student, "--to", tmp_path / "m.onnx"), "needs the onnx package")
    assert not list(tmp_path.iterdir())


# ---- models of every kind, trained once: images (an MLP, a ConvNet with batch norm) and 1-D signals --------------

LENGTH = 40


def sines(path, channels=None, n=150, classes=3, seed=0):
    """Noisy sine waves whose frequency is the class, standardised (well outside [0, 1]): (N, L) signals, or with
    ``channels`` (N, C, L) ones and a layout array saying so."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    t = np.linspace(0, 1, LENGTH)
    x = np.sin(2 * np.pi * (y[:, None] + 1) * t + rng.uniform(0, 6.28, (n, 1)))
    x = ((x + 0.3 * rng.standard_normal((n, LENGTH))) * 2.5 - 1.0).astype(np.float32)
    if channels:
        np.savez(path, x=np.stack([x, -x][:channels], axis=1), y=y, layout=np.array("NCL"))
    else:
        np.savez(path, x=x, y=y)
    return f"npz:{path}"


KINDS = {"mlp": (None, "mlp:hidden=16"), "convnet-bn": (None, "convnet:width=8,depth=2,norm=batch"),
         "signal-NL": (1, "convnet:width=8,depth=2,norm=batch"), "signal-NCL": (2, "convnet:width=8,depth=2")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``trained(kind)``: the model file of one of KINDS, trained for one epoch the first time it is asked for."""
    root, made = tmp_path_factory.mktemp("kinds"), {}

    def get(kind):
        if kind not in made:
            channels, spec = KINDS[kind]
            d = "digits" if channels is None else sines(root / f"{kind}.npz", channels if channels > 1 else None)
            distillab.train(data=d, model=spec, epochs=1, batch_size=32, out=root / kind, quiet=True)
            made[kind] = root / kind / "model.safetensors"
        return made[kind]
    return get


def reference(path, n):
    """The first ``n`` test examples of the model's data as the data holds them (signals: (n, L) or (n, C, L)) and
    the logits of the model distillab loads for them, normalised and held as (n, C, H, W)."""
    model = distillab.load(path)
    meta = model.distillab
    held = data.load(meta["data"]["data"]).test.x[:n]  # (n, C, H, W): signals as (n, C, 1, L)
    norm = meta["normalisation"]
    with torch.no_grad():
        logits = model(data.normalise(held, norm["mean"], norm["std"]))
    return data.to_natural(held, meta.get("layout")), logits


@pytest.mark.parametrize("kind", list(KINDS))
def test_an_onnx_export_runs_in_onnxruntime_with_equal_outputs_for_any_batch(trained, tmp_path, kind):
    ort = pytest.importorskip("onnxruntime")
    path = trained(kind)
    info = distillab.export(path, tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # one file: no side file of weights
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (x,), (y,) = session.get_inputs(), session.get_outputs()
    assert (x.name, y.name) == ("x", "logits") and x.shape == ["batch", *info["input_shape"]]
    for n in (7, 1):  # exported with a batch of 2
        raw, expected = reference(path, n)
        assert list(raw.shape[1:]) == info["input_shape"]
        got = session.run(None, {"x": raw.numpy()})[0]
        assert got.shape == tuple(expected.shape)
        np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=1e-5)


def test_a_loaded_1d_model_takes_signals_as_the_data_holds_them(trained):
    one, two = distillab.load(trained("signal-NL")), distillab.load(trained("signal-NCL"))
    assert one.distillab["layout"] == "NL" and one.distillab["input_shape"] == [1, 1, LENGTH]
    assert two.distillab["layout"] == "NCL" and two.distillab["input_shape"] == [2, 1, LENGTH]
    x = torch.randn(5, 1, 1, LENGTH)
    with torch.no_grad():
        held = one(x)
        assert torch.equal(one(x[:, 0, 0]), held) and torch.equal(one(x[:, 0]), held)  # (B, L), (B, 1, L)
        assert held.shape == (5, 3)
        x2 = torch.randn(4, 2, 1, LENGTH)
        assert torch.equal(two(x2[:, :, 0]), two(x2))  # (B, C, L)
    for model, bad in ((one, torch.zeros(3, LENGTH + 1)), (one, torch.zeros(3, 2, LENGTH)),
                       (one, torch.zeros(3, 1, 2, LENGTH)), (two, torch.zeros(3, LENGTH))):
        with pytest.raises(distillab.DistillabError, match="takes 1-D signals of shape") as e:
            model(bad)
        assert str(tuple(bad.shape)) in str(e.value)
    with pytest.raises(distillab.DistillabError) as e:
        one(torch.zeros(3, 7))
    assert f"(B, {LENGTH}) or (B, 1, {LENGTH}) or (B, 1, 1, {LENGTH})" in str(e.value)
    assert f"(B, 2, {LENGTH}) or (B, 2, 1, {LENGTH})" in str(pytest.raises(distillab.DistillabError, two,
                                                                            torch.zeros(1, LENGTH)).value)


@pytest.mark.parametrize("kind", ["signal-NL", "signal-NCL"])
def test_a_1d_model_exports_to_the_data_shape(cli, trained, tmp_path, kind):
    path = trained(kind)
    r = cli("export", path, "--to", tmp_path / "m.pt2")
    assert r.code == 0, r.err
    natural = [LENGTH] if kind == "signal-NL" else [2, LENGTH]
    assert r.json["input_shape"] == natural and r.json["layout"] == kind.split("-")[1]
    assert f"(B, {', '.join(map(str, natural))})" in r.json["inputs"]
    program = torch.export.load(tmp_path / "m.pt2").module()
    for n in (7, 1):
        raw, expected = reference(path, n)
        assert list(raw.shape) == [n, *natural]
        assert torch.allclose(program(raw), expected, atol=1e-5)
    with pytest.raises(Exception, match=str(natural[0])):  # the guard names the size it takes
        program(torch.zeros(3, 1, 1, LENGTH))
    assert distillab.export(path, tmp_path / "m.ts")["input_shape"] == natural
    scripted = torch.jit.load(str(tmp_path / "m.ts"))
    raw, expected = reference(path, 5)
    assert torch.allclose(scripted(raw), expected, atol=1e-5)
    with pytest.raises(Exception, match=r"takes 1-D signals of shape \(B, "):
        scripted(torch.zeros(3, 1, 1, LENGTH))


def test_a_condensed_1d_set_exports_in_the_data_shape(cli, tmp_path):
    for channels, shape in ((None, (6, LENGTH)), (2, (6, 2, LENGTH))):
        d = sines(tmp_path / f"{channels}.npz", channels)
        out = tmp_path / f"herding-{channels}"
        r = cli("condense", "--data", d, "--method", "herding", "--ipc", "2", "--quiet", "--out", out)
        assert r.code == 0, r.err
        synset = distillab.load(out / "synset.safetensors")
        assert synset.images.shape == (6, channels or 1, 1, LENGTH)  # held inside as one-row images
        assert synset.layout == ("NCL" if channels else "NL") and tuple(synset.pixels().shape) == shape
        x = cli("export", out / "synset.safetensors", "--to", tmp_path / f"{channels}.set.npz")
        assert x.code == 0, x.err
        assert x.json["layout"] == synset.layout and x.json["shape"] == list(shape[1:])
        exported = np.load(tmp_path / f"{channels}.set.npz")
        assert exported["x"].shape == shape and str(exported["layout"]) == synset.layout
        original = np.load(tmp_path / f"{channels}.npz")["x"]  # herding keeps real examples: they come back as given
        assert all(np.abs(original - e).reshape(len(original), -1).max(1).min() < 1e-5 for e in exported["x"])
        again = data.load(f"npz:{tmp_path / f'{channels}.set.npz'}")  # and load as the data they came from
        assert again.input_shape == (channels or 1, 1, LENGTH) and again.layout == synset.layout


def test_files_without_a_layout_keep_working_as_before(trained, tmp_path):
    """Model and set files written before layouts were recorded: signals held as (B, C, 1, L), as then."""
    old = tmp_path / "old.safetensors"
    meta = {k: v for k, v in read_meta(trained("signal-NL")).items() if k != "layout"}
    save_tensors(old, load_file(str(trained("signal-NL"))), meta)
    model = distillab.load(old)
    assert "layout" not in model.distillab and not model._forward_pre_hooks
    raw, expected = reference(trained("signal-NL"), 4)
    info = distillab.export(old, tmp_path / "old.pt2")
    assert info["input_shape"] == [1, 1, LENGTH] and "layout" not in info
    held = raw[:, None, None, :]
    assert torch.allclose(torch.export.load(tmp_path / "old.pt2").module()(held), expected, atol=1e-5)
    synset = distillab.SyntheticSet(images=torch.randn(2, 1, 1, LENGTH), labels=torch.tensor([0, 1]),
                                    classes=["a", "b"], mean=(0.0,), std=(1.0,))
    synset.export_npz(tmp_path / "old.npz")
    assert np.load(tmp_path / "old.npz")["x"].shape == (2, 1, 1, LENGTH)


def test_a_forged_layout_is_refused(trained, tmp_path):
    forged = tmp_path / "forged.safetensors"
    save_tensors(forged, load_file(str(trained("signal-NCL"))), {**read_meta(trained("signal-NCL")), "layout": "NL"})
    with pytest.raises(distillab.DistillabError, match="'layout' must be NL"):
        distillab.load(forged)


def test_data_info_names_the_shape_models_of_signals_take(tmp_path):
    described = data.info(data.load(sines(tmp_path / "s.npz")))["layout"]
    assert described.startswith("1-D signals") and f"take (B, {LENGTH})" in described
