"""The KD menu's ofd and kdsvd terms. Each equals mdistiller's code on fixed inputs (tests/fixtures/kd_menu/, made as
its README says): ofd in its margins, its value and its gradients wrt the student's map and every connector weight;
kdsvd in its value and its gradients wrt every student map. Both keep the identities of their papers, refuse bad
options and unusable taps in one line, train between two ConvNets on digits, and meet the contract
(tests/test_contract.py runs check_loss_term over every registered term; the norm= path of ofd is run here)."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from distillab import api, distill, train
from distillab.errors import DistillabError
from distillab.kd.loss import LossInputs, parse_loss
from distillab.kd.losses.ofd import OFD, gaussian_margin
from distillab.kd.teachers import ModelTeacher, TableTeacher, TeacherBatch
from distillab.testing import check_loss_term

from test_kd_features import batch, fixture  # the feature terms' fixture reader and one-tap batch, shared
from test_resume import same_run, stopped_and_resumed


def one_line(excinfo):
    assert "\n" not in str(excinfo.value), str(excinfo.value)


# ------------------------------------------------------------------------------------------------------------- ofd


def built_ofd(spec, student, teacher, seed=0, teacher_model=None):
    term = parse_loss(spec)
    if teacher_model is not None:
        term.check_teacher(ModelTeacher(teacher_model))
    (head,) = term.build(batch(student, teacher), torch.Generator().manual_seed(seed))
    return term, head


def test_ofd_margins_equal_mdistillers_from_the_teachers_batch_norm():
    tensors, _ = fixture("ofd")
    torch.testing.assert_close(gaussian_margin(tensors["bn_bias"], tensors["bn_weight"]), tensors["margin"],
                               rtol=1e-6, atol=1e-6)
    bn = nn.BatchNorm2d(32)  # norm=PATH reads the teacher model's layer, as mdistiller's get_bn_before_relu
    with torch.no_grad():
        bn.weight.copy_(tensors["bn_weight"])
        bn.bias.copy_(tensors["bn_bias"])
    _, head = built_ofd("ofd:norm=0", tensors["s_map"], tensors["t_map"], teacher_model=nn.Sequential(bn))
    torch.testing.assert_close(head.margin, tensors["margin"], rtol=1e-6, atol=1e-6)
    assert float(tensors["margin"][0]) == pytest.approx(-3 * float(tensors["bn_weight"][0].abs()))  # the thin tail


def test_ofd_equals_mdistiller_in_value_and_every_gradient():
    tensors, cases = fixture("ofd")
    assert len(cases) >= 3 and any(not case["options"] for case in cases)  # one case at the defaults
    for case in cases:
        i = case["case"]
        options = ",".join(f"{k}={v}" for k, v in case["options"].items())
        s, t = tensors[case["student"]].clone().requires_grad_(True), tensors[case["teacher"]]
        term, head = built_ofd(f"ofd:{options}" if options else "ofd", s.detach(), t)
        conv, bn = head.connector
        with torch.no_grad():
            head.margin.copy_(tensors["margin"])
            conv.weight.copy_(tensors[case["conv"]])
            bn.weight.copy_(tensors["cbn_weight"])
            bn.bias.copy_(tensors["cbn_bias"])
        (value,) = term(batch(s, t)).values()
        value.backward()
        msg = f"ofd case {case}"
        torch.testing.assert_close(value.detach(), tensors[f"value_{i}"], rtol=1e-5, atol=1e-5, msg=msg)
        torch.testing.assert_close(s.grad, tensors[f"grad_{i}"], rtol=1e-5, atol=1e-5, msg=msg)
        torch.testing.assert_close(conv.weight.grad, tensors[f"grad_conv_{i}"], rtol=1e-5, atol=1e-5, msg=msg)
        torch.testing.assert_close(bn.weight.grad, tensors[f"grad_cbn_weight_{i}"], rtol=1e-5, atol=1e-5, msg=msg)
        torch.testing.assert_close(bn.bias.grad, tensors[f"grad_cbn_bias_{i}"], rtol=1e-5, atol=1e-5, msg=msg)


def test_ofd_margin_is_the_mean_negative_response_and_can_be_estimated():
    g = torch.Generator().manual_seed(0)
    mean, std = torch.tensor([0.5, -1.0, 0.0, 2.0]), torch.tensor([1.0, 2.0, 0.3, 0.5])
    x = torch.randn(200_000, 4, generator=g) * std + mean
    negative_mean = torch.stack([x[:, c][x[:, c] < 0].mean() for c in range(4)])
    margin = gaussian_margin(mean, std)
    torch.testing.assert_close(margin[:3], negative_mean[:3], rtol=0, atol=0.01)  # E[x | x < 0]
    assert float(margin[3]) == pytest.approx(-3 * 0.5)  # P(x < 0) = Phi(-4) <= 0.001: -3 sigma
    assert gaussian_margin(torch.tensor([-0.7, 0.7]), torch.zeros(2)).tolist() == pytest.approx([-0.7, 0.0])
    maps = x.T.reshape(1, 4, 400, 500)  # without norm=: each channel's mean and std of the sample batch
    _, head = built_ofd("ofd", torch.randn(1, 3, 400, 500, generator=g), maps)
    torch.testing.assert_close(head.margin, gaussian_margin(maps.mean((0, 2, 3)), maps.std((0, 2, 3))),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(head.margin, margin, rtol=0, atol=0.02)


def test_ofd_skips_positions_where_both_relus_give_zero():
    """With the connector the identity, a student at the target r = max(t, m) costs nothing, so does one below it
    where t <= 0; above it, (s - r)^2 counts, averaged over the batch."""
    g = torch.Generator().manual_seed(1)
    t = torch.randn(4, 3, 5, 5, generator=g)
    term, head = built_ofd("ofd:w=1", torch.randn(4, 3, 5, 5, generator=g), t)
    margin = head.margin.view(1, -1, 1, 1)
    head.connector = nn.Identity()
    r = torch.maximum(t, margin)
    value = lambda s: float(term(batch(s, t))["ofd"])  # noqa: E731
    assert value(r) == 0
    assert value(torch.where(t <= 0, r - 5, r)) == 0  # below the target where the teacher's ReLU is off
    above = torch.where(t <= 0, r + 0.5, r)
    assert value(above) == pytest.approx(float(0.25 * (t <= 0).sum() / 4), rel=1e-5)
    below = torch.where(t > 0, r - 0.5, r)  # below a positive teacher response: counted
    assert value(below) == pytest.approx(float(0.25 * (t > 0).sum() / 4), rel=1e-5)
    tripled = parse_loss("ofd:w=3")  # the weight is a factor
    tripled.head = head
    assert float(tripled(batch(below, t))["ofd"]) == pytest.approx(3 * value(below), rel=1e-6)


def test_ofd_connector_comes_from_the_generator():
    s, t = torch.randn(8, 4, 3, 3), torch.randn(8, 6, 3, 3)
    _, head = built_ofd("ofd", s, t, seed=3)
    conv, bn = head.connector
    assert tuple(conv.weight.shape) == (6, 4, 1, 1) and conv.bias is None
    assert torch.equal(bn.weight, torch.ones(6)) and torch.equal(bn.bias, torch.zeros(6))
    assert [n for n, _ in head.named_buffers()] == ["margin"]  # the batch norm keeps no running statistics
    _, again = built_ofd("ofd", s, t, seed=3)
    _, other = built_ofd("ofd", s, t, seed=4)
    assert torch.equal(conv.weight, again.connector[0].weight)
    assert not torch.equal(conv.weight, other.connector[0].weight)
    _, wide = built_ofd("ofd:kernel_size=3", s, t, seed=3)
    assert tuple(wide.connector[0].weight.shape) == (6, 4, 3, 3)
    assert float(wide.connector[0].weight.detach().std()) == pytest.approx(math.sqrt(2 / (9 * 6)), rel=0.3)


def test_ofd_refuses_bad_options_and_unusable_taps():
    s, t = torch.randn(8, 4, 3, 3), torch.randn(8, 6, 3, 3)
    g = torch.Generator()
    for spec, match in [("ofd:kernel_size=2", "kernel_size must be an odd number"), ("ofd:w=-1", "w must be >= 0")]:
        with pytest.raises(DistillabError, match=match) as e:
            parse_loss(spec)
        one_line(e)
    cases = [
        (lambda: parse_loss("ofd").build(batch(torch.randn(8, 24), t), g), r"\(N, C, H, W\).*\(24,\)"),
        (lambda: parse_loss("ofd").build(batch(s, t.relu()), g), "no negative values.*normalisation layer"),
        (lambda: parse_loss("ofd:norm=0").check_teacher(TableTeacher(torch.arange(8), gives_features=True)),
         "cache or a table of outputs"),
        (lambda: parse_loss("ofd:norm=nowhere").check_teacher(ModelTeacher(nn.Sequential(nn.BatchNorm2d(6)))),
         "no module 'nowhere'"),
        (lambda: parse_loss("ofd:norm=0").check_teacher(ModelTeacher(nn.Sequential(nn.Conv2d(6, 6, 1)))),
         "Conv2d, not a batch or instance norm"),
        (lambda: parse_loss("ofd:norm=0").check_teacher(ModelTeacher(nn.Sequential(nn.GroupNorm(1, 6)))),
         "GroupNorm, not a batch or instance norm"),
        (lambda: built_ofd("ofd:norm=0", s, t, teacher_model=nn.Sequential(nn.BatchNorm2d(5))), "has 5 channels"),
    ]
    for call, match in cases:
        with pytest.raises(DistillabError, match=match) as e:
            call()
        one_line(e)


def test_ofd_meets_the_contract_with_margins_from_the_teachers_norm():
    check_loss_term(OFD, {"student": "features.1", "teacher": "features.1", "norm": "features.1"})
    check_loss_term(OFD, {"student": "features.0", "teacher": "features.1", "kernel_size": 3})


# ----------------------------------------------------------------------------------------------------------- kdsvd


def multi(students: dict, teachers: dict):
    logits = torch.zeros(len(next(iter(students.values()))), 3)
    return LossInputs(logits, None, TeacherBatch(logits=logits, features=teachers), students)


def kdsvd_case(tensors, case, scale=1.0):
    layers = case["layers"]
    options = [f"student={'+'.join(f's_{n}' for n in layers)}", f"teacher={'+'.join(f't_{n}' for n in layers)}"]
    term = parse_loss("kdsvd:" + ",".join(options + [f"{k}={v}" for k, v in case["options"].items()]))
    students = {f"s_{n}": (scale * tensors[f"s_{n}"]).requires_grad_(True) for n in layers}
    b = multi(students, {f"t_{n}": tensors[f"t_{n}"] for n in layers})
    assert term.build(b, torch.Generator()) == []
    (value,) = term(b).values()
    return value, students


def test_kdsvd_equals_mdistiller_in_value_and_every_gradient():
    tensors, cases = fixture("kdsvd")
    assert len(cases) >= 3 and any(not case["options"] for case in cases)  # one case at the defaults
    for case in cases:
        i = case["case"]
        value, students = kdsvd_case(tensors, case)
        value.backward()
        msg = f"kdsvd case {case}"
        torch.testing.assert_close(value.detach(), tensors[f"value_{i}"], rtol=1e-5, atol=1e-5, msg=msg)
        for n in case["layers"]:
            torch.testing.assert_close(students[f"s_{n}"].grad, tensors[f"grad_{n}_{i}"], rtol=1e-5, atol=1e-5,
                                       msg=msg)


def test_kdsvd_is_zero_for_the_teacher_itself_and_ignores_scale_and_sign():
    tensors, cases = fixture("kdsvd")
    case = cases[0]
    value = float(kdsvd_case(tensors, case)[0].detach())
    assert value > 0
    for scale in (3.0, -1.0):  # singular vectors are normalised, and matched up to sign
        assert float(kdsvd_case(tensors, case, scale)[0].detach()) == pytest.approx(value, rel=1e-4)
    g = torch.Generator().manual_seed(2)
    maps = {"a": torch.randn(8, 4, 6, 6, generator=g), "b": torch.randn(8, 8, 3, 6, generator=g)}
    term = parse_loss("kdsvd:student=a+b,teacher=a+b")
    assert abs(float(term(multi(dict(maps), dict(maps)))["kdsvd"])) < 1e-7


def test_kdsvd_refuses_bad_options_and_unusable_taps():
    for spec, match in [("kdsvd:student=a+b,teacher=c+d,k=0", "k must be >= 1"),
                        ("kdsvd:student=a,teacher=c", "at least two"),
                        ("kdsvd:student=a+b,teacher=c", "2 student layer"),
                        ("kdsvd:student=a+,teacher=c+d", "module paths joined by")]:
        with pytest.raises(DistillabError, match=match) as e:
            parse_loss(spec)
        one_line(e)
    term = parse_loss("kdsvd:student=a+b,teacher=c+d")
    m = torch.randn(8, 4, 6, 6)
    for students, teachers, match in [
        ({"a": m, "b": torch.randn(8, 24)}, {"c": m, "d": m}, r"\(N, C, H, W\).*'b' gives \(24,\)"),
        ({"a": m, "b": m}, {"c": m, "d": torch.randn(8, 4, 6, 5)},
         r"along the maps' width.*'d' \(4, 6, 5\); pair layers of one width"),
    ]:
        with pytest.raises(DistillabError, match=match) as e:
            term.build(multi(students, teachers), torch.Generator())
        one_line(e)


# ------------------------------------------------------------------------------------------- training on digits


@pytest.fixture(scope="module")
def conv_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "t"
    train(data="digits", model="convnet:width=8,depth=2", epochs=1, batch_size=64, out=out, quiet=True)
    return out / "model.safetensors"


@pytest.mark.parametrize("loss, cache", [
    ("ofd:student=features.1,teacher=features.1", "auto"),             # margins estimated; the teacher cached
    ("ofd:student=features.1,teacher=features.1,norm=features.1", False),  # from the teacher's instance norm
    ("kdsvd:student=features.1+features.5,teacher=features.1+features.5", "auto"),
])
def test_each_term_distils_between_convnets(tmp_path, conv_teacher, loss, cache):
    r = distill(teacher=conv_teacher, student="convnet:width=4,depth=2", losses=["ce", loss], epochs=1,
                batch_size=64, cache=cache, out=tmp_path / "f", quiet=True)
    name = loss.split(":")[0]
    logged = [json.loads(line) for line in (tmp_path / "f/metrics.jsonl").read_text().splitlines()]
    values = [row[f"train_{name}"] for row in logged if f"train_{name}" in row]
    assert values and all(np.isfinite(v) for v in values)
    assert np.isfinite(r.metrics["test_accuracy"])


OFD_LOSS = "ofd:student=features.1,teacher=features.1"


def test_ofd_trains_its_connector_and_keeps_its_margins(tmp_path, conv_teacher, monkeypatch):
    heads = []
    build = OFD.build

    def recording(self, sample, generator):
        modules = build(self, sample, generator)
        heads.append((modules[0], {k: v.clone() for k, v in modules[0].state_dict().items()}))
        return modules

    monkeypatch.setattr(OFD, "build", recording)
    distill(teacher=conv_teacher, student="convnet:width=4,depth=2", losses=["ce", OFD_LOSS], epochs=1,
            batch_size=64, out=tmp_path / "f", quiet=True)
    (head, start), = heads
    after = head.state_dict()
    assert torch.equal(after["margin"], start["margin"]) and bool((start["margin"] < 0).all())
    for name in ("connector.0.weight", "connector.1.weight", "connector.1.bias"):  # trained with the student
        assert not torch.equal(after[name], start[name]), name


def test_ofd_resumes_to_the_same_bytes(tmp_path, stop_after, conv_teacher):
    kwargs = dict(data="digits", teacher=str(conv_teacher), student="convnet:width=4,depth=2",
                  losses=["ce", OFD_LOSS], epochs=2, batch_size=64)
    api.distill(out=tmp_path / "reference", quiet=True, **kwargs)
    stopped_and_resumed(api.distill, stop_after, 19, tmp_path / "resumed", **kwargs)  # after epoch 1 (19 steps)
    same_run(tmp_path / "reference", tmp_path / "resumed")


def test_kdsvd_refuses_features_without_an_svd_in_one_line():
    """A map gone non-finite (the SVD gradient of a map with repeated singular values is NaN) is one line, not a
    LinAlgError from deep inside torch."""
    from distillab.kd.losses.kdsvd import leading_right_vectors

    bad = torch.randn(2, 3, 4, 4)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(DistillabError, match="not finite"):
        leading_right_vectors(bad, 2)
