"""--compile: the choice (off, on, auto and its probe), its record, and compiled hot steps equal to eager ones.

The equality tests compile for real (inductor, a C++ compiler on this machine) on tiny models; each checks that a
graph was compiled too, so a compile that silently fell back to eager cannot pass as equal."""

import pytest
import torch
from torch._dynamo.utils import counters

from conftest import assert_one_line_error
from distillab.compiling import CompileChoice, Compiled, choose
from distillab.errors import DistillabError


class FakeClock:
    """A timer the steps advance: each step adds its own cost, so auto's arithmetic is checked exactly."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def step(self, seconds, calls):
        def run():
            calls.append(seconds)
            self.now += seconds
        return run


def decide(eager_seconds, compiled_seconds, compile_seconds, steps):
    clock, calls = FakeClock(), {"eager": [], "compiled": []}
    eager = clock.step(eager_seconds, calls["eager"])
    first = {"done": False}

    def compiled():
        calls["compiled"].append(1)
        clock.now += compiled_seconds + (0 if first["done"] else compile_seconds)
        first["done"] = True
    return choose("auto", eager, compiled, steps=steps, timer=clock), calls


def test_off_and_on_decide_without_running_a_step():
    boom = lambda: (_ for _ in ()).throw(AssertionError("a step ran"))
    assert choose("off", boom, boom, steps=10 ** 6) == CompileChoice("off", False, "off")
    assert choose("on", boom, boom, steps=10 ** 6).compiled


def test_auto_compiles_where_the_step_is_faster_and_the_run_repays_the_compile():
    choice, _ = decide(eager_seconds=1.0, compiled_seconds=0.5, compile_seconds=40, steps=1000)
    assert choice.compiled and choice.probe == {"eager_step_seconds": 1.0, "compiled_step_seconds": 0.5,
                                                "compile_seconds": 40.0, "steps": 1000}


def test_auto_stays_eager_where_the_compile_is_not_repaid():
    choice, _ = decide(eager_seconds=1.0, compiled_seconds=0.5, compile_seconds=40, steps=79)  # saves 39.5 s
    assert not choice.compiled and "not be repaid" in choice.reason


def test_auto_stays_eager_where_the_compiled_step_is_not_ten_percent_faster():
    choice, _ = decide(eager_seconds=1.0, compiled_seconds=0.95, compile_seconds=1, steps=10 ** 6)
    assert not choice.compiled and "0.95x" in choice.reason


def test_auto_does_not_compile_for_a_run_too_short_to_repay_any_compile():
    choice, calls = decide(eager_seconds=0.01, compiled_seconds=0.001, compile_seconds=1, steps=100)
    assert not choice.compiled and calls["compiled"] == [] and "cannot repay" in choice.reason


def test_auto_falls_back_to_eager_when_compiling_fails():
    def fails():
        raise DistillabError("torch.compile failed (no compiler)")
    choice = choose("auto", lambda: None, fails, steps=10 ** 9)
    assert not choice.compiled and "no compiler" in choice.reason


def test_auto_does_not_probe_under_torchrun(monkeypatch):
    from distillab import distributed

    monkeypatch.setattr(distributed, "world", lambda: 2)
    boom = lambda: pytest.fail("a probe ran")
    choice = choose("auto", boom, boom, steps=10 ** 9)
    assert not choice.compiled and "torchrun" in choice.reason


@pytest.mark.parametrize("record", [None, {"mode": "sometimes", "compiled": True, "reason": ""},
                                    {"mode": "off", "compiled": True, "reason": ""},
                                    {"mode": "auto", "compiled": True, "reason": "", "probe": {"x": "a string"}},
                                    {"mode": "on", "compiled": "yes", "reason": ""},
                                    {"mode": "on", "compiled": True, "reason": 3},
                                    {"mode": "on", "compiled": True, "reason": "", "probe": [1]}])
def test_a_forged_recorded_choice_is_refused(record):
    with pytest.raises(DistillabError, match="compile choice is malformed"):
        CompileChoice.from_record(record)


def test_a_failed_compile_is_one_line_on_any_call_and_other_errors_pass_through(monkeypatch):
    import torch as torch_mod
    from torch._dynamo.exc import TorchDynamoException

    calls = {"n": 0}

    def broken(fn, **kwargs):
        def run(x):
            calls["n"] += 1
            if x == "shape error":
                raise ValueError("a user's own error")
            if calls["n"] > 1:  # a later call that compiles anew (a new shape, a no-grad pass) fails
                raise TorchDynamoException("InductorError: no C++ compiler found\nlong trace")
            return x
        return run
    monkeypatch.setattr(torch_mod, "compile", broken)
    fast = Compiled(lambda x: x)
    assert fast(1) == 1
    with pytest.raises(DistillabError, match=r"^torch.compile failed \(TorchDynamoException: InductorError: no C\+\+ "
                                             r"compiler found\); run with --compile off"):
        fast(2)
    with pytest.raises(ValueError, match="a user's own error"):
        fast("shape error")


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def test_a_compiled_dm_run_equals_the_eager_one_and_records_its_choice():
    from distillab.condense import condense
    from distillab.runs.training import load_splits

    train = load_splits("digits", None, 0).train_set()
    spec = "dm:iterations=3,batch_real=16,model=[convnet:width=8,depth=2]"
    eager = condense(train, spec, 2, seed=0)
    before = graphs()
    compiled = condense(train, spec + ",compile=on", 2, seed=0)
    assert graphs() > before  # the embedding pass went through inductor
    assert compiled.meta["compile"] == {"mode": "on", "compiled": True, "reason": "on"}
    assert eager.meta["compile"]["compiled"] is False
    torch.testing.assert_close(compiled.images, eager.images, atol=1e-4, rtol=1e-4)
    assert not torch.equal(compiled.images, train.x[:0])  # (a set was made)


def test_compiled_inner_steps_of_gradient_matching_equal_eager_ones():
    from distillab.condense import condense
    from distillab.runs.training import load_splits

    train = load_splits("digits", None, 0).train_set()
    spec = "dsa:iterations=1,outer=3,inner=2,batch_real=8,model=[convnet:width=4,depth=2]"
    eager = condense(train, spec, 3, seed=0)
    before = graphs()
    compiled = condense(train, spec + ",compile=on", 3, seed=0)
    assert graphs() > before and compiled.meta["compile"]["compiled"]
    torch.testing.assert_close(compiled.images, eager.images, atol=1e-4, rtol=1e-4)


def test_off_builds_no_probe(monkeypatch):
    from distillab.condense.method import Progress
    from distillab.condense.methods import dm, gm

    for module, cls in ((dm, dm.DM), (gm, gm.GM)):
        monkeypatch.setattr(module, "build_model", lambda *a, **k: pytest.fail("a probe network was built"))
        for mode in ("off", "on"):
            choice = module.compile_choice(None, 10, cls(compile=mode), None, Progress())
            assert choice.compiled == (mode == "on")


def test_a_probe_leaves_the_objectives_learned_parts_as_they_were():
    """--precision auto and --compile auto step copies of the model, but the terms' own parts (a connector with
    batch norm) are the run's: the probe must put back their weights, running statistics and gradients."""
    from distillab.kd import Distillation, ModelTeacher, parse_loss
    from distillab.models import build_model
    from distillab.training import TrainConfig, choose_precision

    g = torch.Generator().manual_seed(0)
    student, teacher = (build_model("convnet:width=4,depth=2", (1, 8, 8), 3, g) for _ in range(2))
    term = parse_loss("hint:student=features.1,teacher=features.5")
    objective = Distillation(ModelTeacher(teacher, term.teacher_taps()), [term], examples=12)
    x, y = torch.randn(12, 1, 8, 8, generator=g), torch.arange(12) % 3
    extra = objective.attach(student, x[:4], torch.arange(4), generator=g)
    extra.append(torch.nn.BatchNorm1d(3))  # a part with running statistics, trained beside the term's connector
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in extra]
    choose_precision(student, objective, x, y, TrainConfig(batch_size=6), extra)
    for module, state in zip(extra, before):
        for k, v in module.state_dict().items():
            assert torch.equal(v, state[k]), k
        assert all(p.grad is None for p in module.parameters())


def test_a_resumed_dm_run_keeps_the_choice_it_began_with(monkeypatch):
    from distillab.condense.method import Progress
    from distillab.condense.methods import dm

    class Saved(Progress):
        def saved(self):
            return {"compile": {"mode": "auto", "compiled": True, "reason": "probed before the stop"}}
    monkeypatch.setattr(dm, "choose", lambda *a, **k: pytest.fail("a resumed run probed again"))
    progress = Saved()
    choice = dm.compile_choice(None, 1, dm.DM(compile="auto"), None, progress)
    assert choice.compiled and progress.keep["compile"]["reason"] == "probed before the stop"


def test_compiled_protocol_training_equals_the_eager_loop():
    from distillab.evaluation import train_sequential
    from distillab.models import build_model
    from distillab.protocols import parse_protocol

    proto = parse_protocol("distillab:runs=2,epochs=3,models=[convnet:width=8,depth=2]")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 1, 8, 8, generator=g), torch.arange(20) % 4

    def trained(compiled):
        g = torch.Generator().manual_seed(1)
        models = [build_model("convnet:width=8,depth=2", (1, 8, 8), 4, g) for _ in range(2)]
        return train_sequential(models, x, y, proto, g, None, spec=proto.models[0], compiled=compiled)

    eager = trained(False)
    before = graphs()
    fast = trained(True)
    assert graphs() > before
    for a, b in zip(eager, fast):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(q, p, atol=1e-4, rtol=1e-4, msg=name)


def test_compiled_distillation_equals_eager_and_is_recorded(tmp_path, digits_teacher):
    from distillab import distill

    def run(mode):
        return distill(data="digits", teacher=digits_teacher, student="convnet:width=4,depth=1", epochs=1,
                       compile=mode, out=tmp_path / mode, quiet=True)
    eager = run("off")
    before = graphs()
    fast = run("on")
    assert graphs() > before
    assert fast.metrics["compile"] == {"mode": "on", "compiled": True, "reason": "on"}
    assert eager.metrics["compile"]["compiled"] is False
    for (name, p), q in zip(eager.model.state_dict().items(), fast.model.state_dict().values()):
        torch.testing.assert_close(q, p, atol=1e-4, rtol=1e-4, msg=name)


def test_compile_flags_end_in_one_line(cli, tmp_path):
    assert_one_line_error(cli("condense", "--data", "digits", "--method", "herding", "--ipc", "1", "--compile",
                              "on", "--out", tmp_path / "a"), "--compile does not apply to the herding method")
    assert_one_line_error(cli("condense", "--data", "digits", "--method", "dm:compile=sometimes", "--ipc", "1",
                              "--out", tmp_path / "b"), "compile")
    result = cli("train", "--data", "digits", "--model", "mlp:hidden=8", "--compile", "fast", "--out", tmp_path / "c")
    assert result.code == 2 and "--compile" in result.err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_compile_is_how_a_method_runs_not_part_of_its_recipe():
    """A kept set or benchmark cell is matched by its method's recipe (option_values): compiling must not make
    it look like another recipe, while the spec string still carries the option."""
    from distillab.condense import METHODS
    from distillab.specs import option_values

    for name in ("dm", "gm", "dsa"):
        cls = METHODS.get(name)
        compiled = cls(compile="on")
        assert option_values(compiled) == option_values(cls()) and "compile" not in option_values(compiled)
        assert "compile=on" in str(compiled) and METHODS.parse(str(compiled)).compile == "on"
