"""Model distillation through the Python API: teachers of every kind, feature losses, chains, inspect."""

import json

import numpy as np
import pytest
import torch

import distillab
from distillab.api import chain, distill, inspect_teacher, predict, train
from distillab.models import load_model

FAST = dict(epochs=2, batch_size=64, quiet=True)


def _weights(path):
    model, _ = load_model(path)
    return torch.cat([p.flatten() for p in model.parameters()])


def test_teacher_parameters_unchanged_by_distillation(tmp_path, digits_teacher):
    before = _weights(digits_teacher)
    model, _ = load_model(digits_teacher)
    distill(teacher=model, student="mlp:hidden=16", cache=False, out=tmp_path / "kd", **FAST)
    after = torch.cat([p.flatten() for p in model.parameters()])
    assert torch.equal(before, after) and torch.equal(before, _weights(digits_teacher))


def test_cached_and_live_teacher_train_the_same_student(tmp_path, digits_teacher):
    cached = distill(teacher=digits_teacher, student="mlp:hidden=16", cache=True, out=tmp_path / "c", **FAST)
    live = distill(teacher=digits_teacher, student="mlp:hidden=16", cache=False, out=tmp_path / "l", **FAST)
    assert cached.metrics["teacher_mode"] == "cached" and live.metrics["teacher_mode"] == "live"
    assert torch.allclose(_weights(tmp_path / "c/model.safetensors"), _weights(tmp_path / "l/model.safetensors"),
                          atol=1e-5)


def test_black_box_full_probabilities_equal_logit_matching(tmp_path, digits_teacher):
    """Centred log-probabilities from a probability-only teacher train the same student as logit matching."""
    predict(digits_teacher, "digits", output="probs", out=tmp_path / "p.npz", quiet=True)
    bb = distill(teacher_outputs=tmp_path / "p.npz", student="mlp:hidden=16", losses=["logit-mse:center=1"],
                 out=tmp_path / "bb", lr=0.01, **FAST)
    lm = distill(teacher=digits_teacher, student="mlp:hidden=16", losses=["logit-mse:center=1"],
                 out=tmp_path / "lm", lr=0.01, **FAST)
    assert bb.metrics["teacher_mode"] == "outputs"
    assert abs(bb.metrics["test_accuracy"] - lm.metrics["test_accuracy"]) < 0.01
    assert torch.allclose(_weights(tmp_path / "bb/model.safetensors"), _weights(tmp_path / "lm/model.safetensors"),
                          atol=1e-3)


def test_black_box_top_k_and_logits(tmp_path, digits_teacher):
    predict(digits_teacher, "digits", output="probs", top_k=3, out=tmp_path / "top3.npz", quiet=True)
    r = distill(teacher_outputs=tmp_path / "top3.npz", student="mlp:hidden=16", losses=["kd:T=2"], out=tmp_path / "k", **FAST)
    assert 0.3 < r.metrics["test_accuracy"] <= 1
    with pytest.raises(distillab.DistillabError, match="top-k"):
        distill(teacher_outputs=tmp_path / "top3.npz", student="mlp:hidden=16", losses=["logit-mse"],
                out=tmp_path / "bad", **FAST)
    predict(digits_teacher, "digits", output="logits", out=tmp_path / "logits.npz", quiet=True)
    z = np.load(tmp_path / "logits.npz")
    assert z["logits"].shape == (1348, 10) and np.array_equal(z["index"], np.arange(1348))


def test_ensemble_and_callable_teachers(tmp_path, digits_teacher):
    r = distill(teacher=[digits_teacher, digits_teacher], student="mlp:hidden=16", out=tmp_path / "e", **FAST)
    assert r.metrics["teacher_mode"].startswith("ensemble of 2")
    model, meta = load_model(digits_teacher)

    def api(x):  # a black box that answers with probabilities only
        with torch.no_grad():
            return torch.softmax(model(x), 1)

    # a distillab model takes the inputs as the student sees them
    r2 = distill(teacher=api, teacher_inputs="normalised", student="mlp:hidden=16", out=tmp_path / "f", **FAST)
    assert r2.metrics["teacher_mode"] == "callable (normalised)" and r2.metrics["test_accuracy"] > 0.3


def test_a_function_teacher_gets_the_data_as_it_is(tmp_path):
    """A scikit-learn model fit on the raw pixels, given as a function: by default it is called with the data's own
    values and shape (before: standardised inputs, which it silently answered badly)."""
    from sklearn.linear_model import LogisticRegression

    from distillab import data as data_mod

    ds = data_mod.load("digits")
    flat = ds.train.x.reshape(len(ds.train.x), -1).numpy()
    model = LogisticRegression(max_iter=2000).fit(flat, ds.train.y.numpy())
    seen = []

    def sklearn_teacher(x):
        seen.append((tuple(x.shape[1:]), float(x.min()), float(x.max())))
        return model.predict_proba(x.reshape(len(x), -1).numpy())

    r = distill(teacher=sklearn_teacher, student="mlp:hidden=32", out=tmp_path / "raw", **{**FAST, "epochs": 5})
    assert {s[0] for s in seen} == {(1, 8, 8)} and min(s[1] for s in seen) >= 0 and max(s[2] for s in seen) <= 1
    assert r.metrics["teacher_mode"] == "callable (raw)" and r.metrics["test_accuracy"] > 0.8
    assert "callable (raw)" in (tmp_path / "raw/config.yaml").read_text()
    seen.clear()
    r = distill(teacher=sklearn_teacher, teacher_inputs="normalised", student="mlp:hidden=32", out=tmp_path / "norm",
                **{**FAST, "epochs": 5})
    assert min(s[1] for s in seen) < 0  # standardised: what the student sees, not what the model was fit on


@pytest.fixture(scope="module")
def conv_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "t"
    train(data="digits", model="convnet:width=8,depth=2", epochs=3, batch_size=64, out=out, quiet=True)
    return out / "model.safetensors"


@pytest.mark.parametrize("losses", [["ce", "rkd:distance=25,angle=50"], ["ce", "hint:w=1"],
                                    ["ce", "at:w=100,student=features.2,teacher=features.2"],
                                    ["ce", "hint:student=features.0,teacher=features.0"]])
def test_feature_losses_train_with_taps_and_connectors(tmp_path, conv_teacher, losses):
    r = distill(teacher=conv_teacher, student="convnet:width=4,depth=2", losses=losses, out=tmp_path / "f", **FAST)
    first = json.loads((tmp_path / "f/metrics.jsonl").read_text().splitlines()[0])
    names = {"rkd": ("train_rkd_distance", "train_rkd_angle"), "hint": ("train_hint",), "at": ("train_at",)}
    for key in names[losses[1].split(":")[0]]:
        assert key in first and np.isfinite(first[key])
    steps = (tmp_path / "f/steps.jsonl").read_text().splitlines()
    assert len(steps) == 2 * -(-1214 // 64) and "ce" in json.loads(steps[0])  # every step: 1214 images, batch 64
    assert r.metrics["test_accuracy"] > 0.2


def test_chain_saves_every_stage(tmp_path, digits_teacher):
    r = chain(teacher=digits_teacher, students=["mlp:hidden=24", "mlp:hidden=8"], out=tmp_path / "c", **FAST)
    assert [s["student"] for s in r.metrics["stages"]] == ["mlp:hidden=24", "mlp:hidden=8"]
    assert (tmp_path / "c/stage1/model.safetensors").exists() and (tmp_path / "c/stage2/model.safetensors").exists()
    cfg = json.loads((tmp_path / "c/stage2/metrics.json").read_text())
    assert cfg["test_accuracy"] == r.metrics["test_accuracy"]
    r2 = chain(teacher=digits_teacher, students=["mlp:hidden=24", "mlp:hidden=8"], from_all=True, out=tmp_path / "d", **FAST)
    assert r2.metrics["stages"][1]["test_accuracy"] > 0


def test_inspect_and_label_smoothing_warnings(tmp_path, digits_teacher):
    report = inspect_teacher(digits_teacher)
    assert 0.8 < report["test_accuracy"] <= 1 and 0 <= report["ece"] < 1
    assert set(report["non_target_entropy"]) == {"T=1", "T=2", "T=4", "T=8", "T=20"}
    ent = list(report["non_target_entropy"].values())
    assert ent == sorted(ent)  # softening raises the entropy of the wrong-class distribution
    assert len(report["most_confused_pairs"]) == 5 and not report["warnings"]
    smoothed = train(data="digits", model="mlp:hidden=64", epochs=15, batch_size=64, label_smoothing=0.2,
                     out=tmp_path / "ls", quiet=True)
    with pytest.warns(UserWarning, match="label smoothing"):
        ls_report = inspect_teacher(smoothed.out / "model.safetensors")
    assert ls_report["label_smoothing_in_recipe"] == 0.2 and ls_report["warnings"]
    assert ls_report["non_target_logit_spread"] < report["non_target_logit_spread"]
    with pytest.warns(UserWarning, match="label smoothing"):
        distill(teacher=smoothed.out / "model.safetensors", student="mlp:hidden=8", out=tmp_path / "k", **FAST)
    with pytest.warns(UserWarning, match="label smoothing on the student"):
        distill(teacher=digits_teacher, student="mlp:hidden=8", label_smoothing=0.1, out=tmp_path / "k2", **FAST)


def test_kd_cli_warns_about_label_smoothing(cli, tmp_path, digits_teacher):
    r = cli("kd", "--teacher", digits_teacher, "--student", "mlp:hidden=8", "--epochs", "1", "--quiet",
            "--label-smoothing", "0.1", "--out", tmp_path / "o")
    assert r.code == 0 and "distillab: warning: label smoothing" in r.err
    r = cli("inspect", digits_teacher)
    assert r.code == 0 and "suggested_temperature_range" in r.json


def test_cli_chain_and_loss_flags(cli, tmp_path, digits_teacher):
    r = cli("kd", "--chain", digits_teacher, "mlp:hidden=16", "mlp:hidden=8", "--epochs", "1", "--quiet",
            "--out", tmp_path / "c")
    assert r.code == 0, r.err
    assert len(r.json["stages"]) == 2
    r = cli("kd", "--teacher", digits_teacher, "--student", "mlp:hidden=8", "--loss", "kd:T=2,w=0.5",
            "--loss", "logit-mse:w=0.01,center=1", "--loss", "ce:w=0.5", "--epochs", "1", "--quiet", "--out", tmp_path / "l")
    assert r.code == 0, r.err
    first = json.loads((tmp_path / "l/metrics.jsonl").read_text().splitlines()[0])
    assert {"train_kd_T2", "train_logit_mse", "train_ce"} <= set(first)


def test_seeds_give_mean_std_runs(tmp_path, digits_teacher):
    from distillab.api import repeat_over_seeds
    r = repeat_over_seeds(distill, [0, 1, 2], teacher=digits_teacher, student="mlp:hidden=8", out=tmp_path / "s",
                          epochs=1, quiet=True)
    acc = r.metrics["test_accuracy"]
    assert len(acc["runs"]) == 3 and acc["mean"] == pytest.approx(np.mean(acc["runs"]))
    assert acc["std"] == pytest.approx(np.std(acc["runs"], ddof=1))


def test_hint_connectors_come_from_the_run_seed_not_the_global_rng(tmp_path, conv_teacher):
    """The learned connector is initialised from the run's seed: the global RNG neither changes nor matters."""
    spec = dict(teacher=conv_teacher, student="convnet:width=4,depth=2", losses=["ce", "hint:w=1"], epochs=1,
                batch_size=64, quiet=True)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = distill(out=tmp_path / "a", **spec)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(456)
    b = distill(out=tmp_path / "b", **spec)
    assert all(torch.equal(p, q) for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_a_result_carries_its_history_its_set_and_one_test_accuracy(tmp_path):
    """Result.history is metrics.jsonl's records; a condense Result holds its SyntheticSet; a set's evaluation has a
    test_accuracy as a model's does, the per-model figures beside it."""
    from distillab import api

    trained = train(data="digits", model="mlp:hidden=8", out=tmp_path / "t", **FAST)
    assert [h["epoch"] for h in trained.history] == [1, 2] and "val_accuracy" in trained.history[-1]
    made = api.condense_data("digits", "dm:iterations=3,batch_real=8,model=[convnet:width=4,depth=2]", 1,
                             out=tmp_path / "c", quiet=True)
    assert [h["iteration"] for h in made.history] == [1, 2, 3]
    assert tuple(made.synset.images.shape) == (10, 1, 8, 8)
    assert torch.equal(made.synset.images, api.load(tmp_path / "c/synset.safetensors").images)
    judged = api.evaluate_synset(tmp_path / "c/synset.safetensors", models=["mlp:hidden=8", "mlp:hidden=4"], runs=2,
                                 epochs=2, out=tmp_path / "e", quiet=True)
    means = [judged.metrics["models"][spec]["mean"] for spec in ("mlp:hidden=8", "mlp:hidden=4")]
    assert judged.metrics["test_accuracy"] == pytest.approx(sum(means) / 2)
    assert len(judged.history) == 2  # one record per model spec
