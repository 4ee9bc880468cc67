"""The KD menu's feature terms (issue 31): pkt, sp, nst. Each equals mdistiller's code on fixed features (values and
gradients wrt the student's features, tests/fixtures/kd_menu/, made as its README says), keeps the identities of its
paper, trains between two ConvNets, and meets the contract (tests/test_contract.py runs check_loss_term)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from distillab import api
from distillab.errors import DistillabError
from distillab.kd.loss import LossInputs, parse_loss
from distillab.kd.teachers import TeacherBatch

FIXTURES = Path(__file__).parent / "fixtures" / "kd_menu"


def fixture(name):
    with safe_open(str(FIXTURES / f"{name}.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["made"])


def batch(student, teacher):
    logits = torch.zeros(len(student), 3)
    return LossInputs(logits, None, TeacherBatch(logits=logits, features={"penultimate": teacher}),
                      {"penultimate": student})


def value_and_grad(term, student, teacher):
    s = student.clone().requires_grad_(True)
    (value,) = term(batch(s, teacher)).values()
    value.backward()
    return value.detach(), s.grad


@pytest.mark.parametrize("name", ["pkt", "sp", "nst"])
def test_each_term_equals_mdistiller(name):
    tensors, cases = fixture(name)
    assert len(cases) >= 3 and any(not case["options"] for case in cases)  # one case at the defaults (the weight)
    for case in cases:
        i = case["case"]
        options = ",".join(f"{k}={v}" for k, v in case["options"].items())
        term = parse_loss(f"{name}:{options}" if options else name)
        value, grad = value_and_grad(term, tensors[case["student"]], tensors[case["teacher"]])
        torch.testing.assert_close(value, tensors[f"value_{i}"], rtol=1e-5, atol=1e-5, msg=f"{name} case {case}")
        torch.testing.assert_close(grad, tensors[f"grad_{i}"], rtol=1e-5, atol=1e-5, msg=f"{name} case {case}")


def features(seed, *shape):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


def test_pkt_is_zero_for_the_teacher_itself_and_ignores_scale():
    s, t = features(0, 16, 24)
    term = parse_loss("pkt:w=1")
    value = value_and_grad(term, s, t)[0]
    assert float(value) > 0 and float(value_and_grad(term, t, t)[0]) == 0
    for s2, t2 in [(5 * s, t), (s, 0.2 * t), (3 * s, 7 * t)]:  # cosine kernels: a positive scale changes nothing
        torch.testing.assert_close(value_and_grad(term, s2, t2)[0], value, rtol=1e-5, atol=1e-8)
    assert float(value_and_grad(term, s, torch.randn(16, 40))[0]) > 0  # widths may differ


def test_sp_is_zero_for_the_teacher_itself_and_ignores_scale():
    s, t = features(1, 16, 8, 3, 3)
    term = parse_loss("sp:w=1")
    value = value_and_grad(term, s, t)[0]
    assert float(value) > 0 and float(value_and_grad(term, t, t)[0]) == 0
    for s2, t2 in [(5 * s, t), (s, 0.2 * t), (3 * s, 7 * t)]:  # rows of G normalised: a scale cancels
        torch.testing.assert_close(value_and_grad(term, s2, t2)[0], value, rtol=1e-5, atol=1e-8)
    assert float(value_and_grad(term, s, torch.randn(16, 5, 2, 2))[0]) > 0  # G is b x b: shapes may differ


def test_nst_is_zero_for_identical_maps_and_refuses_other_shapes():
    s, t = features(2, 16, 8, 4, 4)
    term = parse_loss("nst:w=1")
    assert float(value_and_grad(term, s, t)[0]) > 0 and abs(float(value_and_grad(term, t, t)[0])) < 1e-7
    torch.testing.assert_close(value_and_grad(term, 4 * s, t)[0], value_and_grad(term, s, t)[0])  # maps normalised
    assert float(value_and_grad(term, s, torch.randn(16, 12, 4, 4))[0]) > 0  # channel counts may differ
    g = torch.Generator()
    with pytest.raises(DistillabError, match=r"one spatial size.*\(8, 4, 4\).*\(8, 2, 2\)"):
        term.build(batch(s, torch.randn(16, 8, 2, 2)), g)
    with pytest.raises(DistillabError, match=r"\(N, C, H, W\).*\(24,\)"):
        term.build(batch(torch.randn(16, 24), t), g)
    assert term.build(batch(s, torch.randn(16, 12, 4, 4)), g) == []


@pytest.fixture(scope="module")
def conv_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "t"
    api.train(data="digits", model="convnet:width=8,depth=2", epochs=2, batch_size=64, out=out, quiet=True)
    return out / "model.safetensors"


@pytest.mark.parametrize("loss", ["pkt", "sp:student=features.6,teacher=features.6",
                                  "nst:student=features.2,teacher=features.2"])
def test_each_term_trains_between_convnets(tmp_path, conv_teacher, loss):
    """Student width 4, teacher width 8: pkt reads 16 against 32 penultimate features, sp 4 against 8 channels of
    the last 4x4 maps, nst 4 against 8 channels of the first 8x8 maps."""
    r = api.distill(teacher=conv_teacher, student="convnet:width=4,depth=2", losses=["ce", loss], epochs=2,
                    batch_size=64, out=tmp_path / "f", quiet=True)
    logged = [json.loads(line) for line in (tmp_path / "f/metrics.jsonl").read_text().splitlines()]
    key = "train_" + loss.split(":")[0]
    values = [row[key] for row in logged if key in row]
    assert len(values) == 2 and all(np.isfinite(v) and v > 0 for v in values)
    assert r.metrics["test_accuracy"] > 0.2


def test_a_teacher_from_other_data_keeps_its_module_paths_and_sees_its_own_normalisation(tmp_path):
    """A teacher whose normalisation differs from the data's is mapped by a pre-hook, not wrapped: its taps keep
    their names (features.N), and it answers the data's inputs as it answers its own."""
    import dataclasses

    from distillab import data as data_mod
    from distillab import train
    from distillab.kd.teachers import load_teacher_model

    made = train(data="digits", model="convnet:width=4,depth=2", epochs=1, out=tmp_path / "t", quiet=True)
    splits = data_mod.split(data_mod.load("digits"))
    other = dataclasses.replace(splits, mean=(0.5,), std=(0.25,))
    teacher, _ = load_teacher_model(tmp_path / "t" / "model.safetensors", other)
    names = dict(teacher.named_modules())
    assert "features.0" in names and "1.features.0" not in names
    x = (splits.train.x[:5] * splits.std[0] + splits.mean[0] - 0.5) / 0.25  # the same images, normalised the other way
    torch.testing.assert_close(teacher(x), made.model(splits.train.x[:5]), atol=1e-5, rtol=1e-5)


def test_a_sequential_teacher_from_other_data_is_wrapped_not_extended():
    """A Sequential runs every child it holds: the renormalisation must run first, not be appended last."""
    from distillab.kd import teachers

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    meta = {"normalisation": {"mean": [0.5], "std": [0.25]}}

    class Splits:
        mean, std, classes, input_shape = (0.0,), (1.0,), ["a", "b", "c"], (1, 2, 2)

    import pytest as _pytest
    mp = _pytest.MonkeyPatch()
    mp.setattr(teachers, "load_model", lambda *a, **k: (model, meta))
    mp.setattr(teachers, "check_compatible", lambda *a, **k: None)
    try:
        wrapped, _ = teachers.load_teacher_model("x", Splits())
    finally:
        mp.undo()
    x = torch.randn(5, 1, 2, 2)
    torch.testing.assert_close(wrapped(x), model((x - 0.5) / 0.25))
