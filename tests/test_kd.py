"""Correctness of the distillation losses (docs/reference.md §1): identities, limits, golden values."""


import pytest
import torch
import torch.nn.functional as F

from distillab import kd
from distillab.errors import DistillabError

S = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 1.5]])
T_ = torch.tensor([[2.0, 1.0, 0.0], [0.5, 0.5, -0.5]])
Y = torch.tensor([1, 2])


def test_golden_values():
    # computed independently with numpy (see the test's history); batchmean over 2 examples
    assert float(kd.kd_loss(S, T_, 2.0)) == pytest.approx(0.7244732966933768, rel=1e-6)
    assert float(F.cross_entropy(S, Y)) == pytest.approx(0.3653683419575393, rel=1e-6)
    assert float(kd.logit_mse(S, T_)) == pytest.approx(2.1875, rel=1e-6)
    assert float(kd.logit_mse(S, T_, center=True)) == pytest.approx(2.166666666666667, rel=1e-6)
    es = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    et = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    assert float(kd.rkd_distance_loss(es, et)) == pytest.approx(0.0729490168751577, rel=1e-5)
    assert float(kd.rkd_angle_loss(es, et)) == pytest.approx(0.014814814814814814, rel=1e-5)
    fs = torch.arange(8.0).view(1, 2, 2, 2) / 4
    ft = torch.ones(1, 2, 2, 2)
    ft[0, 0, 0, 0] = 3
    assert float(kd.attention_loss(fs, ft)) == pytest.approx(0.24896029340044432, rel=1e-5)


@pytest.mark.parametrize("t", [0.5, 1.0, 4.0, 20.0])
def test_kl_of_a_distribution_with_itself_is_zero(t):
    z = torch.randn(16, 10, generator=torch.Generator().manual_seed(0))
    assert abs(float(kd.kd_loss(z, z, t))) < 1e-6
    assert float(kd.kd_loss(z, z + 3.0, t)) == pytest.approx(0.0, abs=1e-6 * t * t)  # shift-invariant
    assert float(kd.kd_loss(z, -z, t)) > 0


def test_batchmean_not_mean_over_classes():
    z_s, z_t = torch.randn(4, 10), torch.randn(4, 10)
    by_hand = (F.softmax(z_t, 1) * (F.log_softmax(z_t, 1) - F.log_softmax(z_s, 1))).sum(1).mean()
    assert float(kd.kd_loss(z_s, z_t, 1.0)) == pytest.approx(float(by_hand), rel=1e-5)


def test_high_temperature_gradient_is_logit_matching():
    """Hinton 2.1: d KL / d z_s -> (z_s - z_t) / (C T^2) per example for zero-mean logits at high T."""
    g = torch.Generator().manual_seed(1)
    c, t = 10, 100.0
    z_t = torch.randn(1, c, generator=g)
    z_t -= z_t.mean()
    z_s = torch.randn(1, c, generator=g)
    z_s -= z_s.mean()
    z_s.requires_grad_(True)
    (kd.kd_loss(z_s, z_t, t) / t**2).backward()  # the KL alone, without the T^2 factor
    expected = (z_s.detach() - z_t) / (c * t**2)
    assert torch.allclose(z_s.grad, expected, rtol=2e-2, atol=1e-9)


def test_t_squared_keeps_gradient_scale():
    g = torch.Generator().manual_seed(2)
    z_t, z_s0 = torch.randn(32, 10, generator=g) * 3, torch.randn(32, 10, generator=g) * 3
    norms = {}
    for t in (4.0, 20.0):
        z_s = z_s0.clone().requires_grad_(True)
        kd.kd_loss(z_s, z_t, t).backward()
        norms[t] = float(z_s.grad.norm())
    # the KL alone shrinks ~T^2 (25x from T=4 to T=20); with the T^2 factor it stays within a small factor
    assert 0.2 < norms[20.0] / norms[4.0] < 1.5


def test_centred_log_probabilities_equal_logit_matching():
    g = torch.Generator().manual_seed(3)
    z_s, z_t = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g) * 4
    from_probs = kd.logit_mse(z_s, torch.log(torch.softmax(z_t, 1)), center=True)
    assert float(from_probs) == pytest.approx(float(kd.logit_mse(z_s, z_t, center=True)), rel=1e-5)
    zs0, zt0 = z_s - z_s.mean(1, keepdim=True), z_t - z_t.mean(1, keepdim=True)
    assert float(kd.logit_mse(zs0, zt0)) == pytest.approx(float(kd.logit_mse(z_s, z_t, center=True)), rel=1e-5)


def test_topk_bucket_loss_equals_kd_when_one_class_is_missing():
    g = torch.Generator().manual_seed(4)
    z_s, z_t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    p, i = torch.softmax(z_t, 1).topk(4, dim=1)  # one class left in the bucket: nothing is lost
    assert float(kd.bucket_kd_loss(z_s, i, p.log(), 1.0)) == pytest.approx(float(kd.kd_loss(z_s, z_t, 1.0)), rel=1e-4)
    p2, i2 = torch.softmax(z_t, 1).topk(2, dim=1)
    assert float(kd.bucket_kd_loss(z_s, i2, p2.log(), 1.0)) <= float(kd.kd_loss(z_s, z_t, 1.0)) + 1e-6


def _random_rotation(d, seed):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q


def test_rkd_potentials_invariant_to_translation_rotation_scale():
    e = torch.randn(6, 5, generator=torch.Generator().manual_seed(5))
    moved = (e @ _random_rotation(5, 6)) * 3.7 + torch.randn(1, 5)
    assert torch.allclose(kd.rkd_distance_potential(e), kd.rkd_distance_potential(moved), atol=1e-4)
    assert torch.allclose(kd.rkd_angle_potential(e), kd.rkd_angle_potential(moved), atol=1e-4)
    assert float(kd.rkd_distance_loss(moved, e)) < 1e-7 and float(kd.rkd_angle_loss(moved, e)) < 1e-7


def test_rkd_teacher_side_gets_no_gradient():
    s, t = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4, requires_grad=True)
    (kd.rkd_distance_loss(s, t) + kd.rkd_angle_loss(s, t)).backward()
    assert t.grad is None and s.grad is not None


def test_parse_loss_terms():
    term = kd.parse_loss("kd:T=4,w=0.9")
    assert (term.name, term.w, term.T) == ("kd", 0.9, 4.0)
    rkd = kd.parse_loss("rkd:distance=25,angle=50")
    assert (rkd.distance, rkd.angle, rkd.student) == (25.0, 50.0, "penultimate")
    assert kd.parse_loss("logit-mse:center=1").center
    for bad in ["kd:T=0", "kd:T=-1", "nope", "kd:tau=3", "ce:w=-1"]:
        with pytest.raises(DistillabError):
            kd.parse_loss(bad)


def test_hinton_shorthand():
    terms = kd.hinton_losses(20.0, 0.9)
    assert [(t.name, t.w) for t in terms] == [("kd", 0.9), ("ce", pytest.approx(0.1))]
    with pytest.raises(DistillabError, match="temperature"):
        kd.hinton_losses(0.0, 0.5)
    with pytest.raises(DistillabError, match="alpha"):
        kd.hinton_losses(2.0, 1.5)


def test_model_teacher_is_frozen_and_in_eval_mode():
    from distillab.models import build_model

    model = build_model("mlp:hidden=16,dropout=0.5", (1, 8, 8), 10)
    teacher = kd.ModelTeacher(model)
    model.train()  # someone flips it back: the teacher still answers in eval mode
    x = torch.randn(4, 1, 8, 8)
    a, b = teacher(x).logits, teacher(x).logits
    assert torch.equal(a, b) and not a.requires_grad
    assert all(not p.requires_grad for p in model.parameters())


def test_feature_taps_by_module_path_and_penultimate():
    from distillab.models import build_model

    model = build_model("mlp:hidden=16-8", (1, 8, 8), 10)
    taps = kd.FeatureTaps(model, ["penultimate", "features.1"], "student")
    model(torch.randn(3, 1, 8, 8))
    assert taps.features["penultimate"].shape == (3, 8) and taps.features["features.1"].shape == (3, 16)
    with pytest.raises(DistillabError, match="no module"):
        kd.FeatureTaps(model, ["does.not.exist"], "student")


def test_label_smoothing_warnings():
    assert kd.label_smoothing_warnings({"recipe": {"label_smoothing": 0.1}}, [], 0.0)
    assert kd.label_smoothing_warnings({}, [], 0.1)
    assert kd.label_smoothing_warnings({"recipe": {"label_smoothing": 0.0}}, [], 0.0) == []
