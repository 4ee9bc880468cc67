"""A trained model runs without distillab: exported to torch.export (.pt2) and TorchScript (.ts), loaded in a plain
PyTorch process, it gives the same outputs as the model distillab loads (normalisation built in)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import distillab
from distillab import data

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
