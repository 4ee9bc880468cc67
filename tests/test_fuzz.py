"""Property-based fuzzing of every reader of outside input (Hypothesis): safetensors metadata of model and set
files, npz data, image folders, recipe YAML and teacher-output tables. Whatever the input, the reader returns or
raises DistillabError (the one-line error) -- never another exception, and never imports code named by a file."""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from distillab import data
from distillab.cli import build_parser, recipe_argv
from distillab.condense import SyntheticSet
from distillab.errors import DistillabError
from distillab.files import read_meta
from distillab.kd import load_teacher_outputs
from distillab.models import load_model

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
specs = st.sampled_from(["mlp:hidden=8", "convnet:width=4,depth=2", "lenet5", "import:trap:make", "import:os:system",
                         "mlp:hidden=-3", "nope", "", "mlp:hidden=8,bogus=1", "resnet18:width=2"])


def _expect_clean(fn, *args):
    """Runs a reader: it may succeed or raise DistillabError with a one-line message; nothing else."""
    try:
        return fn(*args)
    except DistillabError as e:
        assert "\n" not in str(e).strip(), str(e)
        return None
    finally:
        assert "trap" not in sys.modules, "a file made distillab import code"


def _write_safetensors(path: Path, tensors: dict, meta) -> None:
    save_file(tensors, str(path), metadata={"distillab": meta if isinstance(meta, str) else json.dumps(meta)})


def _tensor(draw_shape, dtype):
    n = int(np.prod(draw_shape)) if draw_shape else 1
    values = torch.linspace(-3, 3, max(n, 1))[:n].reshape(draw_shape)
    return values.to(dtype)


shapes = st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple)
dtypes = st.sampled_from([torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool])


@FUZZ
@given(spec=specs | json_values, input_shape=json_values | st.just([1, 8, 8]) | st.just([1, 1, 4096]),
       classes=json_values | st.just([str(i) for i in range(10)]),
       norm=json_values | st.just({"mean": [0.5], "std": [0.2]}), fmt=st.sampled_from(["distillab.model", "other", 3]),
       extra=st.dictionaries(st.text(max_size=6), json_values, max_size=3),
       tensors=st.dictionaries(st.sampled_from(["features.1.weight", "features.1.bias", "classifier.weight", "x"]),
                               st.tuples(shapes, dtypes), max_size=3))
def test_model_files(spec, input_shape, classes, norm, fmt, extra, tensors):
    meta = {**extra, "format": fmt, "spec": spec, "input_shape": input_shape, "classes": classes,
            "normalisation": norm}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        _write_safetensors(path, {k: _tensor(*v) for k, v in tensors.items()} or {"x": torch.zeros(1)}, meta)
        _expect_clean(load_model, path)


@FUZZ
@given(meta=json_values, raw=st.binary(max_size=300))
def test_any_metadata_and_any_bytes(meta, raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        _write_safetensors(path, {"x": torch.zeros(2)}, meta)
        _expect_clean(read_meta, path)
        _expect_clean(load_model, path)
        path.write_bytes(raw)
        _expect_clean(read_meta, path)
        _expect_clean(SyntheticSet.load, path)


@FUZZ
@given(images=st.tuples(shapes, dtypes), labels=st.tuples(shapes, dtypes), classes=json_values,
       norm=json_values | st.just({"mean": [0.0], "std": [1.0]}),
       extra=st.dictionaries(st.sampled_from(["lrs", "label_logits", "init.weight"]), st.tuples(shapes, dtypes),
                             max_size=2),
       meta_extra=st.dictionaries(st.sampled_from(["method", "bptt", "source", "ipc"]), json_values, max_size=3))
def test_synset_files(images, labels, classes, norm, extra, meta_extra):
    tensors = {"images": _tensor(*images), "labels": _tensor(*labels), **{k: _tensor(*v) for k, v in extra.items()}}
    meta = {"format": "distillab.synset", "classes": classes, "normalisation": norm, **meta_extra}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.safetensors"
        _write_safetensors(path, tensors, meta)
        s = _expect_clean(SyntheticSet.load, path)
        if s is not None:  # what loads is usable
            assert s.targets().shape == (len(s.labels), len(s.classes))


@FUZZ
@given(kind=st.sampled_from(["top", "all", "spectral", "bogus"]) | json_values,
       tensors=st.dictionaries(st.sampled_from(["top/mean", "top/chol", "top/var", "top/basis", "top/centre",
                                                "fc/mean", "fc/var", "x"]), st.tuples(shapes, dtypes), max_size=5),
       classes=json_values | st.just(["a", "b"]), shape=json_values | st.just([1, 1, 3]),
       layers=json_values | st.just(["top"]) | st.just(["fc", "top"]), temperature=json_values | st.just(1.0))
def test_teacher_records_files(kind, tensors, classes, shape, layers, temperature):
    from distillab.datafree import TeacherRecords

    meta = {"format": "distillab.teacher-records", "kind": kind, "classes": classes, "input_shape": shape,
            "normalisation": {"mean": [0.0], "std": [1.0]}, "layers": layers, "temperature": temperature}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.safetensors"
        _write_safetensors(path, {k: _tensor(*v) for k, v in tensors.items()} or {"x": torch.zeros(1)}, meta)
        rec = _expect_clean(TeacherRecords.load, path)
        if rec is not None:  # what loads can be sampled and compared
            drawn = rec.sample(torch.zeros(3, dtype=torch.long), torch.Generator().manual_seed(0))
            assert set(drawn) == set(rec.stats)


np_dtypes = st.sampled_from([np.uint8, np.float32, np.float64, np.int64, np.int8, np.bool_, np.complex64, "<U3"])
arrays = st.tuples(st.lists(st.integers(0, 6), min_size=0, max_size=5).map(tuple), np_dtypes).map(
    lambda sd: (np.arange(int(np.prod(sd[0]))).reshape(sd[0]) % 7).astype(sd[1]))


@FUZZ
@given(contents=st.dictionaries(st.sampled_from(["x", "y", "x_test", "y_test", "layout", "junk"]), arrays,
                                max_size=5),
       layout=st.none() | st.sampled_from(["NL", "NCL", "NHW", "NCHW", "NHWC", "XYZ"]), raw=st.binary(max_size=200))
def test_npz_data(contents, layout, raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        if layout is not None:
            contents = {**contents, "layout": np.array(layout)}
        np.savez(path, **contents)
        ds = _expect_clean(data.load, f"npz:{path}")
        if ds is not None:  # what loads can be split and trained on
            splits = _expect_clean(data.split, ds)
            assert splits is None or splits.num_classes >= 2
        path.write_bytes(raw)
        _expect_clean(data.load, f"npz:{path}")


@FUZZ
@given(tree=st.dictionaries(st.sampled_from(["a", "b", "c", ".hidden", "train", "test"]),
                            st.lists(st.tuples(st.sampled_from(["1.png", "2.png", "3.jpg", "x.txt", "4.png"]),
                                               st.sampled_from(["L", "RGB", "RGBA", "junk", "P"]),
                                               st.integers(1, 5), st.integers(1, 5)), max_size=4), max_size=4))
def test_image_folders(tree):
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for folder, files in tree.items():
            (root / folder).mkdir()
            for name, mode, w, h in files:
                if mode == "junk":
                    (root / folder / name).write_bytes(b"\x89PNG not really")
                else:
                    Image.new(mode, (w, h)).save(root / folder / name, format="PNG")
        _expect_clean(data.load, f"folder:{root}")


recipe_text = st.one_of(
    st.text(max_size=200),
    st.dictionaries(st.sampled_from(["command", "model", "epochs", "data", "loss", "quiet", "out", "teacher",
                                     "method", "ipc", "seeds", "tap", "bogus"]),
                    json_values, max_size=6).map(lambda d: json.dumps(d)),
    st.builds(lambda c, rest: f"command: {c}\n{rest}", st.sampled_from(["train", "kd", "condense", "run", "x"]),
              st.text(max_size=80)))


@FUZZ
@given(text=recipe_text, raw=st.binary(max_size=100))
def test_recipes(text, raw):
    parser = build_parser()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.yaml"
        for content in (text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text, raw):
            try:
                path.write_bytes(content)
            except (UnicodeEncodeError, ValueError):
                continue
            argv = _expect_clean(recipe_argv, str(path), parser)
            if argv is not None:
                _expect_clean(parser.parse_args, argv)


@pytest.fixture(scope="module")
def digits_splits():
    return data.split(data.load("digits"))


table_keys = st.sampled_from(["index", "labels", "logits", "probs", "topk_index", "topk_prob", "split"])


@pytest.mark.filterwarnings("ignore:.*agree with the labels")  # random tables agree at chance: the warning is right
@FUZZ
@given(contents=st.dictionaries(table_keys, arrays, max_size=5), index_scale=st.sampled_from([1, 10**12, -1]),
       full=st.booleans())
def test_teacher_output_tables(digits_splits, contents, index_scale, full):
    n, k = len(digits_splits.train) + digits_splits.val_size, digits_splits.num_classes
    if full:  # a well-shaped table, then the fuzzed arrays on top of it
        rng = np.random.default_rng(0)
        probs = rng.dirichlet(np.ones(k), size=n).astype(np.float32)
        contents = {"index": np.arange(n) * index_scale, "probs": probs, **contents}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.npz"
        np.savez(path, **contents)
        _expect_clean(load_teacher_outputs, path, digits_splits)
