"""Trajectory matching (mtt) and its expert trajectories (distillab experts): the matching loss and its
normalisation, the checkpointed unroll against the full one, the learned learning rate, experts that resume to the
same bits, folders from elsewhere refused before anything is written, and the commands end to end."""

import json
import shutil

import pytest
import torch

from distillab import api, data
from distillab import trajectories as experts_mod
from distillab.checkpoint import Checkpoints
from distillab.condense import SyntheticSet, condense
from distillab.condense.methods.mtt import MTT, Student, match_loss, plan_steps, unroll_forward, unroll_gradient
from distillab.dsa import DSA
from distillab.errors import DistillabError
from distillab.files import load_tensors, read_meta, save_tensors
from distillab.models import build_model

from conftest import assert_one_line_error

NET = "convnet:width=4,depth=2"
TINY = dict(model=NET, iterations=3, syn_steps=3, expert_epochs=1, max_start=2, lr_img=100.0, lr_lr=1e-3)


@pytest.fixture(scope="module")
def train():
    return data.split(data.load("digits")).train_set()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two tiny experts of three epochs on digits, made once."""
    out = tmp_path_factory.mktemp("experts") / "ex"
    api.experts("digits", NET, 2, 3, out=out, batch_size=128, quiet=True)
    return out


# ---- the matching loss and the unroll ------------------------------------------------------------------------


def test_the_loss_is_the_distance_to_the_target_over_the_experts_own_movement():
    g = torch.Generator().manual_seed(0)
    start, target, end = (torch.randn(50, generator=g) for _ in range(3))
    assert float(match_loss(target, start, target)) == 0.0
    assert float(match_loss(start, start, target)) == pytest.approx(1.0)
    by_hand = ((end - target) ** 2).sum() / ((start - target) ** 2).sum()
    assert float(match_loss(end, start, target)) == pytest.approx(float(by_hand), rel=1e-6)
    # normalised: an expert that moved ten times as far, with a student off by ten times as much, scores the same
    far = float(match_loss(start + 10 * (end - start), start, start + 10 * (target - start)))
    assert far == pytest.approx(float(by_hand), rel=1e-5)


def _unroll_case(steps=5, batch=4):
    g = torch.Generator().manual_seed(1)
    student = Student(build_model(NET, (1, 8, 8), 3, g))
    start = torch.cat([p.detach().reshape(-1) for p in student.net.parameters()])
    syn = torch.randn(6, 1, 8, 8, generator=g).requires_grad_(True)
    labels = torch.arange(3).repeat_interleave(2)
    lr = torch.tensor(0.05, requires_grad=True)
    augment = DSA.for_inputs((1, 8, 8))
    plan = plan_steps(6, steps, batch, g, augment)  # minibatches of 4 of 6 images: new permutations mid-unroll
    return student, start, syn, labels, lr, plan, augment


@pytest.mark.parametrize("checkpointed", [True, False])
def test_a_student_that_lands_on_the_target_has_zero_loss_and_gradient(checkpointed):
    student, start, syn, labels, lr, plan, augment = _unroll_case()
    end = unroll_forward(student, start, syn, labels, lr, plan, augment)[-1]
    assert not torch.equal(end, start)
    # away from the target, loss and gradients are positive: the identity below is no loss that is always zero
    away = unroll_gradient(student, start, end + 0.01, syn, labels, lr, plan, augment, checkpointed=checkpointed)
    away_syn, away_lr = float(syn.grad.abs().max()), abs(float(lr.grad))
    assert away > 1e-4 and away_syn > 0 and away_lr > 0
    syn.grad = lr.grad = None
    loss = unroll_gradient(student, start, end, syn, labels, lr, plan, augment, checkpointed=checkpointed)
    if checkpointed:  # exact: it ends on the very vector unroll_forward computed
        assert loss == 0.0 and float(syn.grad.abs().max()) == 0.0 and float(lr.grad) == 0.0
    else:  # the full unroll's steps, built with a graph, may round differently in the last bits
        assert loss < 1e-9 * away and float(syn.grad.abs().max()) < 1e-4 * away_syn
        assert abs(float(lr.grad)) < 1e-4 * away_lr


def test_the_checkpointed_unroll_gives_the_full_unrolls_loss_and_gradients():
    student, start, syn, labels, lr, plan, augment = _unroll_case(steps=7)
    target = start + 0.05 * torch.randn(len(start), generator=torch.Generator().manual_seed(2))
    found = {}
    for checkpointed in (True, False):
        syn.grad = lr.grad = None
        loss = unroll_gradient(student, start, target, syn, labels, lr, plan, augment, checkpointed=checkpointed)
        found[checkpointed] = (loss, syn.grad.clone(), lr.grad.clone())
    (loss_c, syn_c, lr_c), (loss_f, syn_f, lr_f) = found[True], found[False]
    assert loss_c == pytest.approx(loss_f, rel=1e-6)
    assert torch.allclose(syn_c, syn_f, rtol=1e-4, atol=1e-7) and float(syn_f.abs().max()) > 1e-4
    assert float(lr_c) == pytest.approx(float(lr_f), rel=1e-4)


# ---- the method ----------------------------------------------------------------------------------------------


def test_the_learning_rate_is_learned_and_stored_with_the_set(train, folder, tmp_path):
    synset = condense(train, MTT(experts=str(folder), **TINY), 2, seed=0)
    # moved from its start by more than float32 rounding (the start is 0.01 in float32: 0.009999999776)
    assert synset.lrs.shape == (1,) and abs(float(synset.lrs[0]) - TINY.get("lr_init", 0.01)) > 1e-6
    assert synset.meta["mtt"]["syn_lr"] == float(synset.lrs[0]) and synset.meta["mtt"]["expert_count"] == 2
    synset.save(tmp_path / "s.safetensors")
    assert torch.equal(SyntheticSet.load(tmp_path / "s.safetensors").lrs, synset.lrs)


def test_every_expert_and_every_start_epoch_below_max_start_is_drawn(train, folder, monkeypatch):
    from distillab.trajectories import Trajectories

    drawn, rows = [], Trajectories.rows

    def spy(self, expert, epochs):
        drawn.append((expert, epochs))
        return rows(self, expert, epochs)

    monkeypatch.setattr(Trajectories, "rows", spy)
    condense(train, MTT(experts=str(folder), **{**TINY, "iterations": 16}), 1, seed=0)
    assert {e for e, _ in drawn} == {0, 1} and {t for _, (t, _) in drawn} == {0, 1}  # max_start 2: epochs 0 and 1
    assert all(end == t + TINY["expert_epochs"] for _, (t, end) in drawn)


def test_the_same_seed_gives_the_same_set_and_another_seed_another(train, folder):
    method = MTT(experts=str(folder), **TINY)
    a, b, c = (condense(train, method, 1, seed=s) for s in (4, 4, 5))
    assert torch.equal(a.images, b.images) and torch.equal(a.lrs, b.lrs)
    assert not torch.equal(a.images, c.images)


def test_a_stopped_condensation_resumes_to_the_same_bits(train, folder, tmp_path):
    """The loop's live state (images, rate, both optimisers' momentum, the generator) is all in its checkpoint."""
    method = MTT(experts=str(folder), **{**TINY, "iterations": 4})
    whole = condense(train, method, 1, seed=1)

    def stop_at_two(it, loss):
        if it == 2:
            raise KeyboardInterrupt

    checkpoints = Checkpoints(tmp_path / "loop.safetensors", every=1)
    with pytest.raises(KeyboardInterrupt):
        condense(train, method, 1, seed=1, progress=stop_at_two, checkpoints=checkpoints)
    resumed_at = []
    again = condense(train, method, 1, seed=1, progress=lambda it, loss: resumed_at.append(it),
                     checkpoints=checkpoints)
    assert resumed_at == [2, 3]
    assert torch.equal(again.images, whole.images) and torch.equal(again.lrs, whole.lrs)


def test_models_with_batch_norm_or_dropout_are_refused(train):
    for spec, word in ((f"{NET},norm=batch", "batch norm"), ("mlp:hidden=8,dropout=0.5", "dropout")):
        with pytest.raises(DistillabError, match=word):
            condense(train, MTT(**{**TINY, "model": spec}), 1)


# ---- experts ---------------------------------------------------------------------------------------------------


def test_expert_files_hold_the_trajectory_and_say_what_made_it(folder, train):
    tensors, meta = load_tensors(folder / "expert-001.safetensors", experts_mod.EXPERT_FORMAT)
    net = build_model(NET, (1, 8, 8), 10)
    assert tensors["trajectory"].shape == (4, sum(p.numel() for p in net.parameters()))  # the init + 3 epochs
    assert meta["index"] == 1 and meta["model"] == NET and meta["epochs"] == 3 and len(meta["train_loss"]) == 3
    assert meta["data"]["hash"] == experts_mod.data_record(train)["hash"] and meta["training"]["lr"] == 0.01
    assert meta["training"]["momentum"] == 0.0 and meta["training"]["dsa"] is True
    first = load_tensors(folder / "expert-000.safetensors", experts_mod.EXPERT_FORMAT)[0]["trajectory"]
    assert not torch.equal(first[0], tensors["trajectory"][0])  # each expert starts from its own initialisation
    assert all(not torch.equal(a, b) for a, b in zip(tensors["trajectory"], tensors["trajectory"][1:]))  # it moved


def test_a_stopped_experts_run_resumes_at_the_next_expert_to_the_same_bits(tmp_path, monkeypatch):
    """Stopped while expert 1 trains: expert 0's file is kept; a resume trains only experts 1 and 2, and a
    half-written file of expert 1 left by a kill is trained again, not trusted."""
    options = dict(data="digits", model=NET, experts=3, epochs=2, batch_size=256, quiet=True)
    api.experts(out=tmp_path / "whole", **options)
    real_train = experts_mod.train_expert
    trained = []

    def stop_at_expert_one(train, cfg, generator):
        if len(trained) == 1:
            raise KeyboardInterrupt  # Ctrl-C during expert 1
        trained.append(len(trained))
        return real_train(train, cfg, generator)

    monkeypatch.setattr(experts_mod, "train_expert", stop_at_expert_one)
    with pytest.raises(KeyboardInterrupt):
        api.experts(out=tmp_path / "cut", **options)
    partial = tmp_path / ".cut.partial"
    assert sorted(p.name for p in partial.glob("expert-*")) == ["expert-000.safetensors"]
    (partial / "expert-001.safetensors").write_bytes(b"\x20\x00\x00\x00\x00\x00\x00\x00{half")  # a torn write
    trained.clear()
    monkeypatch.setattr(experts_mod, "train_expert",
                        lambda train, cfg, generator: trained.append(1) or real_train(train, cfg, generator))
    result = api.experts(out=tmp_path / "cut", resume=True, **options)
    assert len(trained) == 2 and result.metrics["kept_from_before"] == 1 and result.metrics["trained_now"] == 2
    for i in range(3):
        name = f"expert-{i:03d}.safetensors"
        (a, ma), (b, mb) = (load_tensors(tmp_path / run / name, experts_mod.EXPERT_FORMAT) for run in ("whole", "cut"))
        assert torch.equal(a["trajectory"], b["trajectory"]), name
        assert ma["train_loss"] == mb["train_loss"] and ma["metrics"]["test_accuracy"] == mb["metrics"]["test_accuracy"]


# ---- folders from elsewhere --------------------------------------------------------------------------------------


def _forged_folder(folder, where, change):
    """A copy of ``folder`` whose expert 1 is rewritten by ``change(tensors, meta)``."""
    shutil.copytree(folder, where)
    path = where / "expert-001.safetensors"
    tensors, meta = load_tensors(path, experts_mod.EXPERT_FORMAT)
    change(tensors, meta)
    save_tensors(path, tensors, meta)
    return where


def _nan(tensors, meta):
    tensors["trajectory"][2, 5] = float("nan")


def _narrow(tensors, meta):
    tensors["trajectory"] = tensors["trajectory"][:, :-1].contiguous()


def _other_model(tensors, meta):
    meta["model"] = "convnet:width=5,depth=2"


def _renumbered(tensors, meta):
    meta["index"] = 0


FORGED = {"nan": (_nan, "NaN or infinite"), "shape": (_narrow, "expected F32 of shape"),
          "mixed": (_other_model, "disagree"), "renumbered": (_renumbered, "changed by hand")}
MTT_CLI = "mtt:experts={},model=[" + NET + "],iterations=2,syn_steps=2,expert_epochs=1,max_start=2"


@pytest.mark.parametrize("case", sorted(FORGED) + ["empty", "missing", "other data", "other model", "too short"])
def test_a_folder_of_other_or_forged_experts_ends_in_one_line_and_writes_nothing(cli, folder, tmp_path, case):
    where, spec = tmp_path / "experts", MTT_CLI
    if case in FORGED:
        _forged_folder(folder, where, FORGED[case][0])
        fragment = FORGED[case][1]
    elif case == "empty":
        where.mkdir()
        fragment = "holds no expert trajectories"
    elif case == "missing":
        fragment = "no experts folder"
    elif case == "other data":  # the same digits through another validation split: other training images
        api.experts("digits", NET, 1, 2, out=where, val_size=100, quiet=True)
        fragment = "trained on other data"
    elif case == "other model":
        where = folder
        spec = MTT_CLI.replace("width=4", "width=8")
        fragment = "mtt's model is 'convnet:width=8,depth=2'"
    else:  # the matching reads epoch max_start - 1 + expert_epochs = 4 of experts trained for 3
        where = folder
        spec = MTT_CLI.replace("max_start=2", "max_start=4")
        fragment = "were trained for 3"
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("condense", "--data", "digits", "--method", spec.format(where), "--ipc", "1", "--out", tmp_path / "out")
    assert_one_line_error(r, fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output folder, no partial one


# ---- the commands end to end -----------------------------------------------------------------------------------


def test_experts_then_condense_from_the_command_line(cli, tmp_path):
    r = cli("experts", "--data", "digits", "--model", NET, "--experts", "2", "--epochs", "2", "--batch-size", "128",
            "--out", tmp_path / "ex")
    assert r.code == 0, r.err
    assert r.json["experts"] == 2 and r.json["trained_now"] == 2 and 0 <= r.json["test_accuracy"]["mean"] <= 1
    assert sorted(p.name for p in (tmp_path / "ex").glob("expert-*")) == ["expert-000.safetensors",
                                                                         "expert-001.safetensors"]
    r = cli("condense", "--data", "digits", "--method", MTT_CLI.format(tmp_path / "ex"), "--ipc", "2",
            "--out", tmp_path / "set")
    assert r.code == 0, r.err
    synset = SyntheticSet.load(tmp_path / "set" / "synset.safetensors")
    assert synset.ipc == 2 and synset.meta["method"] == "mtt" and synset.lrs is not None
    assert read_meta(tmp_path / "set" / "synset.safetensors")["recipe"]["experts"] == str(tmp_path / "ex")
    assert len((tmp_path / "set" / "metrics.jsonl").read_text().splitlines()) == 2
    # a second experts run into the finished folder is refused, and --resume there has nothing to do
    assert_one_line_error(cli("experts", "--data", "digits", "--model", NET, "--out", tmp_path / "ex"),
                          "already exists")
    assert json.loads((tmp_path / "ex" / "metrics.json").read_text())["kept_from_before"] == 0
