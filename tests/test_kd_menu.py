"""The KD menu's logit terms (issue 31): dkd, dist, lskd. Each equals its authors' code on fixed logits (values and
gradients, tests/fixtures/kd_menu/, made as its README says), keeps the identities of its paper, and meets the
contract (tests/test_contract.py runs check_loss_term over every registered term)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from distillab import api
from distillab.errors import DistillabError
from distillab.kd.functional import kd_loss
from distillab.kd.loss import LossInputs, parse_loss
from distillab.kd.losses.dist import one_minus_pearson
from distillab.kd.losses.dkd import dkd_parts
from distillab.kd.losses.lskd import standardise
from distillab.kd.teachers import TeacherBatch
from distillab.training import Schedule

FIXTURES = Path(__file__).parent / "fixtures" / "kd_menu"


def fixture(name):
    with safe_open(str(FIXTURES / f"{name}.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["made"])


def spec(name, options):
    return name + ":" + ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in options.items())


def value_and_grad(term, student, teacher, labels=None, epoch=1, kind="logits"):
    s = student.clone().requires_grad_(True)
    batch = LossInputs(s, labels, TeacherBatch(logits=teacher, kind=kind), {}, Schedule(epoch, max(epoch, 1)))
    (value,) = term(batch).values()
    value.backward()
    return value.detach(), s.grad


@pytest.mark.parametrize("name", ["dkd", "dist", "lskd"])
def test_each_term_equals_its_reference_implementation(name):
    tensors, cases = fixture(name)
    assert len(cases) >= 3
    for case in cases:
        i = case["case"]
        term = parse_loss(spec(name, case["options"]))
        value, grad = value_and_grad(term, tensors["student"], tensors["teacher"], tensors["labels"],
                                     epoch=case["epoch"] or 1)
        torch.testing.assert_close(value, tensors[f"value_{i}"], rtol=1e-5, atol=1e-5, msg=f"{name} case {case}")
        torch.testing.assert_close(grad, tensors[f"grad_{i}"], rtol=1e-5, atol=1e-5, msg=f"{name} case {case}")


def logits(seed, n=32, c=10, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale, torch.randn(n, c, generator=g) * scale, \
        torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_dkd_decomposes_kd_as_the_paper_says(T):
    """Zhao et al. 2022's reformulation of KD: KD = TCKD + (1 - p_t^T) NCKD, p_t^T the teacher's probability of the
    target at T; per example (the weight differs between examples), so one example at a time."""
    s, t, y = logits(0)
    for i in range(len(y)):
        tckd, nckd = dkd_parts(s[i:i + 1], t[i:i + 1], y[i:i + 1], T)
        p_t = torch.softmax(t[i] / T, 0)[y[i]]
        torch.testing.assert_close(kd_loss(s[i:i + 1], t[i:i + 1], T), tckd + (1 - p_t) * nckd, rtol=1e-5, atol=1e-6)


def test_dkd_warms_up_by_epoch_and_refuses_a_top_k_teacher():
    s, t, y = logits(1)
    term = parse_loss("dkd:warmup=4")
    full, _ = value_and_grad(term, s, t, y, epoch=8)
    for epoch, ramp in [(1, 0.25), (2, 0.5), (4, 1.0), (9, 1.0)]:
        torch.testing.assert_close(value_and_grad(term, s, t, y, epoch=epoch)[0], ramp * full)
    torch.testing.assert_close(value_and_grad(parse_loss("dkd:warmup=0"), s, t, y, epoch=1)[0], full)
    with pytest.raises(DistillabError, match="top-k"):
        term.check_teacher(TeacherBatch(kind="topk"))
    with pytest.raises(DistillabError, match="labels"):
        value_and_grad(term, s, t, None)


def test_dkd_trains_with_its_warm_up_in_a_run(digits_teacher, tmp_path):
    api.distill(data="digits", teacher=digits_teacher, student="mlp:hidden=8", losses=["ce", "dkd:warmup=2"],
                epochs=2, batch_size=512, precision="fp32", out=tmp_path / "d", quiet=True)
    logged = [json.loads(line) for line in (tmp_path / "d/metrics.jsonl").read_text().splitlines()]
    values = [r["train_dkd"] for r in logged if "train_dkd" in r]
    assert len(values) == 2 and all(v > 0 for v in values)


def test_dist_is_zero_for_the_teacher_itself_and_reads_only_correlations():
    s, t, _ = logits(2)
    term = parse_loss("dist:T=2")
    assert float(value_and_grad(term, t, t)[0]) < 1e-5
    # Pearson is unchanged by a positive scale and a shift of one side's probabilities (per row, and per column)
    y_s, y_t = torch.softmax(s, 1), torch.softmax(t, 1)
    torch.testing.assert_close(one_minus_pearson(y_s, 3 * y_t + 0.2), one_minus_pearson(y_s, y_t), atol=1e-6, rtol=0)
    torch.testing.assert_close(one_minus_pearson(y_s.T, 0.5 * y_t.T - 1), one_minus_pearson(y_s.T, y_t.T),
                               atol=1e-6, rtol=0)
    # logits shifted per example give the same softmax: a log-probability teacher is the same teacher
    torch.testing.assert_close(value_and_grad(term, s, torch.log_softmax(t / 1, 1))[0], value_and_grad(term, s, t)[0])
    with pytest.raises(DistillabError, match="top-k"):
        term.check_teacher(TeacherBatch(kind="topk"))


def test_lskd_is_kd_on_standardised_logits_and_ignores_offset_and_scale():
    s, t, _ = logits(3)
    term = parse_loss("lskd:T=2,w=3")
    value = value_and_grad(term, s, t)[0]
    torch.testing.assert_close(value, 3 * kd_loss(standardise(s), standardise(t), 2.0))
    z = standardise(s)
    torch.testing.assert_close(z.mean(1), torch.zeros(len(s)), atol=1e-6, rtol=0)
    torch.testing.assert_close(z.std(1), torch.ones(len(s)), atol=1e-5, rtol=0)
    for s2, t2 in [(s + 5, t), (s, t - 2), (4 * s, t), (s, 0.3 * t), (2 * s - 1, 7 * t + 3)]:
        torch.testing.assert_close(value_and_grad(term, s2, t2)[0], value, rtol=1e-5, atol=1e-5)
    assert float(value_and_grad(term, t, t)[0]) < 1e-6
    # DKD with standardise=1 is DKD on standardised logits
    _, _, y = logits(3)
    torch.testing.assert_close(value_and_grad(parse_loss("dkd:standardise=1,warmup=0"), s, t, y)[0],
                               value_and_grad(parse_loss("dkd:warmup=0"), standardise(s), standardise(t), y)[0])
    with pytest.raises(DistillabError, match="top-k"):
        term.check_teacher(TeacherBatch(kind="topk"))
