"""`distillab import-synset`: the reference implementations' synthetic sets (VICO's res_*.pt, MTT's images_best.pt
with labels_best.pt beside it) read with torch.load(weights_only=True) only, checked against the named dataset,
and written as a synset.safetensors that `evaluate` takes. The files here are built with torch.save in the shapes
the reference scripts save (a dict of lists of tensors with np.float64 accuracies; one tensor per file)."""

import collections
import hashlib
import io
import zipfile

import numpy as np
import pytest
import torch

from distillab.api import load
from distillab.condense.importing import read_vico
from distillab.data import Dataset, ImageSet

from conftest import assert_one_line_error

K, IPC, SHAPE = 10, 2, (1, 8, 8)  # digits


def _images(n=K * IPC, shape=SHAPE, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def _class_major(ipc=IPC):
    return torch.arange(K).repeat_interleave(ipc)


def _vico(path, experiments=3, images=None, labels=None, **extra):
    """What VICO's main.py / main_DM.py torch.save: one [images, labels] pair per experiment, and the accuracies
    as numpy scalars (their `epoch` returns np.float64)."""
    data = [[_images(seed=e), _class_major()] for e in range(experiments)]
    if images is not None:
        data[0][0] = images
    if labels is not None:
        data[0][1] = labels
    torch.save({"data": data, "accs_all_exps": {"ConvNet": [np.float64(0.5 + e / 100) for e in range(4)]}, **extra},
               path)
    return path


def _mtt(folder, images=None, labels=None, tag="best", lr=None):
    """What MTT's distill.py torch.saves into its run folder: one tensor per file."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(_images() if images is None else images, folder / f"images_{tag}.pt")
    torch.save(_class_major() if labels is None else labels, folder / f"labels_{tag}.pt")
    if lr is not None:
        torch.save(torch.tensor(lr), folder / f"lr_{tag}.pt")
    return folder / f"images_{tag}.pt"


def test_vico_file_round_trips_and_evaluates(cli, tmp_path):
    src = _vico(tmp_path / "res_DM_digits_ConvNet_2ipc.pt")
    out = tmp_path / "dm.safetensors"
    r = cli("import-synset", src, "--format", "vico", "--data", "digits", "--out", out, "--experiment", "1",
            "--quiet")
    assert r.code == 0, r.err
    synset = load(out)
    assert torch.equal(synset.images, _images(seed=1))  # experiment 1, untouched
    assert torch.equal(synset.labels, _class_major()) and synset.ipc == IPC and synset.classes == [str(i) for i in
                                                                                                   range(K)]
    meta, source = synset.meta, synset.meta["source"]
    assert meta["method"] == "imported" and meta["recipe"]["format"] == "vico" and meta["recipe"]["experiment"] == 1
    assert source["imported_from"] == src.name and source["format"] == "vico" and source["data"] == "digits"
    assert source["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert source["experiment"] == 1 and source["experiments"] == 3 and source["reordered"] is False
    assert source["reported_accuracy"]["ConvNet"]["evaluations"] == 4
    assert source["reported_accuracy"]["ConvNet"]["mean"] == pytest.approx(0.515)
    r = cli("evaluate", out, "--models", "convnet:width=4,depth=2", "--epochs", "2", "--runs", "1",
            "--out", tmp_path / "eval", "--quiet")
    assert r.code == 0, r.err
    assert r.json["method"] == "imported" and r.json["ipc"] == IPC and r.json["data"] == "digits"
    r = cli("import-synset", src, "--format", "vico", "--data", "digits", "--out", out, "--experiment", "2",
            "--overwrite", "--quiet")
    assert r.code == 0, r.err
    assert torch.equal(load(out).images, _images(seed=2))


def test_mtt_run_folder_round_trips_reordered_class_major(cli, tmp_path):
    perm = torch.randperm(K * IPC, generator=torch.Generator().manual_seed(3))
    images, labels = _images(), _class_major()[perm]  # a file whose order is not ours
    # MTT's images are the optimised leaf: saved from a CPU run they still require grad
    src = _mtt(tmp_path / "run", images=images.clone().requires_grad_(True), labels=labels, lr=0.0123)
    out = tmp_path / "mtt.safetensors"
    r = cli("import-synset", src, "--format", "mtt", "--data", "digits", "--out", out, "--quiet")
    assert r.code == 0, r.err
    synset = load(out)
    assert torch.equal(synset.labels, _class_major())
    for c in range(K):  # each class keeps its own images, in the file's order
        assert torch.equal(synset.images[c * IPC:(c + 1) * IPC], images[labels == c])
    source = synset.meta["source"]
    assert source["reordered"] is True and source["format"] == "mtt" and source["labels_from"] == "labels_best.pt"
    assert source["labels_sha256"] == hashlib.sha256((tmp_path / "run" / "labels_best.pt").read_bytes()).hexdigest()
    assert source["learned_lr"] == pytest.approx(0.0123)
    # a labels file of any name, given
    (tmp_path / "run" / "labels_best.pt").rename(tmp_path / "my_labels.pt")
    r = cli("import-synset", src, "--format", "mtt", "--data", "digits", "--out", tmp_path / "b.safetensors",
            "--labels", tmp_path / "my_labels.pt", "--quiet")
    assert r.code == 0, r.err
    assert torch.equal(load(tmp_path / "b.safetensors").images, synset.images)


def test_a_vico_file_pickled_under_numpy_1_reads(tmp_path):
    """Their files date from numpy 1, which pickles np.float64 through numpy.core.multiarray.scalar (numpy 2:
    numpy._core...); both names of the same data-only constructor are taken."""
    src = _vico(tmp_path / "res.pt")
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(tmp_path / "np1.pt", "w") as w:
        for m in z.infolist():
            blob = z.read(m)
            if m.filename.endswith("/data.pkl"):
                blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            w.writestr(m.filename, blob)
    assert b"numpy.core.multiarray\nscalar" in zipfile.ZipFile(tmp_path / "np1.pt").read("res/data.pkl")
    synset = read_vico(tmp_path / "np1.pt", _digits_like())
    assert synset.meta["source"]["reported_accuracy"]["ConvNet"]["evaluations"] == 4


def _digits_like(spec="digits", shape=SHAPE, mean=(0.3,), std=(0.4,)):
    x = torch.rand(20, *shape)
    ds = Dataset(spec, ImageSet(x, torch.arange(20) % K), ImageSet(x, torch.arange(20) % K),
                 [str(i) for i in range(K)], mean, std, "test")
    ds.spec = spec
    return ds


def test_the_reference_normalisation_is_kept_not_distillabs(tmp_path):
    """VICO and MTT normalise CIFAR-10 with std 0.2023..., distillab's cifar10 with 0.2470...: the images are in
    theirs, so the set must say theirs (evaluate normalises the test images with the set's)."""
    ds = _digits_like("cifar10", (3, 4, 4), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    synset = read_vico(_vico(tmp_path / "res.pt", images=_images(shape=(3, 4, 4))), ds)
    assert synset.mean == (0.4914, 0.4822, 0.4465) and synset.std == (0.2023, 0.1994, 0.2010)
    assert synset.meta["source"]["normalisation"].startswith("the reference code's constants")


# ---- files that would need a full unpickle: refused, and nothing in them ever runs ---------------------------------


class RunsCode:
    """Unpickling this opens (creates) the marker file: what a hostile pickle would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


class Ordered(collections.OrderedDict):
    pass


class Plain:
    def __init__(self):
        self.x = 1


@pytest.mark.parametrize("kind", ["runs_code", "ordered_dict_subclass", "class_instance"])
def test_a_file_needing_a_full_unpickle_is_refused_and_nothing_runs(cli, tmp_path, kind):
    marker = tmp_path / "MARKER"
    payload = {"runs_code": RunsCode(marker), "ordered_dict_subclass": Ordered(a=1), "class_instance": Plain()}[kind]
    src = _vico(tmp_path / "res.pt", accs_all_exps=payload)
    out = tmp_path / "s.safetensors"
    r = cli("import-synset", src, "--format", "vico", "--data", "digits", "--out", out)
    assert not marker.exists(), "the file's code ran"
    assert_one_line_error(r, "needs a full unpickle", "never does that")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["res.pt"]


# ---- the catalogue of bad input ----------------------------------------------------------------------------------


def _rezip(src, dst, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w", compression) as w:
        for m in z.infolist():
            w.writestr(m.filename, z.read(m))
    return dst


def _make(kind, root):
    """(FILE, extra flags, fragment of the one-line error) for each bad input."""
    vico = lambda **kw: _vico(root / "res.pt", **kw)
    nan = _images()
    nan[5, 0, 1, 1] = float("nan")
    if kind == "mtt_file_as_vico":
        return _mtt(root / "run"), ["--format", "vico"], "use --format mtt"
    if kind == "vico_file_as_mtt":
        _vico(root / "images_best.pt")
        return root / "images_best.pt", ["--format", "mtt"], "use --format vico"
    if kind == "truncated":
        blob = vico().read_bytes()
        (root / "cut.pt").write_bytes(blob[: len(blob) // 2])
        return root / "cut.pt", [], "not a torch file"
    if kind == "random_bytes":
        (root / "junk.pt").write_bytes(np.random.default_rng(0).bytes(5000))
        return root / "junk.pt", [], "not a torch file"
    if kind == "random_after_zip_magic":
        (root / "junk.pt").write_bytes(b"PK\x03\x04" + np.random.default_rng(1).bytes(5000))
        return root / "junk.pt", [], "not a torch file"
    if kind == "empty":
        (root / "empty.pt").write_bytes(b"")
        return root / "empty.pt", [], "bytes"
    if kind == "legacy_format":
        torch.save({"data": [[_images(), _class_major()]]}, root / "old.pt", _use_new_zipfile_serialization=False)
        return root / "old.pt", [], "legacy format"
    if kind == "compressed_members":
        return _rezip(vico(), root / "z.pt", zipfile.ZIP_DEFLATED), [], "compressed"
    if kind == "storage_longer_than_its_record":
        buf = io.BytesIO()
        torch.save({"data": [[_images(), _class_major()]]}, buf)
        with zipfile.ZipFile(buf) as z, zipfile.ZipFile(root / "short.pt", "w") as w:
            for m in z.infolist():  # every tensor's bytes cut to half: the pickle claims more than is there
                blob = z.read(m)
                w.writestr(m.filename, blob[: len(blob) // 2] if "/data/" in m.filename else blob)
        return root / "short.pt", [], "not a readable torch file"
    if kind == "big_object_tree":
        return vico(junk="x" * (5 * 1024 ** 2)), [], "object tree"
    if kind == "not_a_dict":
        torch.save([_images(), _class_major()], root / "list.pt")
        return root / "list.pt", [], "not a VICO res_*.pt file"
    if kind == "wrong_shape_for_data":
        return vico(images=_images(shape=(1, 28, 28))), [], "do not fit digits"
    if kind == "labels_out_of_range":
        return vico(labels=torch.where(_class_major() == 9, 10, _class_major())), [], "lie in 0..10"
    if kind == "negative_labels":
        return vico(labels=_class_major() - 1), [], "lie in -1..8"
    if kind == "nan_images":
        return vico(images=nan), [], "NaN"
    if kind == "unequal_class_counts":
        return vico(labels=torch.where(torch.arange(K * IPC) == 1, 1, _class_major())), [], "unequal counts"
    if kind == "float_labels":
        return vico(labels=_class_major().float()), [], "whole numbers"
    if kind == "soft_labels":
        return vico(labels=torch.eye(K).repeat_interleave(IPC, 0)), [], "soft labels"
    if kind == "labels_count":
        return vico(labels=_class_major()[:-2]), [], "20 images but 18 labels"
    if kind == "integer_images":
        return vico(images=(_images() * 100).to(torch.int32)), [], "float tensor"
    if kind == "experiment_out_of_range":
        return vico(), ["--experiment", "3"], "3 experiment(s)"
    if kind == "labels_flag_with_vico":
        return vico(), ["--labels", root / "res.pt"], "--labels is for --format mtt"
    if kind == "experiment_flag_with_mtt":
        return _mtt(root / "run"), ["--format", "mtt", "--experiment", "0"], "--experiment is for --format vico"
    if kind == "mtt_zca_run":
        src = _mtt(root / "run")
        torch.save(_images(), root / "run" / "images_zca_100.pt")
        return src, ["--format", "mtt"], "--zca"
    if kind == "mtt_no_labels_beside":
        src = _mtt(root / "run")
        (root / "run" / "labels_best.pt").unlink()
        return src, ["--format", "mtt"], "no labels file labels_best.pt"
    if kind == "mtt_unknown_name":
        src = _mtt(root / "run")
        return src.rename(root / "run" / "mine.pt"), ["--format", "mtt"], "pass --labels FILE"
    if kind == "out_exists":
        (root / "s.safetensors").write_bytes(b"keep")
        return vico(), [], "exists"
    if kind == "out_not_safetensors":
        return vico(), ["--out", root / "s.pt"], "FILE.safetensors"
    if kind == "missing_file":
        return root / "nothing.pt", [], "no such file"
    raise AssertionError(kind)


BAD = ["mtt_file_as_vico", "vico_file_as_mtt", "truncated", "random_bytes", "random_after_zip_magic", "empty",
       "legacy_format", "compressed_members", "storage_longer_than_its_record", "big_object_tree", "not_a_dict",
       "wrong_shape_for_data", "labels_out_of_range", "negative_labels", "nan_images", "unequal_class_counts",
       "float_labels", "soft_labels", "labels_count", "integer_images", "experiment_out_of_range",
       "labels_flag_with_vico", "experiment_flag_with_mtt", "mtt_zca_run", "mtt_no_labels_beside",
       "mtt_unknown_name", "out_exists", "out_not_safetensors", "missing_file"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_input_is_one_line_exit_2_and_nothing_written(cli, tmp_path, kind):
    src, flags, fragment = _make(kind, tmp_path)
    if "--format" not in flags:
        flags = ["--format", "vico", *flags]
    out = tmp_path / "s.safetensors"
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    r = cli("import-synset", src, "--data", "digits", *(["--out", out] if "--out" not in flags else []), *flags)
    assert_one_line_error(r, fragment)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing written, nothing touched
