"""Label modes (``--labels hard|learn|teacher``) and a condensation's budget (bytes, seconds, memory, real images read),
and ``condense --dry-run``."""

import json
import shutil

import pytest
import torch

from distillab import api
from distillab.condense import SyntheticSet, condense, parse_labels
from distillab.condense.labels import Learn, Teacher
from distillab.data import load, split
from distillab.errors import DistillabError
from distillab.models import load_model
from tests.conftest import assert_one_line_error

SMALL = "convnet:width=4,depth=2"
LEARN = f"learn:iterations=12,steps=3,batch_real=64,model=[{SMALL}]"


@pytest.fixture(scope="module")
def train():
    return split(load("digits")).train_set()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("labels-teacher") / "t"
    api.train(data="digits", model="mlp:hidden=32", epochs=3, batch_size=64, out=out, quiet=True)
    return str(out / "model.safetensors")


def test_learned_labels_change_only_the_labels_and_lower_the_real_loss(train):
    losses = []
    hard = condense(train, "random", 2, seed=1)
    learned = condense(split(load("digits")).train_set(), "random", 2, seed=1,
                       labels=Learn(iterations=30, steps=5, lr_inner=0.3, lr=0.1, batch_real=128,
                                    model="mlp:hidden=32"),
                       progress=lambda it, loss: losses.append(loss))
    assert torch.equal(hard.images, learned.images) and torch.equal(hard.labels, learned.labels)
    assert hard.label_logits is None and learned.label_logits.shape == (20, 10)
    start = 3.0 * torch.nn.functional.one_hot(hard.labels, 10).float()
    assert not torch.allclose(learned.label_logits, start, atol=1e-3)  # the logits moved
    # the inner training scored on real images gets better as the labels are learned (catches a graph that never
    # reaches the logits, or a step the wrong way)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.1, losses
    assert learned.meta["recipe"]["labels"]["name"] == "learn" and learned.meta["labels"].startswith("learn:")


def test_learned_labels_are_deterministic_and_leave_the_global_rng_alone(train):
    state = torch.get_rng_state()
    a = condense(train, "random", 1, seed=4, labels=LEARN)
    assert torch.equal(torch.get_rng_state(), state)
    b = condense(train, "random", 1, seed=4, labels=LEARN)
    c = condense(train, "random", 1, seed=5, labels=LEARN)
    assert torch.equal(a.label_logits, b.label_logits)
    assert not torch.equal(a.label_logits, c.label_logits)


def test_relabelling_a_kept_set_gives_the_set_condense_makes(train):
    from distillab.condense import relabel

    method = f"dm:iterations=2,batch_real=8,model=[{SMALL}]"
    together = condense(train, method, 1, seed=2, labels=LEARN)
    later = relabel(split(load("digits")).train_set(), condense(train, method, 1, seed=2), LEARN, seed=2)
    assert torch.equal(together.images, later.images) and torch.equal(together.label_logits, later.label_logits)
    assert later.meta["labels"] == together.meta["labels"]
    assert later.meta["budget"]["real_images_read"] == together.meta["budget"]["real_images_read"]


def test_teacher_labels_are_the_teachers_tempered_outputs(train, teacher):
    synset = condense(train, "random", 2, seed=0, labels=f"teacher:model={teacher},temperature=2")
    model, _ = load_model(teacher)
    with torch.no_grad():
        expected = model(synset.images) / 2
    assert torch.allclose(synset.label_logits, expected, atol=1e-5)
    assert synset.meta["teacher"]["file"] == "model.safetensors" and len(synset.meta["teacher"]["sha256"]) == 64


def test_label_specs():
    assert isinstance(parse_labels("teacher:runs/t/model.safetensors"), Teacher)
    assert parse_labels("teacher:runs/t/model.safetensors").model == "runs/t/model.safetensors"
    assert parse_labels("learn:iterations=5").iterations == 5
    assert str(parse_labels("hard")) == "hard"
    for bad, words in [("teacher", "needs a model file"), ("learn:iterations=0", "at least 1"),
                       ("soft", "unknown label mode"), ("learn:steps=x", "steps")]:
        with pytest.raises(DistillabError, match=words):
            parse_labels(bad)


def test_soft_labels_reach_the_file_and_the_protocol(tmp_path, cli):
    r = cli("condense", "--data", "digits", "--method", "random", "--ipc", "1", "--labels", LEARN,
            "--out", tmp_path / "set")
    assert r.code == 0, r.err
    synset = SyntheticSet.load(tmp_path / "set/synset.safetensors")
    assert synset.label_logits is not None and synset.meta["labels"].startswith("learn:")
    assert torch.allclose(synset.targets().sum(1), torch.ones(10))
    r = cli("evaluate", tmp_path / "set/synset.safetensors", "--models", SMALL, "--runs", "1", "--epochs", "2",
            "--out", tmp_path / "evaluated")
    assert r.code == 0, r.err


def test_a_teacher_of_another_dataset_is_refused_before_any_output(tmp_path, cli):
    from tests.conftest import write_npz

    write_npz(tmp_path / "three.npz", classes=3)
    assert cli("train", "--data", f"npz:{tmp_path / 'three.npz'}", "--model", "mlp:hidden=8", "--epochs", "1",
               "--out", tmp_path / "t3").code == 0
    r = cli("condense", "--data", "digits", "--method", "random", "--ipc", "1",
            "--labels", f"teacher:{tmp_path / 't3/model.safetensors'}", "--out", tmp_path / "set")
    assert_one_line_error(r, "teacher")
    assert not (tmp_path / "set").exists() and not list(tmp_path.glob(".set*"))
    r = cli("condense", "--data", "digits", "--method", "random", "--ipc", "1",
            "--labels", f"teacher:{tmp_path / 'missing.safetensors'}", "--out", tmp_path / "set")
    assert_one_line_error(r, "no model file")


# ---- budget -------------------------------------------------------------------------------------------------------


def test_the_budget_counts_bytes_and_real_images(tmp_path):
    m = api.condense_data("digits", "random", 3, out=tmp_path / "r", quiet=True).metrics["budget"]
    assert m["images_bytes"] == 30 * 64 * 4 and m["labels_bytes"] == 30 * 8 and m["learned_rates_bytes"] == 0
    assert m["real_images_read"] == m["distinct_real_images_read"] == 30
    dm = f"dm:iterations=5,batch_real=16,model=[{SMALL}]"
    b = api.condense_data("digits", dm, 2, labels=LEARN, out=tmp_path / "d", quiet=True).metrics["budget"]
    # 20 initial images, 5 iterations x 10 classes x 16, then 12 label iterations x 64
    assert b["real_images_read"] == 20 + 5 * 10 * 16 + 12 * 64
    assert 20 < b["distinct_real_images_read"] <= b["train_images"]
    assert b["labels_bytes"] == 20 * 8 + 20 * 10 * 4
    assert b["total_bytes"] == b["images_bytes"] + b["labels_bytes"] + b["learned_rates_bytes"]
    assert b["peak_rss_mb"] > 50 and b["condense_seconds"] > 0
    on_file = SyntheticSet.load(tmp_path / "d/synset.safetensors").meta["budget"]
    assert on_file["real_images_read"] == b["real_images_read"]
    bptt = "bptt:iterations=2,steps=2,epochs=1,batch_real=32,model=[mlp:hidden=8]"
    b = api.condense_data("digits", bptt, 1, out=tmp_path / "b", quiet=True).metrics["budget"]
    assert b["learned_rates_bytes"] == 2 * 4 and b["real_images_read"] == 10 + 2 * 32
    gm = f"gm:iterations=2,outer=3,inner=1,batch_real=8,model=[{SMALL}]"
    b = api.condense_data("digits", gm, 1, out=tmp_path / "g", quiet=True).metrics["budget"]
    assert b["real_images_read"] == 10 + 2 * 3 * 10 * 8


def test_dry_run_estimates_the_run_within_a_factor_two_and_writes_nothing(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    method = "dm:iterations=400,batch_real=32,model=[convnet:width=16,depth=2]"
    # two timings taken seconds apart on a shared machine (a test worker beside this one may start or finish in
    # between): a pair may disagree by chance, so up to three pairs are timed; an estimator that does not
    # extrapolate from the probe to the run's iterations misses all three
    ratios = []
    for attempt in range(3):
        r = cli("condense", "--data", "digits", "--method", method, "--ipc", "5", "--dry-run")
        assert r.code == 0, r.err
        estimate = r.json
        assert list(tmp_path.iterdir()) == []  # no runs/ folder, nothing
        assert estimate["iterations"] == 400 and estimate["probe_iterations"] == 6
        real = api.condense_data("digits", method, 5, out=tmp_path / "real", quiet=True).metrics
        shutil.rmtree(tmp_path / "real")
        ratios.append(estimate["estimated_condense_seconds"] / real["condense_seconds"])
        if 0.5 <= ratios[-1] <= 2.0:
            break
    assert 0.5 <= ratios[-1] <= 2.0, ratios
    assert estimate["estimated_peak_rss_mb"] <= 2 * real["budget"]["peak_rss_mb"]
    assert estimate["synset_bytes"] == real["budget"]["total_bytes"]
    assert_one_line_error(cli("condense", "--data", "digits", "--method", method, "--ipc", "5", "--dry-run",
                              "--out", "x"), "writes nothing")


def test_metrics_json_holds_the_budget(tmp_path):
    api.condense_data("digits", "herding", 2, out=tmp_path / "h", quiet=True)
    budget = json.loads((tmp_path / "h/metrics.json").read_text())["budget"]
    assert budget["real_images_read"] == budget["distinct_real_images_read"] == budget["train_images"]
