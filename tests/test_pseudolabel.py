"""Omni-supervised pseudo-labelling (Radosavovic et al. 2018): averaging over views, the threshold, soft labels,
mixing labelled and pseudo-labelled rows per batch, determinism, unlabeled data, and the bad inputs."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillab import api
from distillab.errors import DistillabError
from distillab import data as data_mod
from distillab.data import ImageSet, PseudoRows, normalise
from distillab.files import load_tensors
from distillab.kd.teachers import ModelTeacher, load_teacher_model, resolve_teacher
from distillab.models import build_model, load_model, save_model
from distillab.pseudolabel import (BATCH, PseudoLabels, View, averaged_probabilities, parse_transforms, views)
from distillab.training import TrainConfig, fit, mixed_order, mixed_split, mixed_steps

from conftest import assert_one_line_error, write_npz
from test_resume import same_run, stopped_and_resumed


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """digits cut in two: labelled.npz (150 images and the test split), unlabeled.npz (the rest, no 'y'); a teacher
    trained on the labelled part, and inputs for the bad-input catalogue."""
    root = tmp_path_factory.mktemp("omni")
    ds = data_mod.load("digits")
    x, y = ds.train.x[:, 0].numpy(), ds.train.y.numpy()
    f = {"root": root}
    f["labelled"] = root / "labelled.npz"
    np.savez(f["labelled"], x=x[:150], y=y[:150], x_test=ds.test.x[:, 0].numpy(), y_test=ds.test.y.numpy())
    f["unlabeled"] = root / "unlabeled.npz"
    np.savez(f["unlabeled"], x=x[150:])
    f["unlabeled_with_y"] = root / "unlabeled-with-y.npz"  # the same images, labelled, with a test split
    np.savez(f["unlabeled_with_y"], x=x[150:], y=y[150:], x_test=x[:20], y_test=y[:20])
    f["truth"] = torch.from_numpy(y[150:])
    t = api.train(data=f"npz:{f['labelled']}", model="mlp:hidden=32", epochs=30, batch_size=32, out=root / "t",
                  quiet=True)
    f["teacher"] = t.out / "model.safetensors"
    f["labels"] = root / "labels.npz"
    api.pseudolabel(f["teacher"], f"npz:{f['unlabeled']}", out=f["labels"], quiet=True)
    # bad inputs
    tensors, meta = load_tensors(f["teacher"], "distillab.model")
    save_model(root / "blank.safetensors", _zeroed(build_model("mlp:hidden=32", (1, 8, 8), 10)), spec="mlp:hidden=32",
               input_shape=(1, 8, 8), classes=meta["classes"], mean=(0.0,), std=(1.0,), recipe={}, data={})
    f["blank"] = root / "blank.safetensors"  # outputs 1/10 for every class: nothing is confident
    np.savez(root / "big.npz", x=np.zeros((20, 12, 12), np.float32))
    f["big"] = root / "big.npz"
    f["three"] = write_npz(root / "three.npz", classes=3)
    (root / "flat").mkdir()
    from PIL import Image
    for i in range(4):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / "flat" / f"{i}.png")
    f["flat"] = root / "flat"
    changed = root / "changed.npz"
    np.savez(changed, x=x[150:])
    f["stale"] = root / "stale.npz"
    api.pseudolabel(f["teacher"], f"npz:{changed}", out=f["stale"], quiet=True)
    np.savez(changed, x=x[150:] * 0.5)  # the images change after they were labelled
    (root / "exists.npz").write_bytes(b"old")
    f["exists"] = root / "exists.npz"
    return f


def _zeroed(model):
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


def _raw(files):
    return data_mod.load_unlabeled(f"npz:{files['unlabeled']}").x


def _single_pass(model, meta, x):
    """The teacher's probabilities, one forward pass per BATCH images (the batches averaged_probabilities runs)."""
    norm = meta["normalisation"]
    out = []
    for i in range(0, len(x), BATCH):
        chunk = normalise(x[i:i + BATCH], norm["mean"], norm["std"])
        with torch.no_grad():
            out.append(F.softmax(model.eval()(chunk), 1))
    return torch.cat(out)


# ---- the identities ------------------------------------------------------------------------------------------


def test_identity_views_average_to_the_single_pass_exactly(files):
    model, meta = load_model(files["teacher"])
    x, norm = _raw(files), meta["normalisation"]
    single = _single_pass(model, meta, x)
    same = View("same", lambda v: v.clone())
    for view_list in (views("identity", (1, 8, 8)), [same] * 3, [same] * 7):
        averaged = averaged_probabilities(model, x, view_list, norm["mean"], norm["std"])
        assert torch.equal(averaged, single), len(view_list)


def test_pseudolabel_identity_is_the_single_pass(files, tmp_path):
    model, meta = load_model(files["teacher"])
    single = _single_pass(model, meta, _raw(files))
    info = api.pseudolabel(files["teacher"], f"npz:{files['unlabeled']}", transforms="identity", soft=True,
                           out=tmp_path / "p.npz", quiet=True)
    labels = PseudoLabels.load(tmp_path / "p.npz")
    assert info["views"] == 1 and len(labels) == len(single)  # threshold 0 keeps every image
    assert torch.equal(labels.probs, single) and torch.equal(labels.labels, single.argmax(1))
    assert torch.equal(labels.index, torch.arange(len(single)))


def test_the_views_are_the_fixed_set():
    names = [v.name for v in views("shift,scale,rotate,flip", (1, 8, 8))]
    assert names == ["original", "shift(+2,+0)", "shift(-2,+0)", "shift(+0,+2)", "shift(+0,-2)", "scale(0.9)",
                     "scale(1.1)", "rotate(-10)", "rotate(+10)", "flip"]
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 3] = 1.0
    by_name = {v.name: v for v in views("shift,flip", (1, 8, 8))}
    moved = by_name["shift(+2,+0)"].apply(x)  # content 2 px to the right, exactly
    assert moved[0, 0, 3, 5] == 1.0 and moved.sum() == 1.0
    assert by_name["shift(+0,-2)"].apply(x)[0, 0, 1, 3] == 1.0  # 2 px up
    assert by_name["flip"].apply(x)[0, 0, 3, 4] == 1.0
    blob = torch.zeros(1, 1, 16, 16)
    blob[0, 0, 6:10, 6:10] = 1.0
    rotated = {v.name: v for v in views("rotate,scale", (1, 16, 16))}
    for name in ("rotate(+10)", "scale(1.1)"):  # a centred blob stays centred, its mass about the same
        out = rotated[name].apply(blob)
        assert abs(float(out.sum()) - 16 * (1.21 if "scale" in name else 1.0)) < 2.5, name
        assert torch.allclose(out, out.flip(2).flip(3), atol=1e-5) or "rotate" in name
    assert [v.name for v in views("shift", (1, 1, 40))] == ["original", "shift(+2,+0)", "shift(-2,+0)"]  # signals


def test_the_threshold_filters(files, tmp_path):
    model, meta = load_model(files["teacher"])
    norm = meta["normalisation"]
    probs = averaged_probabilities(model, _raw(files), views("shift,scale,rotate", (1, 8, 8)), norm["mean"],
                                   norm["std"])
    confidence = probs.max(1).values
    threshold = float(confidence.sort().values[len(confidence) // 2])  # exactly one image's confidence
    api.pseudolabel(files["teacher"], f"npz:{files['unlabeled']}", threshold=threshold, out=tmp_path / "p.npz",
                    quiet=True)
    labels = PseudoLabels.load(tmp_path / "p.npz")
    kept = torch.nonzero(confidence >= threshold, as_tuple=True)[0]
    assert 0 < len(labels) < len(confidence) and torch.equal(labels.index, kept)
    assert torch.equal(labels.labels, probs.argmax(1)[kept]) and torch.equal(labels.confidence, confidence[kept])
    assert labels.meta["threshold"] == threshold and labels.probs is None


def test_soft_labels_are_probability_rows(files, tmp_path):
    api.pseudolabel(files["teacher"], f"npz:{files['unlabeled']}", soft=True, threshold=0.3, out=tmp_path / "s.npz",
                    quiet=True)
    labels = PseudoLabels.load(tmp_path / "s.npz")
    p = labels.targets()
    assert p is labels.probs and p.dtype == torch.float32 and p.shape == (len(labels), 10)
    assert bool((p >= 0).all()) and torch.allclose(p.sum(1), torch.ones(len(p)), atol=1e-5)
    assert torch.equal(p.argmax(1), labels.labels) and torch.equal(p.max(1).values, labels.confidence)
    assert bool((labels.confidence >= 0.3).all())


def test_mixed_batches_hold_the_ratio():
    g = torch.Generator().manual_seed(0)
    order = mixed_order(37, 203, 10, (6, 4), g)
    steps = mixed_steps(37, 203, 10, (6, 4))
    assert steps == 51 and order.shape == (510,)  # one pass over the pseudo rows at 4 per batch
    batches = order.view(steps, 10)
    assert all(int((b < 37).sum()) == 6 for b in batches)
    pseudo = batches[:, 6:].reshape(-1)
    assert sorted(pseudo[:203].tolist()) == list(range(37, 240))  # every pseudo row once before any comes again
    labelled = batches[:, :6].reshape(-1)
    assert sorted(labelled[:37].tolist()) == list(range(37))
    assert mixed_split(128, (6, 4)) == (77, 51) and mixed_split(8, (3, 1)) == (6, 2) and mixed_split(2, (9, 1)) == (1, 1)


def test_training_batches_hold_the_ratio(files):
    """Counted inside fit(): every batch the objective sees has 6 labelled rows and 4 pseudo-labelled ones."""
    splits = data_mod.split(data_mod.load(f"npz:{files['labelled']}"))
    n = len(splits.train)
    pseudo = PseudoRows(ImageSet(torch.randn(55, 1, 8, 8), torch.arange(55) % 10), (6, 4))
    seen = []

    def objective(model, x, y, idx):
        seen.append((int((idx < n).sum()), int((idx >= n).sum()), bool(torch.equal(x, x))))
        assert torch.equal(y[idx >= n], pseudo.rows.y[idx[idx >= n] - n])  # pseudo rows carry their own labels
        return {"ce": F.cross_entropy(model(x), y)}

    net = build_model("mlp:hidden=8", splits.input_shape, 10)
    fit(net, splits, TrainConfig(epochs=2, batch_size=10), objective=objective, pseudo=pseudo)
    assert len(seen) == 2 * mixed_steps(n, 55, 10, (6, 4)) and set(seen) == {(6, 4, True)}


def test_soft_and_hard_rows_train_together(files, tmp_path):
    """Soft pseudo-labels: the labelled rows become one-hot rows beside them, in the same cross-entropy."""
    from distillab.training import mixed_rows

    train = ImageSet(torch.zeros(3, 1, 2, 2), torch.tensor([0, 2, 1]))
    soft = ImageSet(torch.ones(2, 1, 2, 2), torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]]))
    x, y = mixed_rows(train, soft)
    assert x.shape == (5, 1, 2, 2) and torch.equal(y[:3], torch.eye(3)[[0, 2, 1]]) and torch.equal(y[3:], soft.y)
    r = api.train(data=f"npz:{files['labelled']}", model="mlp:hidden=16", epochs=1, batch_size=32,
                  pseudo=_soft_file(files, tmp_path), out=tmp_path / "run", quiet=True)
    assert 0 < r.metrics["test_accuracy"] <= 1


def _soft_file(files, tmp_path):
    path = tmp_path / "soft.npz"
    api.pseudolabel(files["teacher"], f"npz:{files['unlabeled']}", soft=True, out=path, quiet=True)
    return path


def test_same_seed_same_bytes(files, tmp_path):
    for name in ("a", "b"):
        api.pseudolabel(files["teacher"], f"npz:{files['unlabeled']}", soft=True, out=tmp_path / f"{name}.npz",
                        quiet=True)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    models = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        r = api.train(data=f"npz:{files['labelled']}", model="mlp:hidden=16", epochs=2, batch_size=20, seed=seed,
                      pseudo=tmp_path / "a.npz", out=tmp_path / f"run-{name}", quiet=True)
        models[name] = load_tensors(r.out / "model.safetensors", "distillab.model")[0]
    assert all(torch.equal(models["a"][k], models["b"][k]) for k in models["a"])
    assert not all(torch.equal(models["a"][k], models["c"][k]) for k in models["a"])  # the seed does matter
    assert (tmp_path / "run-a" / "steps.jsonl").read_text() == (tmp_path / "run-b" / "steps.jsonl").read_text()


def test_a_run_with_pseudo_labels_resumes_to_the_same_bytes(files, tmp_path, stop_after):
    kwargs = dict(data=f"npz:{files['labelled']}", model="mlp:hidden=16,dropout=0.2", epochs=2, batch_size=20,
                  augment="shift:1", pseudo=str(files["labels"]), pseudo_ratio="3:2")
    api.train(out=tmp_path / "reference", quiet=True, **kwargs)
    steps = mixed_steps(135, 1198, 20, (3, 2))
    stopped_and_resumed(api.train, stop_after, steps + 7, tmp_path / "resumed", **kwargs)  # mid second epoch
    same_run(tmp_path / "reference", tmp_path / "resumed")


# ---- records, kd, unlabeled data -----------------------------------------------------------------------------


def test_records_name_the_pseudo_labels(files, tmp_path):
    r = api.train(data=f"npz:{files['labelled']}", model="mlp:hidden=16", epochs=1, batch_size=20,
                  pseudo=files["labels"], out=tmp_path / "run", quiet=True)
    config = (r.out / "config.yaml").read_text()
    assert "pseudo_ratio: '6:4'" in config and f"pseudo_rows: {len(files['truth'])}" in config
    assert "pseudo_sha256:" in config and "pseudo_labels: hard" in config
    labels = PseudoLabels.load(files["labels"])
    assert labels.meta["dataset"] == f"npz:{files['unlabeled'].resolve()}"
    assert labels.meta["views"][0] == "original" and len(labels.meta["views"]) == 9
    accuracy = float((labels.labels == files["truth"][labels.index]).float().mean())
    assert accuracy > 0.5  # the teacher's labels are mostly right (digits, 150 labelled images)


def test_a_cached_teacher_covers_the_pseudo_rows(files):
    splits = data_mod.split(data_mod.load(f"npz:{files['labelled']}"))
    extra = torch.randn(7, 1, 8, 8)
    cfg = TrainConfig()
    cached, _, how = resolve_teacher(str(files["teacher"]), None, splits, cfg, [], True, extra_x=extra)
    n = len(splits.train)
    live = ModelTeacher(load_teacher_model(files["teacher"], splits)[0])
    assert how == "cached"
    got = cached(extra, torch.arange(n, n + 7)).logits
    assert torch.allclose(got, live(extra).logits, atol=1e-5)
    assert torch.allclose(cached(splits.train.x[:3], torch.arange(3)).logits, live(splits.train.x[:3]).logits,
                          atol=1e-5)


@pytest.mark.parametrize("extra", [[], ["--augment", "shift:1"]], ids=["cached", "live"])
def test_kd_mixes_pseudo_rows_with_a_model_teacher(cli, files, tmp_path, extra):
    r = cli("kd", "--data", f"npz:{files['labelled']}", "--teacher", files["teacher"], "--student", "mlp:hidden=16",
            "--epochs", "1", "--batch-size", "32", "--pseudo", files["labels"], "--pseudo-ratio", "1:1", *extra,
            "--out", tmp_path / "kd")
    assert r.code == 0, r.err
    assert r.json["teacher_mode"] == ("live" if extra else "cached")
    assert "pseudo_ratio: '1:1'" in (tmp_path / "kd" / "config.yaml").read_text()


def test_a_labelled_set_given_as_unlabeled_has_its_labels_ignored(files, tmp_path):
    a = api.pseudolabel(files["teacher"], f"npz:{files['unlabeled']}", soft=True, out=tmp_path / "a.npz", quiet=True)
    b = api.pseudolabel(files["teacher"], f"npz:{files['unlabeled_with_y']}", soft=True, out=tmp_path / "b.npz",
                        quiet=True)
    assert not a["data_had_labels"] and b["data_had_labels"]
    la, lb = PseudoLabels.load(tmp_path / "a.npz"), PseudoLabels.load(tmp_path / "b.npz")
    assert torch.equal(la.probs, lb.probs) and torch.equal(la.index, lb.index)
    assert la.meta["dataset_sha256"] == lb.meta["dataset_sha256"]  # the same images, whatever else the file holds


def test_an_image_folder_is_unlabeled_data(files, tmp_path):
    info = api.pseudolabel(files["teacher"], f"folder:{files['flat']}", transforms="identity",
                           out=tmp_path / "f.npz", quiet=True)
    assert info["images"] == 4 and info["kept"] == 4
    unlabeled = data_mod.load_unlabeled(f"folder:{files['flat']}")
    assert unlabeled.x.shape == (4, 1, 8, 8) and float(unlabeled.x[1].max()) == pytest.approx(40 / 255)


def test_a_labelled_dataset_warns_that_it_labels_its_own_images(files, tmp_path):
    path = tmp_path / "own.npz"
    api.pseudolabel(files["teacher"], f"npz:{files['labelled']}", out=path, quiet=True)
    with pytest.warns(UserWarning, match="own training images, the validation split among them"):
        api.train(data=f"npz:{files['labelled']}", model="mlp:hidden=8", epochs=1, pseudo=path, out=tmp_path / "r",
                  quiet=True)


def test_parse_transforms():
    assert parse_transforms("shift, flip") == ["shift", "flip"]
    for bad in ("", "shift,,flip", "blur", "shift,shift"):
        with pytest.raises(Exception):
            parse_transforms(bad)


# ---- bad input -----------------------------------------------------------------------------------------------

PL = ["pseudolabel", "--teacher", "{teacher}", "--data", "npz:{unlabeled}"]
TRAIN = ["train", "--data", "npz:{labelled}", "--model", "mlp:hidden=4", "--epochs", "1"]
CATALOGUE = {
    "teacher of other inputs": (["pseudolabel", "--teacher", "{teacher}", "--data", "npz:{big}"],
                                "takes inputs of shape (1, 8, 8)"),
    "teacher that is not a model": (["pseudolabel", "--teacher", "{unlabeled}", "--data", "npz:{unlabeled}"],
                                    "unlabeled.npz"),
    "teacher missing": (["pseudolabel", "--teacher", "/nonexistent/t.safetensors", "--data", "digits"],
                        "no such file"),
    "no teacher": (["pseudolabel", "--data", "digits"], "needs --teacher"),
    "threshold below 0": ([*PL, "--threshold", "-0.1"], "--threshold must be a probability in [0, 1]"),
    "threshold above 1": ([*PL, "--threshold", "1.5"], "--threshold must be a probability in [0, 1]"),
    "threshold NaN": ([*PL, "--threshold", "nan"], "--threshold must be a probability"),
    "nothing confident": (["pseudolabel", "--teacher", "{blank}", "--data", "npz:{unlabeled}", "--threshold", "0.5"],
                          "no image of"),
    "unknown transform": ([*PL, "--transforms", "shift,blur"], "unknown transform 'blur'"),
    "out over a file": ([*PL, "--out", "{exists}"], "exists"),
    "out not npz": ([*PL, "--out", "{root}/labels.csv"], "must end in .npz"),
    "missing unlabeled data": (["pseudolabel", "--teacher", "{teacher}", "--data", "npz:/nonexistent/u.npz"],
                               "no such file"),
    "unlabeled npz where labels are needed": (["train", "--data", "npz:{unlabeled}", "--model", "mlp"],
                                              "no labels 'y'"),
    "image folder where labels are needed": (["train", "--data", "folder:{flat}", "--model", "mlp"],
                                             "no class sub-folders"),
    "unlabeled data for kd": (["kd", "--data", "npz:{unlabeled}", "--teacher", "{teacher}", "--student", "mlp"],
                              "no labels 'y'"),
    "ratio without pseudo": ([*TRAIN, "--pseudo-ratio", "6:4"], "--pseudo-ratio goes with --pseudo"),
    "ratio of one number": ([*TRAIN, "--pseudo", "{labels}", "--pseudo-ratio", "6"], "--pseudo-ratio takes"),
    "ratio with a zero": ([*TRAIN, "--pseudo", "{labels}", "--pseudo-ratio", "6:0"], "--pseudo-ratio takes"),
    "ratio of words": ([*TRAIN, "--pseudo", "{labels}", "--pseudo-ratio", "a:b"], "--pseudo-ratio takes"),
    "ratio of a billion to one": ([*TRAIN, "--pseudo", "{labels}", "--pseudo-ratio", "1000000000:1"],
                                  "two whole numbers 1..1000"),
    "batch of one with pseudo rows": ([*TRAIN, "--pseudo", "{labels}", "--batch-size", "1"], "at least 2"),
    "pseudo file that is data": ([*TRAIN, "--pseudo", "{unlabeled}"], "not a pseudo-label file"),
    "pseudo file missing": ([*TRAIN, "--pseudo", "/nonexistent/p.npz"], "no such file"),
    "pseudo labels of other classes": (["train", "--data", "npz:{three}", "--model", "mlp:hidden=4", "--pseudo",
                                        "{labels}"], "labels the classes"),
    "pseudo data changed since": ([*TRAIN, "--pseudo", "{stale}"], "sha256 differs"),
    "pseudo rows for a black box": (["kd", "--data", "npz:{labelled}", "--teacher-outputs", "{unlabeled}",
                                     "--student", "mlp", "--pseudo", "{labels}"], "--teacher-outputs with --pseudo"),
}


@pytest.mark.parametrize("case", sorted(CATALOGUE))
def test_bad_input_ends_in_one_line(cli, tmp_path, files, case):
    args, fragment = CATALOGUE[case]
    args = [a.format(**{k: v for k, v in files.items() if k != "truth"}) for a in args]
    out = tmp_path / "out.npz" if args[0] == "pseudolabel" else tmp_path / "out"
    if "--out" not in args:
        args += ["--out", str(out)]
    before = set(files["root"].rglob("*"))
    r = cli(*args)
    assert_one_line_error(r, fragment)
    assert not out.exists() and not list(tmp_path.iterdir())
    assert set(files["root"].rglob("*")) == before
    assert (files["root"] / "exists.npz").read_bytes() == b"old"


def test_a_forged_pseudo_label_file_is_refused(files, tmp_path):
    arrays = dict(np.load(files["labels"], allow_pickle=False))
    forged = {
        "index out of range": {"index": arrays["index"] + 10**9},
        "index repeated": {"index": np.zeros_like(arrays["index"])},
        "label out of range": {"labels": arrays["labels"] + 10},
        "probs of other shape": {"probs": np.full((3, 10), 0.1, np.float32)},
        "probs not summing to one": {"probs": np.full((len(arrays["index"]), 10), 0.5, np.float32)},
        "no rows": {"index": arrays["index"][:0], "labels": arrays["labels"][:0],
                    "confidence": arrays["confidence"][:0]},
        "other version": {"version": np.array(7)},
        "shape of text": {"input_shape": np.array("big")},
        "pickled classes": None,
    }
    for name, change in forged.items():
        path = tmp_path / f"{name}.npz"
        if change is None:
            np.savez(path, **{**arrays, "classes": np.array([{"a": 1}], dtype=object)}, allow_pickle=True)
        else:
            np.savez(path, **{**arrays, **change})
        with pytest.raises(DistillabError):
            PseudoLabels.load(path)
    assert math.isclose(PseudoLabels.load(files["labels"]).meta["threshold"], 0.0)
