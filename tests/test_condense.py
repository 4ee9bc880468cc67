"""Dataset distillation: synthetic sets, baselines, distribution matching, the evaluation protocol."""

import json

import numpy as np
import pytest
import torch

from distillab import data
from distillab.condense import DM, SyntheticSet, condense
from distillab.errors import DistillabError
from distillab.evaluation import evaluate_images
from distillab.protocols import Protocol

from conftest import assert_one_line_error, write_npz


@pytest.fixture(scope="module")
def splits():
    return data.split(data.load("digits"))


@pytest.fixture(scope="module")
def train(splits):
    return splits.train_set()


@pytest.mark.parametrize("method", ["random", "herding", "kmeans", "mean"])
def test_baselines_shape_labels_and_determinism(splits, method):
    a, b = condense(splits.train_set(), method, 3, seed=1), condense(splits.train_set(), method, 3, seed=1)
    assert a.images.shape == (30, 1, 8, 8) and a.labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert torch.equal(a.images, b.images)
    assert a.meta["method"] == method and len(a.meta["source"]["hash"]) == 16


def test_random_picks_real_training_images_of_the_right_class(splits):
    s = condense(splits.train_set(), "random", 2, seed=0)
    for img, label in zip(s.images, s.labels):
        match = (splits.train.x == img).flatten(1).all(1)
        assert match.any() and int(splits.train.y[match.nonzero()[0, 0]]) == int(label)


def test_random_draws_distinct_images_so_a_whole_class_is_taken_once_each(splits):
    train = splits.train_set()
    fewest = min(len(idx) for idx in train.class_indices())
    s = condense(train, "random", fewest, seed=0)
    for c in range(10):
        mine = s.images[s.labels == c].flatten(1)
        real = splits.train.x[splits.train.y == c].flatten(1)
        if len(real) == fewest:  # the smallest class: every image, each once (as a multiset of rows)
            assert torch.equal(mine[np.lexsort(mine.T.numpy()[::-1])], real[np.lexsort(real.T.numpy()[::-1])])


def test_mean_with_one_image_per_class_is_the_class_mean(splits):
    s = condense(splits.train_set(), "mean", 1)
    for c in range(10):
        assert torch.allclose(s.images[c], splits.train.x[splits.train.y == c].mean(0), atol=1e-5)


def test_herding_mean_is_closer_than_random(splits):
    def gap(s):
        return sum(float((s.images[s.labels == c].mean(0) - splits.train.x[splits.train.y == c].mean(0)).norm())
                   for c in range(10))
    assert gap(condense(splits.train_set(), "herding", 5)) < gap(condense(splits.train_set(), "random", 5))


def test_bad_ipc_and_method(splits):
    with pytest.raises(DistillabError, match="smallest class"):
        condense(splits.train_set(), "random", 10_000)
    with pytest.raises(DistillabError, match="unknown condensation method"):
        condense(splits.train_set(), "magic", 1)


def test_dm_reduces_matching_loss_and_is_seeded(splits):
    cfg = DM(iterations=40, batch_real=64, model="convnet:width=16,depth=2", lr_img=1.0)
    losses = []
    s = condense(splits.train_set(), cfg, 2, seed=3, progress=lambda i, l: losses.append(l))
    assert len(losses) == 40 and np.mean(losses[-8:]) < np.mean(losses[:8])
    again = condense(splits.train_set(), DM(iterations=40, batch_real=64, model="convnet:width=16,depth=2"), 2, seed=3)
    assert torch.equal(s.images, again.images)
    start = condense(splits.train_set(), "random", 2, seed=3)
    assert not torch.equal(s.images, start.images)  # initialised from real images, then moved


def test_dm_clamp_keeps_pixels_in_the_real_range(splits):
    train = splits.train_set()
    low, high = train.x.min(), train.x.max()
    recipe = dict(iterations=6, batch_real=32, model="convnet:width=8,depth=2", lr_img=300.0)
    free = condense(train, DM(**recipe), 2, seed=0)
    assert free.images.min() < low - 0.1 or free.images.max() > high + 0.1  # the rate pushes pixels out
    stepped = condense(train, DM(**recipe, clamp="step"), 2, seed=0)
    assert stepped.images.min() >= low and stepped.images.max() <= high
    one = {**recipe, "iterations": 1}  # after one step: the unclamped step, then each pixel clamped, no more
    assert torch.equal(condense(train, DM(**one, clamp="step"), 2, seed=0).images,
                       condense(train, DM(**one), 2, seed=0).images.clamp(low, high))
    # clamped once at the end: the unclamped run's images, clamped; clamping every step takes another path
    ended = condense(train, DM(**recipe, clamp="end"), 2, seed=0)
    assert torch.equal(ended.images, free.images.clamp(low, high)) and not torch.equal(ended.images, stepped.images)
    assert [s.meta["recipe"]["clamp"] for s in (free, stepped, ended)] == ["none", "step", "end"]


def test_dm_clamp_range_is_per_channel():
    from distillab.condense.methods.dm import pixel_range
    x = torch.stack([torch.linspace(-1, 1, 48), torch.linspace(0, 5, 48), torch.linspace(-3, 0, 48)]).view(3, 3, 4, 4)
    colour = data.TrainSet(x.transpose(0, 1).contiguous(), torch.tensor([0, 1, 0]), ["a", "b"], (0.0,) * 3,
                           (1.0,) * 3, {})
    low, high = pixel_range(colour)
    assert low.flatten().tolist() == [-1, 0, -3] and high.flatten().tolist() == [1, 5, 0]


def test_synset_file_roundtrip_and_exports(tmp_path, splits):
    s = condense(splits.train_set(), "kmeans", 2)
    s.save(tmp_path / "synset.safetensors")
    back = SyntheticSet.load(tmp_path / "synset.safetensors")
    assert torch.equal(back.images, s.images) and torch.equal(back.labels, s.labels)
    assert back.meta["ipc"] == 2 and back.meta["format"] == "distillab.synset" and back.meta["size_bytes"] == s.nbytes()
    assert back.meta["method"] == "kmeans" and "distillab_version" in back.meta
    s.export_npz(tmp_path / "s.npz")
    loaded = data.load(f"npz:{tmp_path / 's.npz'}")
    assert len(loaded.train) + len(loaded.test) == 20
    s.save_grid(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"


def test_vectorised_protocol_matches_sequential(splits):
    s = condense(splits.train_set(), "random", 5)
    proto = Protocol(epochs=30, runs=3, models=("convnet:width=8,depth=2",))
    vec = evaluate_images(s.images, s.labels, splits.test, proto, seed=0, vectorise=True)
    seq = evaluate_images(s.images, s.labels, splits.test, proto, seed=0, vectorise=False)
    v, q = vec["convnet:width=8,depth=2"], seq["convnet:width=8,depth=2"]
    assert v["vectorised"] and not q["vectorised"]
    # the same initial models and full-batch steps: the same training, up to float rounding
    assert np.allclose(v["runs"], q["runs"], atol=0.02)


def test_protocol_schedule_and_soft_targets(splits):
    proto = Protocol(epochs=10)
    assert [proto.lr_at(proto.models[0], e) for e in (0, 4, 5, 9)] == [0.01, 0.01, pytest.approx(0.001), pytest.approx(0.001)]
    s = condense(splits.train_set(), "random", 2)
    soft = torch.nn.functional.one_hot(s.labels, 10).float()
    proto = Protocol(epochs=5, runs=2, models=("mlp:hidden=16",))
    hard = evaluate_images(s.images, s.labels, splits.test, proto, seed=1)
    via_soft = evaluate_images(s.images, soft, splits.test, proto, seed=1)
    assert np.allclose(hard["mlp:hidden=16"]["runs"], via_soft["mlp:hidden=16"]["runs"], atol=1e-6)


def test_condense_and_evaluate_cli(cli, tmp_path):
    r = cli("condense", "--data", "digits", "--method", "dm", "--ipc", "2", "--iterations", "5",
            "--model", "convnet:width=8,depth=2", "--batch-real", "32", "--quiet", "--out", tmp_path / "c")
    assert r.code == 0, r.err
    for name in ("synset.safetensors", "synset.png", "loss.png", "metrics.json", "config.yaml", "metrics.jsonl"):
        assert (tmp_path / "c" / name).exists(), name
    m = json.loads((tmp_path / "c/metrics.json").read_text())
    assert m["iterations"] == 5 and m["synset_bytes"] < m["train_set_bytes_uint8"] and m["iterations_per_second"] > 0
    e = cli("evaluate", tmp_path / "c/synset.safetensors", "--models", "convnet:width=8,depth=2", "mlp:hidden=16",
            "--runs", "2", "--epochs", "5", "--dsa", "--quiet", "--out", tmp_path / "e")
    assert e.code == 0, e.err
    models = e.json["models"]
    assert set(models) == {"convnet:width=8,depth=2", "mlp:hidden=16"}
    assert set(models["mlp:hidden=16"]) >= {"mean", "std", "runs"} and len(models["mlp:hidden=16"]["runs"]) == 2


@pytest.mark.parametrize("args, who", [(["--method", "dm", "--iterations", "1000000000"], "dm's iterations"),
                                       (["--method", "gm:iterations=1000001"], "gm's iterations"),
                                       (["--method", "random", "--labels", "learn:iterations=10000000"],
                                        "learn's iterations")])
def test_iterations_of_a_typo_are_refused_before_any_work(cli, tmp_path, args, who):
    r = cli("condense", "--ipc", "1", *args, "--out", tmp_path / "o")
    assert_one_line_error(r, who, "at most 1,000,000")
    assert list(tmp_path.iterdir()) == []


def test_condense_bad_inputs(cli, tmp_path):
    assert_one_line_error(cli("condense", "--method", "random", "--ipc", "5000", "--out", tmp_path / "o"),
                          "smallest class")
    assert_one_line_error(cli("condense", "--method", "magic", "--ipc", "1", "--out", tmp_path / "o"),
                          "unknown condensation method")
    nan = tmp_path / "nan.npz"
    x = np.zeros((20, 8, 8), np.float32)
    x[3, 2, 2] = np.nan
    np.savez(nan, x=x, y=np.arange(20) % 2)
    assert_one_line_error(cli("condense", "--data", f"npz:{nan}", "--method", "random", "--ipc", "1",
                              "--out", tmp_path / "o"), "NaN")
    assert not (tmp_path / "o").exists()


def test_evaluating_a_synset_against_other_data(cli, tmp_path, splits):
    s = condense(splits.train_set(), "random", 1)
    s.meta["source"]["data"] = "digits"
    s.save(tmp_path / "s.safetensors")
    other = write_npz(tmp_path / "other.npz", classes=10, size=12, n=100)
    r = cli("evaluate", tmp_path / "s.safetensors", "--data", f"npz:{other}", "--out", tmp_path / "o")
    assert_one_line_error(r, "shape")
    three = write_npz(tmp_path / "three.npz", classes=3)
    r = cli("evaluate", tmp_path / "s.safetensors", "--data", f"npz:{three}", "--out", tmp_path / "o")
    assert_one_line_error(r, "classes")
    assert not (tmp_path / "o").exists()


def test_bptt_set_keeps_its_schedule_and_init(cli, tmp_path):
    r = cli("condense", "--method", "bptt", "--ipc", "1", "--iterations", "15", "--model", "mlp:hidden=32",
            "--bptt-steps", "5", "--bptt-epochs", "1", "--batch-real", "256", "--lr-img", "0.05", "--quiet",
            "--out", tmp_path / "b")
    assert r.code == 0, r.err
    s = SyntheticSet.load(tmp_path / "b/synset.safetensors")
    assert s.lrs.shape == (5,) and s.init_state is not None and s.meta["bptt"]["init_net"] == "fixed"
    e = cli("evaluate", tmp_path / "b/synset.safetensors", "--models", "mlp:hidden=32", "--runs", "2", "--epochs", "3",
            "--quiet", "--out", tmp_path / "e")
    assert e.code == 0, e.err
    assert e.json["as_made"]["init_net"] == "fixed" and len(e.json["as_made"]["runs"]) == 1
    assert 0 <= e.json["as_made"]["mean"] <= 1


def test_export_cli(cli, tmp_path, splits):
    s = condense(splits.train_set(), "mean", 1)
    s.save(tmp_path / "s.safetensors")
    assert cli("export", tmp_path / "s.safetensors", "--to", tmp_path / "s.npz").code == 0
    assert np.load(tmp_path / "s.npz")["x"].shape == (10, 1, 8, 8)
    assert cli("export", tmp_path / "s.safetensors", "--to", tmp_path / "s.png").code == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert_one_line_error(cli("export", tmp_path / "s.safetensors", "--to", tmp_path / "s.jpg"), ".npz or .png")
    assert_one_line_error(cli("export", tmp_path / "missing.safetensors", "--to", tmp_path / "m.npz"), "no such file")
