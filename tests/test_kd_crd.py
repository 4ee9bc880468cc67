"""The KD menu's contrastive term (issue 31): crd. It equals mdistiller's code over two training steps on fixed
features, embedding weights, memory banks and contrast indices (the value, its gradients wrt the student's features
and both embeddings, the memory banks and normalisation constants after each step; tests/fixtures/kd_menu/, made as
its README says), draws its negatives from its own stream, counts a step once in its memory, trains through
distillab.distill, resumes to the same bytes, and meets the contract (tests/test_contract.py runs check_loss_term
over every registered term)."""

import json

import numpy as np
import pytest
import torch

from distillab import api, distill
from distillab.errors import DistillabError
from distillab.kd import Distillation, ModelTeacher
from distillab.kd.loss import LossInputs, parse_loss
from distillab.kd.teachers import TeacherBatch
from distillab.training import Schedule

from test_kd_features import fixture  # the feature terms' fixture reader, shared
from test_resume import same_run, stopped_and_resumed

TOL = dict(rtol=1e-5, atol=1e-5)


def batch(student, teacher, examples, idx=None, step=0):
    logits = torch.zeros(len(student), 3)
    return LossInputs(logits, None, TeacherBatch(logits=logits, features={"penultimate": teacher}),
                      {"penultimate": student}, Schedule(1, 1, step, 10), idx=idx, examples=examples)


def built(spec, student, teacher, examples, seed=0):
    term = parse_loss(spec)
    (head,) = term.build(batch(student, teacher, examples), torch.Generator().manual_seed(seed))
    return term, head


def test_crd_equals_mdistiller_over_two_steps():
    tensors, cases = fixture("crd")
    assert len(cases) >= 2 and any(not case["options"] for case in cases)  # one case at the defaults
    for case in cases:
        i, n = case["case"], case["examples"]
        options = ",".join(f"{k}={v}" for k, v in case["options"].items())
        term, head = built(f"crd:{options}" if options else "crd", tensors["s_0"], tensors["t_0"], n)
        k = min(term.negatives, n - 1)  # the defaults' 16384 negatives, capped at the set's size
        assert tensors[f"contrast_{i}_0"].shape[1] == 1 + k
        with torch.no_grad():  # the fixture's starting weights and memory
            for side, tag in ((head.student, "s"), (head.teacher, "t")):
                side.weight.copy_(tensors[f"w{tag}_{i}"])
                side.bias.copy_(tensors[f"b{tag}_{i}"])
            term.memory.student.copy_(tensors[f"mem_s_{i}"])
            term.memory.teacher.copy_(tensors[f"mem_t_{i}"])
        for step in range(case["steps"]):  # the second step reads the memory (and Z) the first one left
            key, msg = f"{i}_{step}", f"crd case {case}, step {step}"
            s = tensors[f"s_{step}"].clone().requires_grad_(True)
            head.zero_grad(set_to_none=True)
            value = term.contrast(s, tensors[f"t_{step}"], tensors[f"contrast_{key}"])
            value.backward()
            torch.testing.assert_close(value.detach(), tensors[f"value_{key}"], **TOL, msg=msg)
            torch.testing.assert_close(s.grad, tensors[f"grad_{key}"], **TOL, msg=msg)
            for side, tag in ((head.student, "s"), (head.teacher, "t")):
                torch.testing.assert_close(side.weight.grad, tensors[f"grad_w{tag}_{key}"], **TOL, msg=msg)
                torch.testing.assert_close(side.bias.grad, tensors[f"grad_b{tag}_{key}"], **TOL, msg=msg)
            torch.testing.assert_close(term.memory.student, tensors[f"mem_s_{key}"], **TOL, msg=msg)
            torch.testing.assert_close(term.memory.teacher, tensors[f"mem_t_{key}"], **TOL, msg=msg)
            torch.testing.assert_close(term.memory.z, tensors[f"z_{key}"], **TOL, msg=msg)


def features(seed, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 12, generator=g), torch.randn(n, 20, generator=g)


def test_crd_builds_its_parts_and_memory_from_the_generator():
    s, t = features(0)
    term, head = built("crd:feat_dim=16", s, t, examples=50, seed=3)
    assert [tuple(p.shape) for p in head.parameters()] == [(16, 12), (16,), (16, 20), (16,)]
    memory = term.memory.state_dict()
    assert {k: tuple(v.shape) for k, v in memory.items()} == {"student": (50, 16), "teacher": (50, 16), "z": (2,)}
    bound = 3 ** 0.5 / 4  # 1 / sqrt(feat_dim / 3)
    assert float(term.memory.student.abs().max()) <= bound and torch.equal(term.memory.z, torch.full((2,), -1.0))
    again, _ = built("crd:feat_dim=16", s, t, examples=50, seed=3)
    other, _ = built("crd:feat_dim=16", s, t, examples=50, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(memory.values(), again.memory.state_dict().values()))
    assert not torch.equal(term.memory.student, other.memory.student)
    assert set(term.generators()) == {"negatives"} and set(term.state()) == {"memory"}
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    objective = Distillation(ModelTeacher(teacher, []), [term], examples=50)
    assert objective.live_state() == {"0:negatives": term._draws, "0:memory": term.memory}  # checkpointed


def test_crd_draws_distinct_negatives_other_than_the_row_itself():
    s, t = features(1)
    idx = torch.tensor([0, 5, 9, 13, 20, 33, 41, 49])
    term, _ = built("crd:negatives=30", s, t, examples=50, seed=3)
    drawn = term.draw_negatives(idx)
    assert drawn.shape == (8, 30) and int(drawn.min()) >= 0 and int(drawn.max()) < 50
    for row, i in zip(drawn.tolist(), idx.tolist()):
        assert len(set(row)) == 30 and i not in row
    again, _ = built("crd:negatives=30", s, t, examples=50, seed=3)
    assert torch.equal(again.draw_negatives(idx), drawn)  # from the term's own stream, seeded by build's generator
    assert not torch.equal(term.draw_negatives(idx), drawn)  # and anew each step
    capped, _ = built("crd", s, t, examples=50)  # 16384 negatives: every other example
    every = capped.draw_negatives(idx)
    assert every.shape == (8, 49)
    assert all(sorted(row) == [j for j in range(50) if j != i] for row, i in zip(every.tolist(), idx.tolist()))


def test_crd_counts_a_step_once_in_its_memory():
    """A replay of the same step and rows (a probe, the contract) gives the same value from the same memory; the
    next step sees the moved memory, in which every row stays of unit length."""
    s, t = features(2)
    idx = torch.arange(8) * 3
    term, _ = built("crd:feat_dim=8,negatives=10", s, t, examples=40)
    start = {k: v.clone() for k, v in term.memory.state_dict().items()}
    streams = term._draws.get_state()
    first = term(batch(s, t, 40, idx, step=4))["crd"]
    after = {k: v.clone() for k, v in term.memory.state_dict().items()}
    assert not torch.equal(after["student"], start["student"]) and bool((after["z"] > 0).all())
    moved = after["student"][idx]
    torch.testing.assert_close(moved.norm(dim=1), torch.ones(8))
    assert torch.equal(after["teacher"][~torch.isin(torch.arange(40), idx)],
                       start["teacher"][~torch.isin(torch.arange(40), idx)])  # only the batch's rows move
    term._draws.set_state(streams)
    replay = term(batch(s, t, 40, idx, step=4))["crd"]
    assert torch.equal(first.detach(), replay.detach())
    assert all(torch.equal(after[k], v) for k, v in term.memory.state_dict().items())
    term._draws.set_state(streams)
    later = term(batch(s, t, 40, idx, step=5))["crd"]  # the next step: the memory has moved
    assert not torch.equal(first.detach(), later.detach())


def test_crd_weight_is_a_factor_and_gradients_reach_the_student():
    s, t = features(3)
    idx = torch.arange(8)
    values = []
    for w in (1, 2):
        term, _ = built(f"crd:w={w},feat_dim=8,negatives=5", s, t, examples=30)
        x = s.clone().requires_grad_(True)
        (value,) = term(batch(x, t, 30, idx)).values()
        value.backward()
        assert float(x.grad.abs().sum()) > 0
        values.append(value.detach())
    torch.testing.assert_close(values[1], 2 * values[0])


def test_crd_refuses_bad_options_and_missing_positions():
    for spec, message in (("crd:negatives=0", "negatives must be >= 1"), ("crd:nce_t=0", "nce_t must be > 0"),
                          ("crd:momentum=1", r"momentum must be in \[0, 1\)"), ("crd:feat_dim=0", "feat_dim")):
        with pytest.raises(DistillabError, match=message) as e:
            parse_loss(spec)
        assert "\n" not in str(e.value)
    s, t = features(4)
    with pytest.raises(DistillabError, match="at least 2"):
        parse_loss("crd").build(batch(s, t, None), torch.Generator())
    term, _ = built("crd", s, t, examples=20)
    with pytest.raises(DistillabError, match=r"position in the training set \(idx\)"):
        term(batch(s, t, 20, idx=None))
    with pytest.raises(DistillabError, match="attach"):
        parse_loss("crd")(batch(s, t, 20, torch.arange(8)))


@pytest.fixture(scope="module")
def small_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("crd_teacher") / "t"
    api.train(data="digits", model="mlp:hidden=16", epochs=1, batch_size=64, out=out, quiet=True)
    return str(out / "model.safetensors")


def test_crd_distils_on_digits(tmp_path, small_teacher):
    r = distill(data="digits", teacher=small_teacher, student="mlp:hidden=16", losses=["ce", "crd"], epochs=1,
                batch_size=64, out=tmp_path / "d", quiet=True)
    logged = [json.loads(line) for line in (tmp_path / "d/metrics.jsonl").read_text().splitlines()]
    values = [row["train_crd"] for row in logged if "train_crd" in row]
    assert len(values) == 1 and np.isfinite(values[0]) and values[0] > 0
    assert 0 <= r.metrics["test_accuracy"] <= 1


def test_crd_resumes_to_the_same_bytes(tmp_path, stop_after, small_teacher):
    kwargs = dict(data="digits", teacher=small_teacher, student="mlp:hidden=16", losses=["ce", "crd:negatives=64"],
                  epochs=2, batch_size=64, cache=False)
    api.distill(out=tmp_path / "reference", quiet=True, **kwargs)
    stopped_and_resumed(api.distill, stop_after, 7, tmp_path / "resumed", **kwargs)  # mid-epoch 1
    same_run(tmp_path / "reference", tmp_path / "resumed")


def test_a_precision_probe_leaves_the_memory_as_it_was():
    """The memory is objective state (``state()``): fit's probes put it back with the streams."""
    from distillab import seeds
    from distillab.models import build_model
    from distillab.training import TrainConfig, choose_precision

    g = seeds.generator(0)
    student, teacher = (build_model("mlp:hidden=16", (1, 8, 8), 3, g) for _ in range(2))
    x, y = torch.randn(30, 1, 8, 8, generator=g), torch.arange(30) % 3
    term = parse_loss("crd:feat_dim=8,negatives=5")
    objective = Distillation(ModelTeacher(teacher, term.teacher_taps()), [term], examples=30)
    extra = objective.attach(student, x[:8], torch.arange(8))
    before, streams = {k: v.clone() for k, v in term.memory.state_dict().items()}, term._draws.get_state()
    choose_precision(student, objective, x, y, TrainConfig(epochs=1, batch_size=8, precision="auto"), extra)
    assert all(torch.equal(before[k], v) for k, v in term.memory.state_dict().items())
    assert torch.equal(streams, term._draws.get_state())
