"""distillab tune: a grid search scored on the validation split with the test split sealed -- no trial can read it,
only the chosen recipe's final runs are measured -- with its trial table, budget and one-line errors."""

import json

import pytest

from distillab import api, data as data_mod
from distillab.errors import DistillabError
from distillab.models import build_model
from distillab.training import accuracy
from distillab.tuning import grid_points, parse_grid_value, search

from conftest import assert_one_line_error

BASE = dict(data="digits", model="mlp:hidden=16", epochs=2, batch_size=64)


def test_the_test_split_is_sealed_inside_a_search(tmp_path):
    with data_mod.sealed_test_split():
        splits = data_mod.split(data_mod.load("digits"))
        assert len(splits.test) == 449 and data_mod.is_test_sealed(splits)
        model = build_model("mlp:hidden=4", splits.input_shape, splits.num_classes)
        with pytest.raises(DistillabError, match="sealed"):
            accuracy(model, splits.test)
        with pytest.raises(DistillabError, match="sealed"):
            splits.test.y
        run = api.train(**BASE, quiet=True, out=tmp_path / "trial")
    assert run.metrics["test_accuracy"] is None and run.metrics["val_accuracy"] > 0
    assert not data_mod.is_test_sealed(data_mod.split(data_mod.load("digits")))  # only inside the block


def test_tune_reads_the_test_split_only_for_the_final_runs(tmp_path, monkeypatch):
    made = []
    split = data_mod.split

    def spy(*args, **kwargs):  # every split the runs make, in order: sealed or not
        splits = split(*args, **kwargs)
        made.append("sealed" if data_mod.is_test_sealed(splits) else "open")
        return splits

    monkeypatch.setattr(data_mod, "split", spy)
    r = api.tune("train", {"lr": [0.01, 0.1], "epochs": [1, 2]}, seeds=(0, 1), out=tmp_path / "t", quiet=True,
                 **{k: v for k, v in BASE.items() if k != "epochs"})
    assert made == ["sealed"] * 4 + ["open"] * 2
    trials = [json.loads(line) for line in (tmp_path / "t" / "trials.jsonl").read_text().splitlines()]
    assert [t["params"] for t in trials] == grid_points({"lr": [0.01, 0.1], "epochs": [1, 2]})
    best = max(trials, key=lambda t: (t["val_accuracy"], -t["trial"]))
    assert r.metrics["best"] == best["params"] and r.metrics["best_val_accuracy"] == best["val_accuracy"]
    assert len(r.metrics["final"]["test_accuracy"]["runs"]) == 2
    seed0 = json.loads((tmp_path / "t" / "final-seed-0" / "metrics.json").read_text())
    assert seed0["val_accuracy"] == best["val_accuracy"]  # the best trial, run again at seed 0: the same run
    trial_metrics = json.loads((tmp_path / "t" / f"trial-{best['trial']:03d}" / "metrics.json").read_text())
    assert trial_metrics["test_accuracy"] is None
    assert "(best)" in (tmp_path / "t" / "trials.md").read_text()


def test_ties_go_to_the_earlier_trial_and_the_budget_stops_new_trials(tmp_path):
    class Fixed:
        def __init__(self, metrics):
            self.metrics = metrics

    calls = []

    def run(out, **kw):
        calls.append(kw)
        return Fixed({"val_accuracy": 0.5, "test_accuracy": None if "seed" not in kw else 0.4, "test_errors": 1})

    r = search(run, {}, {"a": [1, 2, 3]}, tmp_path / "s", seeds=(0,))
    assert r["best"] == {"a": 1} and r["trials_run"] == 3
    calls.clear()
    r = search(run, {}, {"a": [1, 2, 3]}, tmp_path / "b", seeds=(0,), budget_minutes=1e-9)
    assert r["trials_run"] == 1 and r["trials_skipped"] == 2 and len(calls) == 2  # one trial, one final run
    def diverges(out, **kw):
        if kw.get("a") == 2:
            raise DistillabError("training diverged at epoch 1 (loss is not finite); lower --lr")
        return run(out, **kw)

    r = search(diverges, {}, {"a": [1, 2, 3]}, tmp_path / "d", seeds=(0,))
    assert r["trials_run"] == 2 and r["trials"][1]["status"].startswith("failed: training diverged")
    assert "failed" in (tmp_path / "d" / "trials.md").read_text()
    with pytest.raises(DistillabError, match="every trial failed"):
        search(lambda out, **kw: diverges(out, a=2), {}, {"a": [2]}, tmp_path / "e")
    with pytest.raises(DistillabError, match="measured the test split"):
        search(lambda out, **kw: Fixed({"val_accuracy": 0.5, "test_accuracy": 0.9}), {}, {"a": [1]}, tmp_path / "c")


def test_grid_values_and_points():
    assert grid_points({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert [parse_grid_value(v) for v in ("3", "0.5", "relu", "nan")] == [3, 0.5, "relu", "nan"]
    for bad in ({}, {"a": []}, {"a": [1, 1]}):
        with pytest.raises(DistillabError):
            grid_points(bad)


def test_cli_tune_kd(cli, digits_teacher, tmp_path):
    r = cli("tune", "kd", "--data", "digits", "--teacher", digits_teacher, "--student", "mlp:hidden=16",
            "--epochs", "1", "--grid", "temperature=2,4", "--grid", "alpha=0.5,0.9", "--final-seeds", "0,1",
            "--out", tmp_path / "kd")
    assert r.code == 0, r.err
    assert r.json["trials_run"] == 4 and set(r.json["best"]) == {"temperature", "alpha"}
    assert r.json["best"]["temperature"] in (2.0, 4.0) and isinstance(r.json["best"]["temperature"], float)
    config = json.loads((tmp_path / "kd" / "trial-000" / "metrics.json").read_text())
    assert config["test_accuracy"] is None


@pytest.mark.parametrize("args, fragment", [
    (["--grid", "nosuch=1,2"], "no such flag"),
    (["--grid", "lr=abc"], "not a valid value"),
    (["--grid", "optimizer=sgd,rmsprop"], "not one of"),
    (["--lr", "0.1", "--grid", "lr=0.01,0.1"], "also given as a fixed flag"),
    (["--seeds", "0,1", "--grid", "lr=0.1"], "drop --seeds"),
    ([], "at least one --grid"),
    (["--grid", "lr"], "FLAG=V1,V2"),
])
def test_cli_tune_errors_are_one_line(cli, tmp_path, args, fragment):
    out = tmp_path / "o"
    assert_one_line_error(cli("tune", "train", "--data", "digits", "--model", "mlp:hidden=8", *args, "--out", out),
                          fragment)
    assert not out.exists()


CONDENSE = dict(data="digits", method="dm", ipc=1, iterations=2, model="convnet:width=4,depth=1", batch_real=8)
SCORER = api.Protocol(epochs=3, runs=1, models=("mlp:hidden=8",))


def test_tune_condense_scores_trials_on_validation_and_measures_only_the_final_sets(tmp_path, monkeypatch):
    from distillab import evaluation

    scored = []
    evaluate_images = evaluation.evaluate_images

    def spy(x, targets, test, proto, **kw):  # which split each set's models are measured on, and how many models
        scored.append(("val" if len(test) == 134 else "test" if len(test) == 449 else len(test), proto.runs,
                       kw["seed"]))
        return evaluate_images(x, targets, test, proto, **kw)

    monkeypatch.setattr(evaluation, "evaluate_images", spy)
    r = api.tune("condense", {"lr_img": [0.1, 1.0]}, seeds=(0, 1), out=tmp_path / "c", quiet=True,
                 protocol=SCORER, final_runs=2, **CONDENSE)
    assert scored == [("val", 1, 0), ("val", 1, 0), ("test", 2, 0), ("test", 2, 1)]  # a final seed: its own models
    trials = [json.loads(line) for line in (tmp_path / "c" / "trials.jsonl").read_text().splitlines()]
    best = max(trials, key=lambda t: (t["val_accuracy"], -t["trial"]))
    assert r.metrics["best"] == best["params"]
    trial = json.loads((tmp_path / "c" / f"trial-{best['trial']:03d}" / "scores.json").read_text())
    assert trial["scored_on"] == "validation" and trial["test_accuracy"] is None
    assert trial["condense"]["method"] == "dm" and trial["val_accuracy"] == best["val_accuracy"]
    final = json.loads((tmp_path / "c" / "final-seed-1" / "scores.json").read_text())
    assert final["scored_on"] == "test" and final["val_accuracy"] is None and final["protocol"]["runs"] == 2
    assert r.metrics["final"]["test_accuracy"]["runs"][1] == final["test_accuracy"]
    from distillab.condense import SyntheticSet  # the seed reaches condense; the chosen rate too
    sets = [SyntheticSet.load(tmp_path / "c" / f"final-seed-{s}" / "condense" / "synset.safetensors") for s in (0, 1)]
    assert sets[0].meta["recipe"]["seed"] == 0 and sets[1].meta["recipe"]["seed"] == 1
    assert sets[0].meta["recipe"]["lr_img"] == best["params"]["lr_img"]


def test_cli_tune_condense(cli, tmp_path):
    r = cli("tune", "condense", "--data", "digits", "--method", "dm", "--ipc", "1", "--iterations", "2",
            "--model", "convnet:width=4,depth=1", "--batch-real", "8", "--grid", "lr_img=0.1,1",
            "--eval-models", "mlp:hidden=8", "--eval-epochs", "3", "--eval-runs", "1", "--final-runs", "2",
            "--final-seeds", "0", "--out", tmp_path / "c")
    assert r.code == 0, r.err
    assert r.json["trials_run"] == 2 and r.json["best"]["lr_img"] in (0.1, 1.0)
    scores = json.loads((tmp_path / "c" / "final-seed-0" / "scores.json").read_text())
    assert scores["protocol"]["runs"] == 2 and scores["protocol"]["epochs"] == 3
    assert list(scores["models"]) == ["mlp:hidden=8"]
    trial = json.loads((tmp_path / "c" / "trial-000" / "scores.json").read_text())
    assert trial["protocol"]["runs"] == 1


def test_cli_tune_condense_grids_options_of_the_method(cli, tmp_path):
    from distillab.condense import SyntheticSet

    r = cli("tune", "condense", "--data", "digits", "--method", "dm:batch_real=8", "--ipc", "1", "--iterations", "2",
            "--model", "convnet:width=4,depth=1", "--grid", "momentum=0,0.9", "--grid", "clamp=none,end",
            "--eval-models", "mlp:hidden=8", "--eval-epochs", "2", "--eval-runs", "1", "--final-runs", "1",
            "--final-seeds", "0", "--out", tmp_path / "c")
    assert r.code == 0, r.err
    assert r.json["grid"] == {"method": ["dm:batch_real=8,momentum=0,clamp=none", "dm:batch_real=8,momentum=0,clamp=end",
                                         "dm:batch_real=8,momentum=0.9,clamp=none",
                                         "dm:batch_real=8,momentum=0.9,clamp=end"]}
    made = [SyntheticSet.load(tmp_path / "c" / f"trial-00{i}" / "condense" / "synset.safetensors").meta["recipe"]
            for i in range(4)]
    assert [(m["momentum"], m["clamp"], m["batch_real"], m["iterations"]) for m in made] == [
        (0.0, "none", 8, 2), (0.0, "end", 8, 2), (0.9, "none", 8, 2), (0.9, "end", 8, 2)]


# a mutant that lets a bad grid through then runs two-second trials, not the default recipe
FAST = ["--iterations", "1", "--batch-real", "8", "--model", "convnet:width=4,depth=1",
        "--eval-models", "mlp:hidden=8", "--eval-epochs", "1"]


@pytest.mark.parametrize("command, args, fragment", [
    ("condense", ["--method", "dm", "--ipc", "1", *FAST, "--grid", "nosuch=1,2"], "dm no such option"),
    ("condense", ["--method", "dm:momentum=0.5", "--ipc", "1", *FAST, "--grid", "momentum=0.1,0.9"],
     "--method dm:momentum=0.5 also sets it"),
    ("condense", ["--method", "dm", "--ipc", "1", *FAST, "--grid", "momentum=0.1,2"], "momentum must be in [0, 1)"),
    ("condense", ["--method", "dm", "--ipc", "1", *FAST, "--grid", "clamp=maybe"], "clamp must be one of none, step, end"),
    ("condense", ["--method", "dm", "--ipc", "1", *FAST, "--grid", "momentum=0.1", "--grid", "momentum=0.2"], "twice"),
    ("condense", ["--method", "dm", "--ipc", "1", *FAST, "--grid", "momentum=0.1", "--grid", "method=dm,random"],
     "give it in one place"),
    ("condense", ["--method", "import:os:system", "--ipc", "1", *FAST, "--grid", "momentum=0.1"], "trust"),
    ("train", ["--model", "mlp:hidden=8", "--eval-runs", "2", "--grid", "lr=0.1"], "drop them"),
    ("condense", ["--method", "dm", "--ipc", "1", "--seed", "3", "--grid", "lr_img=0.1"], "drop --seeds / --seed"),
    ("condense", ["--grid", "lr_img=0.1"], "needs --method NAME and --ipc N"),
    ("condense", ["--method", "dm", "--ipc", "1", "--dry-run", "--grid", "lr_img=0.1"], "drop --resume"),
    ("condense", ["--method", "dm", "--ipc", "1", "--grid", "lr_img=0.1", "--eval-dsa", "--eval-augment", "dc"],
     "pick one"),
    ("condense", ["--method", "dm", "--ipc", "1", "--grid", "lr_img=0.1", "--final-runs", "0"], "at least 1"),
    ("condense", ["--method", "dm", "--ipc", "1", "--grid", "lr_img=0.1", "--eval-models", "nosuch"],
     "unknown model 'nosuch'"),
])
def test_cli_tune_condense_errors_are_one_line(cli, tmp_path, command, args, fragment):
    out = tmp_path / "o"
    assert_one_line_error(cli("tune", command, "--data", "digits", *args, "--out", out), fragment)
    assert not out.exists()


def test_tune_condense_as_made_scores_bptt_sets_by_their_learned_schedule(cli, tmp_path, monkeypatch):
    from distillab.condense.methods import bptt

    trained = []
    schedule = bptt.train_with_schedule

    def spy(*args, **kw):
        trained.append(kw.get("init_state") is None)
        return schedule(*args, **kw)

    monkeypatch.setattr(bptt, "train_with_schedule", spy)
    r = cli("tune", "condense", "--data", "digits", "--method", "bptt:steps=2,epochs=1,batch_real=32", "--ipc", "1",
            "--iterations", "2", "--model", "mlp:hidden=8", "--init-net", "random", "--grid", "lr_img=0.01,0.1",
            "--eval-as-made", "--eval-runs", "3", "--final-runs", "4", "--final-seeds", "0", "--out", tmp_path / "b")
    assert r.code == 0, r.err
    assert trained == [True] * (3 + 3 + 4)  # fresh nets trained with each set's learned rates, not the protocol
    final = json.loads((tmp_path / "b" / "final-seed-0" / "scores.json").read_text())
    assert list(final["models"]) == ["as made"] and len(final["models"]["as made"]["runs"]) == 4
    assert_one_line_error(cli("tune", "condense", "--data", "digits", "--method", "dm", "--ipc", "1", "--grid",
                              "lr_img=0.1,1", "--eval-as-made", "--out", tmp_path / "r"), "score it by the protocol")


def test_tune_condense_refuses_bad_scoring_options_before_any_trial(monkeypatch, cli, tmp_path):
    from distillab import tuning

    ran = []
    real = tuning.search
    monkeypatch.setattr(tuning, "search", lambda *a, **k: ran.append(1) or real(*a, **k))
    for extra in (["--final-runs", "0"], ["--eval-models", "nosuch"]):
        r = cli("tune", "condense", "--data", "digits", "--method", "dm", "--ipc", "1", "--iterations", "1",
                "--grid", "lr_img=0.1", *extra, "--out", tmp_path / "o")
        assert r.code == 2 and not (tmp_path / "o").exists()
    assert ran == []  # refused up front, not after a search's worth of condensing
