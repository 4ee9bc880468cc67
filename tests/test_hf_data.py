"""hf:PATH_OR_NAME[:key=value,...]: image-classification data in the Hugging Face ``datasets`` format -- a
save_to_disk folder built here from scikit-learn's digits trains, distills and condenses through the API and the
CLI, passes the data-source contract, and every bad input is one DistillabError line."""

import io
import struct
import sys
import time
import zlib

import numpy as np
import pytest
import torch

datasets = pytest.importorskip("datasets")  # the test extra installs it; without it only this file is skipped

import distillab  # noqa: E402
from distillab import data  # noqa: E402
from distillab.condense import SyntheticSet  # noqa: E402
from distillab.data.sources import hf  # noqa: E402
from distillab.errors import DistillabError  # noqa: E402
from distillab.testing import check_dataset  # noqa: E402

from conftest import assert_one_line_error  # noqa: E402

CLASSES = [f"digit-{i}" for i in range(10)]


def _digits(n_train=300, n_test=100):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images * 16).clip(0, 255).astype(np.uint8)  # 0..16 -> 0..255 (256 -> 255)
    return x[:n_train], d.target[:n_train], x[n_train:n_train + n_test], d.target[n_train:n_train + n_test]


def _images(x, mode="L"):
    from PIL import Image

    return [Image.fromarray(a).convert(mode) for a in x]


def _features(image="image", label="label"):
    return datasets.Features({image: datasets.Image(), label: datasets.ClassLabel(names=CLASSES)})


def _split(x, y, image="image", label="label", mode="L"):
    return datasets.Dataset.from_dict({image: _images(x, mode), label: [int(v) for v in y]},
                                      features=_features(image, label))


@pytest.fixture(scope="module")
def digits_hf(tmp_path_factory):
    """sklearn's digits as a DatasetDict (300 train / 100 test, 8x8 grey, a ClassLabel), saved with save_to_disk."""
    xtr, ytr, xte, yte = _digits()
    path = tmp_path_factory.mktemp("hf") / "digits"
    datasets.DatasetDict({"train": _split(xtr, ytr), "test": _split(xte, yte)}).save_to_disk(str(path))
    return path


def _save(tmp_path, name, splits):
    path = tmp_path / name
    (datasets.DatasetDict(splits) if isinstance(splits, dict) else splits).save_to_disk(str(path))
    return path


def test_the_source_meets_the_contract(digits_hf):
    check_dataset(hf.HF, str(digits_hf))


def test_images_labels_and_class_names_come_through(digits_hf):
    xtr, ytr, xte, yte = _digits()
    ds = data.load(f"hf:{digits_hf}")
    assert ds.spec == f"hf:{digits_hf}" and ds.classes == CLASSES and ds.input_shape == (1, 8, 8)
    assert ds.train.x.dtype == torch.float32 and float(ds.train.x.min()) >= 0 and float(ds.train.x.max()) <= 1
    assert torch.equal(ds.train.x[:, 0].mul(255).round(), torch.tensor(xtr, dtype=torch.float32))
    assert torch.equal(ds.train.y, torch.tensor(ytr)) and torch.equal(ds.test.y, torch.tensor(yte))
    assert len(ds.test) == 100 and "save_to_disk" in ds.source


def test_colour_stays_three_channels_and_grey_one(tmp_path):
    xtr, ytr, xte, yte = _digits(40, 20)
    path = _save(tmp_path, "rgb", {"train": _split(xtr, ytr, mode="RGB"), "test": _split(xte, yte, mode="RGB")})
    ds = data.load(f"hf:{path}")
    assert ds.input_shape == (3, 8, 8) and len(ds.mean) == 3
    assert torch.equal(ds.train.x[:, 0], ds.train.x[:, 2])  # grey pictures saved as RGB keep their three channels


def test_named_splits_and_a_held_out_fifth(tmp_path):
    xtr, ytr, xte, yte = _digits(100, 30)
    path = _save(tmp_path, "splits", {"fit": _split(xtr, ytr), "validation": _split(xte, yte)})
    ds = data.load(f"hf:{path}:train_split=fit,test_split=validation")
    assert (len(ds.train), len(ds.test)) == (100, 30)
    held = data.load(f"hf:{path}:train_split=fit")  # no 'test' split: a seeded fifth of the training split
    assert (len(held.train), len(held.test)) == (80, 20) and "held out" in held.source
    one = _save(tmp_path, "one", _split(xtr, ytr))  # a single Dataset
    assert len(data.load(f"hf:{one}").test) == 20
    with pytest.raises(DistillabError, match="no split 'test2'.*fit, validation"):
        data.load(f"hf:{path}:train_split=fit,test_split=test2")
    with pytest.raises(DistillabError, match="no split 'train'"):
        data.load(f"hf:{path}")


def test_columns_are_found_or_named(tmp_path):
    xtr, ytr, _, _ = _digits(60, 0)
    # an Image column and a ClassLabel under other names: found by their features
    path = _save(tmp_path, "pic", _split(xtr, ytr, image="pic", label="digit"))
    assert data.load(f"hf:{path}").classes == CLASSES
    # two Image columns and an integer label column: the names say which
    two = datasets.Dataset.from_dict({"left": _images(xtr), "right": _images(255 - xtr), "target": ytr.tolist(),
                                      "other": ytr.tolist()},
                                     features=datasets.Features({"left": datasets.Image(), "right": datasets.Image(),
                                                                 "target": datasets.Value("int64"),
                                                                 "other": datasets.Value("int64")}))
    path = _save(tmp_path, "two", two)
    with pytest.raises(DistillabError, match="several Image columns.*image_column="):
        data.load(f"hf:{path}")
    with pytest.raises(DistillabError, match="none named label or labels.*label_column="):
        data.load(f"hf:{path}:image_column=right")
    ds = data.load(f"hf:{path}:image_column=right,label_column=target")
    assert ds.classes == [str(i) for i in range(10)]  # no ClassLabel: classes are the numbers
    left = data.load(f"hf:{path}:image_column=left,label_column=target")
    assert torch.allclose(ds.train.x + left.train.x, torch.ones_like(ds.train.x))


def test_a_missing_or_wrong_column_is_one_line(tmp_path, digits_hf, cli):
    with pytest.raises(DistillabError, match=r"no column 'pixels' \(its columns: image, label\)"):
        data.load(f"hf:{digits_hf}:image_column=pixels")
    with pytest.raises(DistillabError, match="no column 'y'"):
        data.load(f"hf:{digits_hf}:label_column=y")
    with pytest.raises(DistillabError, match="'image' holds Image, not class labels"):
        data.load(f"hf:{digits_hf}:label_column=image")
    with pytest.raises(DistillabError, match="unknown option.*image_column, label_column"):
        data.load(f"hf:{digits_hf}:colour=1")
    r = cli("train", "--data", f"hf:{digits_hf}:image_column=pixels", "--model", "mlp:hidden=8",
            "--out", tmp_path / "x")
    assert_one_line_error(r, "no column 'pixels'")


def test_a_path_that_does_not_exist(tmp_path, cli):
    with pytest.raises(DistillabError, match="no such folder"):
        data.load(f"hf:{tmp_path / 'missing'}")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DistillabError, match="not a folder written by save_to_disk"):
        data.load(f"hf:{tmp_path / 'plain'}")
    r = cli("train", "--data", f"hf:{tmp_path / 'missing'}", "--model", "mlp:hidden=8", "--out", tmp_path / "x")
    assert_one_line_error(r, "no such folder")


def test_without_the_datasets_package(digits_hf, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises ImportError
    with pytest.raises(DistillabError, match=r"pip install 'distillab\[hf\]'") as e:
        data.load(f"hf:{digits_hf}")
    assert "\n" not in str(e.value) and "pip install datasets" in str(e.value)


def test_offline_a_name_not_in_the_cache_is_one_line(monkeypatch, tmp_path, cli):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # read when the spec is loaded, though datasets is imported
    spec = "hf:distillab-tests/no-such-dataset-7f3a"
    start = time.monotonic()
    with pytest.raises(DistillabError, match="not in the local Hugging Face cache.*HF_DATASETS_OFFLINE") as e:
        data.load(spec)
    assert spec in str(e.value) and "\n" not in str(e.value)
    r = cli("train", "--data", spec, "--model", "mlp:hidden=8", "--out", tmp_path / "x")
    assert_one_line_error(r, spec, "offline")
    assert time.monotonic() - start < 30  # no network wait


def test_without_fetching_a_name_is_looked_up_offline_only(monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    switch = datasets.config.HF_HUB_OFFLINE
    start = time.monotonic()
    with pytest.raises(DistillabError, match="offline: no download asked for"):
        data.load("hf:distillab-tests/no-such-dataset-7f3a", fetch=False)
    assert time.monotonic() - start < 10
    assert datasets.config.HF_HUB_OFFLINE == switch  # the switch is put back


def test_an_old_datasets_loads_no_name(monkeypatch, digits_hf):
    """datasets before 2.16 ran a hub dataset's loading script without asking: with it, only folders load."""
    monkeypatch.setattr(datasets, "__version__", "2.15.0")
    with pytest.raises(DistillabError, match=r"needs datasets>=2\.16"):
        data.load("hf:owner/some-dataset")
    assert len(data.load(f"hf:{digits_hf}").train) == 300


def _forged_png(width, height):
    """A PNG whose header claims width x height (its pixels are not there)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


def _forged_rows(path, paths: dict):
    """The save_to_disk folder ``path`` with rows ``paths`` rewritten to name a file instead of holding bytes (as a
    forged file could: save_to_disk itself would look the files up)."""
    import pyarrow as pa

    (arrow,) = path.glob("*.arrow")
    table = pa.ipc.open_stream(arrow.read_bytes()).read_all()  # in memory: the file is written over below
    rows = table.column("image").to_pylist()
    for i, p in paths.items():
        rows[i] = {"bytes": None, "path": p}
    column = pa.array(rows, type=table.schema.field("image").type)
    table = table.set_column(table.schema.get_field_index("image"), table.schema.field("image"), column)
    with pa.OSFile(str(arrow), "wb") as f, pa.ipc.new_stream(f, table.schema) as writer:
        writer.write_table(table)
    return path


def _raw(images, labels):
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=_features())


def test_hostile_datasets_end_in_one_line(tmp_path, monkeypatch):
    xtr, ytr, _, _ = _digits(30, 0)

    def refused(path, *fragments):
        with pytest.raises(DistillabError) as e:
            data.load(f"hf:{path}")
        assert "\n" not in str(e.value) and all(f in str(e.value) for f in fragments), str(e.value)

    def never_decoded(*_):
        raise AssertionError("pixels were decoded before the sizes were checked")

    monkeypatch.setattr(hf._Rows, "pixels", never_decoded)
    # 30 rows claiming 9000x9000 each: ~29 GiB of float pixels, refused from the first header
    huge = _raw([{"bytes": _forged_png(9000, 9000), "path": None}] * 30, ytr.tolist())
    refused(_save(tmp_path, "huge", huge), "GiB")
    monkeypatch.undo()
    png = io.BytesIO()
    _images(xtr[:1])[0].resize((9, 9)).save(png, format="PNG")
    mixed = [{"bytes": png.getvalue(), "path": None}] + _images(xtr[1:])
    refused(_save(tmp_path, "mixed", _raw(mixed, ytr.tolist())), "images differ in size", "9x9", "8x8")
    refused(_save(tmp_path, "garbage", _raw([{"bytes": b"not an image", "path": None}] + _images(xtr[1:]),
                                            ytr.tolist())),
            "row 0 is not a readable image")
    refused(_forged_rows(_save(tmp_path, "url", _split(xtr, ytr)), {3: "https://example.com/x.png"}),
            "row 3 names a remote image")
    refused(_forged_rows(_save(tmp_path, "nofile", _split(xtr, ytr)), {0: str(tmp_path / "gone.png")}),
            "row 0 names an image file that is not here")
    refused(_save(tmp_path, "unlabelled", _raw(_images(xtr), [-1] + ytr[1:].tolist())), "label -1",
            "without a label")
    # one plain whole-number label of two billion: classes 0..2e9 would be made before any check (a MemoryError)
    whole_numbers = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    vast = datasets.Dataset.from_dict({"image": _images(xtr), "label": [2_000_000_000] + ytr[1:].tolist()},
                                      features=whole_numbers)
    refused(_save(tmp_path, "vast", vast), "more than", "classes")
    script = _save(tmp_path, "script", _split(xtr, ytr))
    (script / "script.py").write_text("raise SystemExit('ran')\n")
    with pytest.raises(DistillabError, match="Python file"):
        data.load(f"hf:{script}")
    with pytest.raises(DistillabError, match="loading script"):
        data.load("hf:owner/data.py")


def test_a_row_that_names_a_local_file_is_read(tmp_path):
    xtr, ytr, _, _ = _digits(20, 0)
    files = {}
    for i, im in enumerate(_images(255 - xtr)):
        files[i] = str(tmp_path / f"{i}.png")
        im.save(files[i])
    ds = data.load(f"hf:{_forged_rows(_save(tmp_path, 'files', _split(xtr, ytr)), files)}")
    total = torch.cat([ds.train.x, ds.test.x]).mul(255).round().sum()
    assert int(total) == int((255 - xtr.astype(np.int64)).sum())  # the files' pixels, not the stored bytes


def test_train_distill_and_condense_on_an_hf_dataset(digits_hf, tmp_path, cli):
    spec = f"hf:{digits_hf}"
    teacher = distillab.train(data=spec, model="mlp:hidden=32", epochs=3, lr=0.1, batch_size=64,
                              out=tmp_path / "teacher", quiet=True)
    assert teacher.metrics["test_accuracy"] > 0.5
    student = distillab.distill(data=spec, teacher=tmp_path / "teacher/model.safetensors", student="mlp:hidden=16",
                                epochs=2, lr=0.1, batch_size=64, out=tmp_path / "student", quiet=True)
    assert 0 < student.metrics["test_accuracy"] <= 1
    distillab.condense_data(spec, "random", ipc=2, out=tmp_path / "set", quiet=True)
    synset = SyntheticSet.load(tmp_path / "set/synset.safetensors")
    assert synset.meta["source"]["data"] == spec and synset.classes == CLASSES
    assert synset.meta["source"]["hash"] == data.dataset_hash(data.split(data.load(spec)).train_set())
    r = cli("train", "--data", f"{spec}:test_split=test", "--model", "mlp:hidden=8", "--epochs", "1",
            "--out", tmp_path / "cli")
    assert r.code == 0, r.err
    assert (tmp_path / "cli/model.safetensors").exists()
