"""The KD menu's reviewkd term (Chen et al., CVPR 2021): several tap pairs, one learned fusion module per stage. It
equals mdistiller's ReviewKD on fixed features and fixed fusion weights (the value and its gradients wrt every
student feature and every fusion parameter; tests/fixtures/kd_menu/reviewkd.safetensors, made as the README there
says), keeps the identities of its hierarchical context loss, refuses unusable taps in one line, trains its fusion
modules with the student between two ConvNets, and meets the contract (tests/test_contract.py)."""

import json

import pytest
import torch

from distillab import api
from distillab.errors import DistillabError
from distillab.kd.loss import LossInputs, parse_loss
from distillab.kd.losses.reviewkd import ReviewKD, hcl_loss
from distillab.kd.teachers import TeacherBatch
from distillab.training import Schedule

from test_kd_features import fixture

# mdistiller's names of an ABF's parts -> distillab's
REFERENCE_NAMES = {"conv1": "squeeze", "conv2": "expand", "att_conv": "attention"}


def batch(students, teachers, epoch=1):
    """Features under the names s0, s1, ... and t0, t1, ... (shallowest first)."""
    logits = torch.zeros(len(students[0]), 3)
    return LossInputs(logits, None, TeacherBatch(logits=logits, features={f"t{k}": t for k, t in enumerate(teachers)}),
                      {f"s{k}": s for k, s in enumerate(students)}, Schedule(epoch, 240, 0, 1))


def spec(n, options=""):
    taps = f"student={'+'.join(f's{k}' for k in range(n))},teacher={'+'.join(f't{k}' for k in range(n))}"
    return f"reviewkd:{taps}{',' + options if options else ''}"


def built(text, students, teachers, seed=0):
    term = parse_loss(text)
    (head,) = term.build(batch(students, teachers), torch.Generator().manual_seed(seed))
    return term, head


def test_reviewkd_equals_mdistiller_in_value_and_every_gradient():
    tensors, cases = fixture("reviewkd")
    assert len(cases) >= 3 and any(not case["options"] for case in cases)  # one case at the defaults
    assert any(len(shape) == 2 for case in cases for shape in case["student"])  # a pooled (N, C) last stage
    for case in cases:
        n, p = case["stages"], f"case{case['case']}."
        options = ",".join(f"{k}={v}" for k, v in case["options"].items())
        students = [tensors[f"{p}s{k}"].clone().requires_grad_(True) for k in range(n)]
        teachers = [tensors[f"{p}t{k}"] for k in range(n)]
        term, head = built(spec(n, options), [s.detach() for s in students], teachers)
        state = {}
        for name, value in tensors.items():
            if name.startswith(f"{p}abf"):
                stage, part, rest = name[len(p) + 3:].split(".", 2)
                state[f"stages.{stage}.{REFERENCE_NAMES[part]}.{rest}"] = value
        head.load_state_dict(state)  # strict: the same parts, of the same shapes, as mdistiller's
        (value,) = term(batch(students, teachers, epoch=case["epoch"])).values()
        value.backward()
        msg = f"reviewkd case {case}"
        torch.testing.assert_close(value.detach(), tensors[f"{p}value"], rtol=1e-5, atol=1e-5, msg=msg)
        for k, s in enumerate(students):
            torch.testing.assert_close(s.grad, tensors[f"{p}grad_s{k}"], rtol=1e-5, atol=1e-5, msg=msg)
        grads = 0
        for name, param in head.named_parameters():
            stage, part, rest = name.split(".", 1)[1].split(".", 2)
            reference = {v: k for k, v in REFERENCE_NAMES.items()}[part]
            torch.testing.assert_close(param.grad, tensors[f"{p}grad_abf{stage}.{reference}.{rest}"],
                                       rtol=1e-5, atol=1e-5, msg=f"{msg}: {name}")
            grads += 1
        assert grads == sum(1 for k in tensors if k.startswith(f"{p}grad_abf"))


def test_its_fusion_modules_follow_the_taps_and_come_from_the_generator():
    g = torch.Generator().manual_seed(0)
    students = [torch.randn(6, 4, 8, 8, generator=g), torch.randn(6, 8, 4, 4, generator=g),
                torch.randn(6, 12, generator=g)]
    teachers = [torch.randn(6, 5, 8, 8, generator=g), torch.randn(6, 7, 4, 4, generator=g),
                torch.randn(6, 9, generator=g)]
    term, head = built(spec(3), students, teachers, seed=3)
    mid = 12  # min(512, the deepest student tap's channels)
    for k, (stage, s, t) in enumerate(zip(head.stages, students, teachers)):
        assert stage.squeeze[0].weight.shape == (mid, s.shape[1], 1, 1)
        assert stage.expand[0].weight.shape == (t.shape[1], mid, 3, 3)
        assert (stage.attention is None) == (k == 2)  # the deepest stage has nothing to fuse
    _, again = built(spec(3), students, teachers, seed=3)
    _, other = built(spec(3), students, teachers, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(head.stages[0].squeeze[0].weight, other.stages[0].squeeze[0].weight)
    _, narrow = built(spec(3, "max_mid=2"), students, teachers)
    assert narrow.stages[1].squeeze[0].weight.shape == (2, 8, 1, 1)
    outputs = head([s if s.dim() == 4 else s[:, :, None, None] for s in students], [(8, 8), (4, 4), (1, 1)])
    assert [o.shape for o in outputs] == [(6, 5, 8, 8), (6, 7, 4, 4), (6, 9, 1, 1)]


@pytest.mark.parametrize("size,norm", [(8, 1 + 1 / 2 + 1 / 4 + 1 / 8), (4, 1 + 1 / 2 + 1 / 4), (2, 1 + 1 / 2),
                                       (1, 1.0)])
def test_hcl_weighs_the_pyramid_by_halves_and_normalises(size, norm):
    """A constant difference c leaves c^2 at every level (so c^2 in all); a checkerboard of +-c averages out in
    every pooled level, leaving c^2 of the full maps over the sum of the weights used (levels below the size)."""
    t = torch.randn(2, 3, size, size)
    torch.testing.assert_close(hcl_loss([t + 0.5], [t]), torch.tensor(0.25))
    assert float(hcl_loss([t], [t])) == 0
    if size > 1:
        board = (torch.arange(size)[:, None] + torch.arange(size)[None, :]) % 2 * 2 - 1.0
        torch.testing.assert_close(hcl_loss([t + 0.5 * board], [t]), torch.tensor(0.25 / norm))
    torch.testing.assert_close(hcl_loss([t + 0.5, t + 1], [t, t]), torch.tensor(1.25))  # summed over stages


def test_the_weight_ramps_over_the_warm_up():
    g = torch.Generator().manual_seed(1)
    students = [torch.randn(4, 3, 4, 4, generator=g), torch.randn(4, 5, generator=g)]
    teachers = [torch.randn(4, 6, 4, 4, generator=g), torch.randn(4, 6, generator=g)]
    term, head = built(spec(2), students, teachers)
    full = term(batch(students, teachers, epoch=20))["reviewkd"].detach()
    assert float(full) > 0
    torch.testing.assert_close(term(batch(students, teachers, epoch=5))["reviewkd"].detach(), full / 4)
    torch.testing.assert_close(term(batch(students, teachers, epoch=100))["reviewkd"].detach(), full)
    for text in (spec(2, "warmup=0,w=3"),):
        other = parse_loss(text)
        other.head = head
        torch.testing.assert_close(other(batch(students, teachers, epoch=1))["reviewkd"].detach(), 3 * full)


def test_reviewkd_refuses_unusable_taps_and_bad_options():
    maps = [torch.randn(4, 3, 4, 4), torch.randn(4, 5)]
    g = torch.Generator()
    for text, match in [("reviewkd:student=a+b,teacher=c", r"2 student layer\(s\) but 1 teacher"),
                        ("reviewkd:student=a+,teacher=c+d", "joined by '\\+'"),
                        (spec(2, "warmup=-1"), "warmup must be >= 0"),
                        (spec(2, "max_mid=0"), "max_mid must be >= 1"),
                        (spec(2, "w=-1"), "w must be >= 0")]:
        with pytest.raises(DistillabError, match=match) as e:
            parse_loss(text)
        assert "\n" not in str(e.value)
    with pytest.raises(DistillabError, match=r"\(N, C, H, W\) maps or \(N, C\) vectors.*'s1' gives \(5, 2\)") as e:
        parse_loss(spec(2)).build(batch([maps[0], torch.randn(4, 5, 2)], [maps[0], maps[1]]), g)
    assert "\n" not in str(e.value)
    term, _ = built(spec(2), maps, maps)
    with pytest.raises(DistillabError, match="batch of one row") as e:
        term(batch([m[:1] for m in maps], [m[:1] for m in maps]))
    assert "\n" not in str(e.value)


@pytest.fixture(scope="module")
def conv_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("conv") / "t"
    api.train(data="digits", model="convnet:width=8,depth=2", epochs=2, batch_size=64, out=out, quiet=True)
    return out / "model.safetensors"


TAPS = "features.2+features.6+penultimate"  # the 8x8 and 4x4 maps and the flattened features (as 1x1), 4 vs 8 wide


def test_reviewkd_distils_between_convnets_and_trains_its_fusion_modules(tmp_path, conv_teacher, monkeypatch):
    heads = []
    build = ReviewKD.build

    def recording(self, sample, generator):
        modules = build(self, sample, generator)
        heads.append((modules[0], {k: v.clone() for k, v in modules[0].state_dict().items()}))
        return modules

    monkeypatch.setattr(ReviewKD, "build", recording)
    r = api.distill(teacher=conv_teacher, student="convnet:width=4,depth=2",
                    losses=["ce", f"reviewkd:student={TAPS},teacher={TAPS}"], epochs=1, batch_size=64,
                    out=tmp_path / "f", quiet=True)
    logged = [json.loads(line) for line in (tmp_path / "f/metrics.jsonl").read_text().splitlines()]
    values = [row["train_reviewkd"] for row in logged if "train_reviewkd" in row]
    assert len(values) == 1 and values[0] > 0 and values[0] < float("inf")
    assert r.metrics["test_accuracy"] > 0.1
    (head, start), = heads
    moved = [name for name, value in head.state_dict().items()
             if "num_batches" not in name and not torch.equal(value, start[name])]
    assert any(name.startswith("stages.0.") for name in moved) and any(name.startswith("stages.2.") for name in moved)
