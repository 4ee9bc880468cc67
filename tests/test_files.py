import json

import pytest
import torch
from safetensors.torch import save_file

from distillab.errors import DistillabError
from distillab.files import read_meta
from distillab.models import load_model, save_model
from distillab.models import build_model


def test_model_roundtrip_is_self_describing(tmp_path):
    model = build_model("convnet:width=8,norm=batch", (1, 8, 8), 10).eval()
    path = tmp_path / "model.safetensors"
    save_model(path, model, spec="convnet:width=8,norm=batch", input_shape=(1, 8, 8), classes=list("0123456789"),
               mean=(0.3,), std=(0.4,), recipe={"label_smoothing": 0.1}, data={"data": "digits"})
    loaded, meta = load_model(path)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(model(x), loaded(x))
    assert meta["spec"] == "convnet:width=8,norm=batch" and meta["recipe"]["label_smoothing"] == 0.1
    assert meta["normalisation"] == {"mean": [0.3], "std": [0.4]} and "distillab_version" in meta
    assert not path.with_name("model.safetensors.part").exists()
    assert b"pickle" not in path.read_bytes()[:200]


def test_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(DistillabError, match="no such file"):
        load_model(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DistillabError, match="not a readable safetensors"):
        load_model(tmp_path / "junk.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(DistillabError, match="without distillab metadata"):
        read_meta(tmp_path / "plain.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"),
              metadata={"distillab": json.dumps({"format": "distillab.synset"})})
    with pytest.raises(DistillabError, match="expected 'distillab.model'"):
        load_model(tmp_path / "other.safetensors")


def test_truncated_file(tmp_path):
    model = build_model("mlp:hidden=8", (1, 8, 8), 10)
    path = tmp_path / "m.safetensors"
    save_model(path, model, spec="mlp:hidden=8", input_shape=(1, 8, 8), classes=list("0123456789"), mean=(0,), std=(1,))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DistillabError):
        load_model(path)


def test_atomic_path_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    from distillab.files import atomic_path

    with atomic_path(tmp_path / "a.npz", ".npz") as tmp:
        assert tmp.name == "a.npz.part.npz"
        tmp.write_bytes(b"done")
    assert (tmp_path / "a.npz").read_bytes() == b"done"
    (tmp_path / "b.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert (tmp_path / "b.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.txt"]
