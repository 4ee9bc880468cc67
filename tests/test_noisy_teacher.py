"""The noisy teacher (Sau & Balasubramanian 2016), ``kd:noise=SIGMA``: the teacher's logits become z * (1 + xi),
xi ~ N(0, sigma) drawn afresh per example, class and batch from the term's own generator (seeded from the run's,
checkpointed with it); log-probabilities are centred first; a top-k teacher is refused."""

import pytest
import torch

from distillab import api, seeds
from distillab.errors import DistillabError
from distillab.files import load_tensors
from distillab.kd import Distillation, LossInputs, TableTeacher, TeacherBatch, kd_loss, parse_loss
from distillab.models import build_model
from distillab.training import TrainConfig, choose_precision


def _batch(kind="logits", n=8, k=10, seed=0) -> LossInputs:
    g = torch.Generator().manual_seed(seed)
    student, teacher = torch.randn(n, k, generator=g), 3 * torch.randn(n, k, generator=g)
    if kind == "logprobs":
        teacher = torch.log_softmax(teacher, 1)
    return LossInputs(student, None, TeacherBatch(logits=teacher, kind=kind), {})


def _built(spec: str, batch: LossInputs, seed: int = 0):
    term = parse_loss(spec)
    term.build(batch, seeds.generator(seed, "connectors"))
    return term


def test_zero_noise_is_plain_kd_and_draws_nothing():
    batch = _batch()
    g = seeds.generator(0, "connectors")
    before = g.get_state()
    term = parse_loss("kd:T=4,noise=0")
    term.build(batch, g)
    assert torch.equal(g.get_state(), before) and term.generators() == {}  # other terms' connectors unchanged
    assert torch.equal(term(batch)["kd_T4"], kd_loss(batch.student_logits, batch.teacher.logits, 4.0))
    assert torch.equal(term(batch)["kd_T4"], parse_loss("kd:T=4")(batch)["kd_T4"])


def test_noise_changes_the_value_with_a_fresh_draw_every_batch():
    batch = _batch()
    plain = float(parse_loss("kd:T=1")(batch)["kd_T1"])
    term = _built("kd:T=1,noise=0.1", batch)
    values = [float(term(batch)["kd_T1"]) for _ in range(3)]
    assert len({plain, *values}) == 4  # noisy differs from plain, and each batch from the one before


def test_noise_is_relative_gaussian_of_the_given_scale_per_element_and_batch():
    """z'/z - 1 over many draws: mean 0, std sigma for every element, uncorrelated between classes."""
    batch = _batch(n=8, k=10, seed=1)
    z = batch.teacher.logits
    batch.teacher.logits = torch.where(z.abs() < 0.5, torch.full_like(z, 1.0), z)  # ratios of well-scaled values
    for sigma in (0.05, 0.2):
        term = _built(f"kd:T=1,noise={sigma}", batch)
        xi = torch.stack([term.targets(batch.teacher) / batch.teacher.logits - 1 for _ in range(3000)])
        assert abs(float(xi.mean())) < 0.02 * sigma
        per_element = xi.std(0)  # across batches: a draw per batch, for every example and class
        assert float(per_element.min()) > 0.9 * sigma and float(per_element.max()) < 1.1 * sigma
        within_row = xi[:, 0, :].T.corrcoef()  # classes of one example: independent draws
        off_diagonal = within_row[~torch.eye(10, dtype=torch.bool)]
        assert float(off_diagonal.abs().max()) < 0.1


@pytest.mark.parametrize("kind", ["logits", "logprobs"])
def test_the_formula_and_the_centring_of_log_probabilities(kind):
    batch = _batch(kind)
    term = _built("kd:T=2,noise=0.3", batch)
    replay = torch.Generator().set_state(term.generators()["noise"].get_state())
    z = batch.teacher.logits
    if kind == "logprobs":  # equal to the logits up to a per-example constant: centred before the relative noise
        z = z - z.mean(1, keepdim=True)
    expected = z * (1 + 0.3 * torch.randn(z.shape, generator=replay))
    assert torch.allclose(term.targets(batch.teacher), expected, rtol=1e-6, atol=1e-6)


def test_the_stream_comes_from_the_run_seed():
    batch = _batch()
    first, again, other = (_built("kd:noise=0.1", batch, seed).targets(batch.teacher) for seed in (0, 0, 1))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(DistillabError, match="noise must be >= 0"):
        parse_loss("kd:noise=-0.1")
    topk = TableTeacher(torch.arange(4), topk_index=torch.zeros(4, 2, dtype=torch.long),
                        topk_logprob=torch.zeros(4, 2), kind="topk")
    with pytest.raises(DistillabError, match="top-k") as e:
        Distillation(topk, [parse_loss("kd:noise=0.1")])
    assert "\n" not in str(e.value)
    Distillation(topk, [parse_loss("kd:noise=0")])  # without noise the top-k bucket loss is fine
    with pytest.raises(DistillabError, match="attach"):
        parse_loss("kd:noise=0.1")(_batch())  # never built: no stream to draw from


def test_the_precision_probe_leaves_the_stream_alone_and_draws_alike_in_both_precisions(monkeypatch):
    from distillab.kd.losses.kd import KD

    g = seeds.generator(0)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.arange(16) % 10
    net = build_model("mlp:hidden=8", (1, 8, 8), 10, g)
    teacher = TableTeacher(torch.arange(16), logits=torch.randn(16, 10, generator=g))
    term = parse_loss("kd:noise=0.2")
    objective = Distillation(teacher, [term])
    objective.attach(net, x[:4], torch.arange(4), seeds.generator(0, "connectors"))
    before = term.generators()["noise"].get_state()
    targets = []
    original = KD.targets
    monkeypatch.setattr(KD, "targets", lambda self, t: targets.append(original(self, t)) or targets[-1])
    choose_precision(net, objective, x, y, TrainConfig(batch_size=16))
    assert torch.equal(term.generators()["noise"].get_state(), before)
    steps = len(targets) // 2
    assert steps >= 2 and torch.equal(targets[0], targets[steps])  # fp32's first draw is bf16's first draw


def _weights(result):
    tensors, _ = load_tensors(result.out / "model.safetensors", "distillab.model")
    return tensors


def test_same_seed_same_student_other_seed_or_no_noise_another_and_the_global_rng_untouched(tmp_path,
                                                                                            digits_teacher):
    spec = dict(data="digits", teacher=str(digits_teacher), student="mlp:hidden=16", epochs=2, batch_size=64,
                quiet=True)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = api.distill(out=tmp_path / "a", losses=["kd:T=1,noise=0.2"], **spec)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(456)
    b = api.distill(out=tmp_path / "b", losses=["kd:T=1,noise=0.2"], **spec)
    c = api.distill(out=tmp_path / "c", losses=["kd:T=1,noise=0.2"], seed=1, **spec)
    d = api.distill(out=tmp_path / "d", losses=["kd:T=1"], **spec)
    wa, wb, wc, wd = map(_weights, (a, b, c, d))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert not all(torch.equal(wa[k], wd[k]) for k in wa)
