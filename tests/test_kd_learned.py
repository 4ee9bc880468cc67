"""The KD menu's feature terms with learned parts (issue 31): vid. It equals mdistiller's code on fixed features and
fixed learned weights (the value and its gradients wrt the student's features and wrt every learned parameter,
tests/fixtures/kd_menu/, made as its README says), keeps the identities of its paper, trains its learned parts with
the student between two ConvNets, resumes to the same bytes, and meets the contract (tests/test_contract.py runs
check_loss_term over every registered term)."""

import json

import numpy as np
import pytest
import torch

from distillab import api
from distillab.errors import DistillabError
from distillab.kd.loss import parse_loss
from distillab.kd.losses.vid import VID

from test_kd_features import batch, fixture  # the feature terms' fixture reader and batch, shared
from test_resume import same_run, stopped_and_resumed


def built(spec, student, teacher, seed=0):
    term = parse_loss(spec)
    (head,) = term.build(batch(student, teacher), torch.Generator().manual_seed(seed))
    return term, head


def test_vid_equals_mdistiller_in_value_and_every_gradient():
    tensors, cases = fixture("vid")
    assert len(cases) >= 3 and any(not case["options"] for case in cases)  # one case at the defaults
    for case in cases:
        i = case["case"]
        options = ",".join(f"{k}={v}" for k, v in case["options"].items())
        s, t = tensors[case["student"]].clone().requires_grad_(True), tensors[case["teacher"]]
        term, head = built(f"vid:{options}" if options else "vid", s.detach(), t)
        if case["log_scale"] == "log_scale_init":  # the fixture's starting log_scale is the one build() makes
            torch.testing.assert_close(head.log_scale.detach(), tensors["log_scale_init"], rtol=0, atol=1e-6)
        convs = [head.regressor[k] for k in (0, 2, 4)]
        with torch.no_grad():
            for j, conv in enumerate(convs):
                conv.weight.copy_(tensors[f"w{j}"])
            head.log_scale.copy_(tensors[case["log_scale"]])
        (value,) = term(batch(s, t)).values()
        value.backward()
        msg = f"vid case {case}"
        torch.testing.assert_close(value.detach(), tensors[f"value_{i}"], rtol=1e-5, atol=1e-5, msg=msg)
        torch.testing.assert_close(s.grad, tensors[f"grad_{i}"], rtol=1e-5, atol=1e-5, msg=msg)
        for j, conv in enumerate(convs):
            torch.testing.assert_close(conv.weight.grad, tensors[f"grad_w{j}_{i}"], rtol=1e-5, atol=1e-5, msg=msg)
        torch.testing.assert_close(head.log_scale.grad, tensors[f"grad_log_scale_{i}"], rtol=1e-5, atol=1e-5,
                                   msg=msg)


def maps(seed, *shape):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


def test_vid_starts_at_init_pred_var_and_its_learned_parts_come_from_the_generator():
    s, t = maps(0, 8, 4, 3, 3)
    t = torch.randn(8, 6, 3, 3)
    term, head = built("vid", s, t, seed=3)
    assert [tuple(p.shape) for p in head.parameters()] == [(6,), (6, 4, 1, 1), (6, 6, 1, 1), (6, 6, 1, 1)]
    assert all(p.requires_grad for p in head.parameters())
    var = torch.nn.functional.softplus(head.log_scale.detach()) + term.eps
    torch.testing.assert_close(var, torch.full((6,), 5.0))
    _, again = built("vid", s, t, seed=3)
    _, other = built("vid", s, t, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(head.regressor[0].weight, other.regressor[0].weight)
    _, lower = built("vid:init_pred_var=0.5", s, t, seed=3)
    torch.testing.assert_close(torch.nn.functional.softplus(lower.log_scale.detach()) + 1e-5, torch.full((6,), 0.5))


def test_vid_is_the_gaussian_log_likelihood_of_the_teacher():
    """A perfect prediction leaves 0.5 log var and no gradient to the student; for a fixed residual r the loss is
    least at var = mean r^2 per channel, where its gradient wrt log_scale vanishes."""
    s, _ = maps(1, 8, 4, 3, 3)
    term, head = built("vid:w=1", s, torch.randn(8, 6, 3, 3))
    with torch.no_grad():
        t = head.regressor(s)
    x = s.clone().requires_grad_(True)
    (value,) = term(batch(x, t)).values()
    value.backward()
    var = torch.nn.functional.softplus(head.log_scale.detach()) + term.eps
    torch.testing.assert_close(value.detach(), 0.5 * var.log().mean())
    assert float(x.grad.abs().max()) == 0
    t2 = torch.randn(8, 6, 3, 3)
    with torch.no_grad():
        r2 = (head.regressor(s) - t2).pow(2).mean((0, 2, 3))
        head.log_scale.copy_(torch.log(torch.expm1(r2 - term.eps)))  # softplus^-1(r^2 - eps)
    head.zero_grad()
    (value,) = term(batch(s, t2)).values()
    value.backward()
    assert float(head.log_scale.grad.abs().max()) < 1e-6
    torch.testing.assert_close(value.detach(), 0.5 * (1 + r2.log()).mean())
    term2 = parse_loss("vid:w=2")  # the weight is a factor
    term2.head = head
    torch.testing.assert_close(term2(batch(s, t2))["vid"].detach(), 2 * value.detach())


def test_vid_refuses_vectors_other_spatial_sizes_and_bad_options():
    s, t = maps(2, 8, 4, 4, 4)
    g = torch.Generator()
    with pytest.raises(DistillabError, match=r"one spatial size.*\(4, 4, 4\).*\(4, 2, 2\)"):
        parse_loss("vid").build(batch(s, torch.randn(8, 4, 2, 2)), g)
    with pytest.raises(DistillabError, match=r"\(N, C, H, W\).*\(24,\)"):
        parse_loss("vid").build(batch(torch.randn(8, 24), t), g)
    with pytest.raises(DistillabError, match="eps must be > 0"):
        parse_loss("vid:eps=0")
    with pytest.raises(DistillabError, match="init_pred_var must be > eps"):
        parse_loss("vid:init_pred_var=0")


@pytest.fixture(scope="module")
def conv_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "t"
    api.train(data="digits", model="convnet:width=8,depth=2", epochs=2, batch_size=64, out=out, quiet=True)
    return out / "model.safetensors"


VID_LOSS = "vid:student=features.2,teacher=features.2"  # 4 against 8 channels of the first 8x8 maps


def test_vid_trains_its_learned_parts_between_convnets(tmp_path, conv_teacher, monkeypatch):
    heads = []
    build = VID.build

    def recording(self, sample, generator):
        modules = build(self, sample, generator)
        heads.append((modules[0], {k: v.clone() for k, v in modules[0].state_dict().items()}))
        return modules

    monkeypatch.setattr(VID, "build", recording)
    r = api.distill(teacher=conv_teacher, student="convnet:width=4,depth=2", losses=["ce", VID_LOSS], epochs=2,
                    batch_size=64, out=tmp_path / "f", quiet=True)
    logged = [json.loads(line) for line in (tmp_path / "f/metrics.jsonl").read_text().splitlines()]
    values = [row["train_vid"] for row in logged if "train_vid" in row]
    assert len(values) == 2 and all(np.isfinite(v) for v in values) and values[1] < values[0]
    assert r.metrics["test_accuracy"] > 0.2
    (head, start), = heads
    for name, value in head.state_dict().items():  # the regressor and log_scale moved: trained with the student
        assert not torch.equal(value, start[name]), name


def test_vid_resumes_to_the_same_bytes(tmp_path, stop_after, conv_teacher):
    kwargs = dict(data="digits", teacher=str(conv_teacher), student="convnet:width=4,depth=2",
                  losses=["ce", VID_LOSS], epochs=2, batch_size=64, cache=False)
    api.distill(out=tmp_path / "reference", quiet=True, **kwargs)
    stopped_and_resumed(api.distill, stop_after, 19, tmp_path / "resumed", **kwargs)  # after epoch 1 (19 steps)
    same_run(tmp_path / "reference", tmp_path / "resumed")
