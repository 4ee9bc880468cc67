"""One home for every default: options come from their dataclasses, shorthands never drop silently, and every
bad option ends in one line."""


import pytest
import torch
import yaml

from distillab.api import method_from
from distillab.condense import DM, METHODS, parse_method
from distillab.errors import DistillabError
from distillab.kd import LOSSES, Distillation, ModelTeacher, parse_loss
from distillab.models import build_model
from distillab.specs import parse_spec

from conftest import assert_one_line_error

FAST = ["--epochs", "1", "--batch-size", "64", "--quiet"]


def test_temperature_or_alpha_with_loss_is_a_conflict(cli, tmp_path, digits_teacher):
    for flag, value in (("--temperature", "3"), ("--alpha", "0.5")):
        r = cli("kd", "--teacher", digits_teacher, "--student", "mlp:hidden=4", "--loss", "kd:T=2", flag, value,
                *FAST, "--out", tmp_path / "o")
        assert_one_line_error(r, "--temperature/--alpha", "--loss")
    assert not (tmp_path / "o").exists()


def test_the_shorthand_alone_takes_its_defaults_from_the_dataclasses(cli, tmp_path, digits_teacher):
    r = cli("kd", "--teacher", digits_teacher, "--student", "mlp:hidden=4", "--alpha", "0.5", *FAST,
            "--out", tmp_path / "k")
    assert r.code == 0, r.err
    losses = yaml.safe_load((tmp_path / "k/config.yaml").read_text())["losses"]
    assert losses == [{"name": "kd", "w": 0.5, "T": 4.0, "noise": 0.0}, {"name": "ce", "w": 0.5, "smoothing": 0.0}]


def test_rkd_weight_is_honoured():
    g = torch.Generator().manual_seed(0)
    student = build_model("mlp:hidden=8", (1, 8, 8), 3, g)
    teacher = ModelTeacher(build_model("mlp:hidden=8", (1, 8, 8), 3, g), ["penultimate"])
    x, y, idx = torch.randn(6, 1, 8, 8, generator=g), torch.arange(6) % 3, torch.arange(6)

    def values(spec):
        objective = Distillation(teacher, [parse_loss(spec)])
        objective.attach(student, x, idx)
        return objective(student, x, y, idx)

    one, two = values("rkd"), values("rkd:w=2")
    assert set(one) == {"rkd_distance", "rkd_angle"}
    for key in one:
        assert torch.allclose(two[key], 2 * one[key])


def test_method_shorthands_set_the_methods_options():
    m = method_from("dm", {"iterations": 5, "lr_img": 0.5, "dsa": False, "model": "convnet:width=8,depth=2"})
    assert (m.iterations, m.lr_img, m.dsa, m.model, m.batch_real) == (5, 0.5, False, "convnet:width=8,depth=2",
                                                                      DM.batch_real)
    b = method_from("bptt", {"bptt_steps": 2, "bptt_epochs": 4, "init_net": "random"})
    assert (b.steps, b.epochs, b.init_net) == (2, 4, "random")


@pytest.mark.parametrize("method,shorthands,fragment", [
    ("dm:iterations=5", {"iterations": 3}, "both set iterations"),
    ("random", {"iterations": 3}, "does not apply to the random method"),
    ("dm", {"bptt_steps": 3}, "does not apply to the dm method"),
    ("dm", {"colour": 3}, "unknown condense option"),
])
def test_method_shorthands_never_drop_silently(method, shorthands, fragment):
    with pytest.raises(DistillabError, match=fragment):
        method_from(method, shorthands)


@pytest.mark.parametrize("spec,fragment", [
    ("dm:iterations=abc", "whole number"), ("dm:lr_img=inf", "finite"), ("dm:lr_img=nan", "finite"),
    ("dm:batch_real=0", "batch_real"), ("dm:iterations=0", "iterations"), ("dm:dsa=maybe", "1 or 0"),
    ("dm:init=zeros", "real, noise"), ("dm:momentum=1", "momentum"), ("dm:iterations=3,iterations=4", "twice"),
    ("dm:model=[convnet:width=8", "unbalanced"), ("bptt:init_net=sometimes", "fixed, random"),
    ("bptt:lr_decay=0", "lr_decay"), ("nope", "unknown condensation method"), ("dm:iterations", "key=value"),
])
def test_bad_method_options_are_one_line_errors(cli, tmp_path, spec, fragment):
    assert_one_line_error(cli("condense", "--method", spec, "--ipc", "1", "--out", tmp_path / "o"), fragment)
    assert not (tmp_path / "o").exists()


def test_a_model_spec_inside_a_method_spec_goes_in_brackets(cli, tmp_path):
    spec = "dm:model=[convnet:width=8,depth=2],iterations=2,batch_real=8"
    assert parse_spec(spec).options["model"] == "convnet:width=8,depth=2"
    assert parse_method(str(parse_method(spec))) == parse_method(spec)  # and it writes back so
    r = cli("condense", "--method", spec, "--ipc", "1", "--quiet", "--out", tmp_path / "c")
    assert r.code == 0, r.err
    assert r.json["iterations"] == 2


def test_cli_help_comes_from_the_registries(cli, capsys):
    with pytest.raises(SystemExit):
        cli("condense", "--help")
    text = " ".join(capsys.readouterr().out.split())
    for name in METHODS.names():
        assert name in text
    assert "iterations=1000" in text and "lr_img=1.0" in text  # DM's defaults, read from its dataclass
    with pytest.raises(SystemExit):
        cli("kd", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in LOSSES.names())


def test_evaluation_options_apply_to_synthetic_sets_only(cli, tmp_path, digits_teacher):
    assert_one_line_error(cli("evaluate", digits_teacher, "--runs", "2", "--out", tmp_path / "o"),
                          "apply to synthetic sets")


def test_quiet_silences_every_command(cli, tmp_path):
    r = cli("bench", "dm-speed", "--quick", "--quiet", "--out", tmp_path / "b")
    assert r.code == 0 and r.err == "", r.err
    r = cli("train", "--model", "mlp:hidden=4", *FAST, "--out", tmp_path / "t")
    assert r.code == 0 and r.err == "", r.err
    loud = cli("bench", "dm-speed", "--quick", "--out", tmp_path / "b2")
    assert loud.code == 0 and "bench dm-speed" in loud.err


def test_every_long_command_takes_a_device(cli, tmp_path, digits_teacher):
    """Without a GPU here: --device cpu and --device auto run, and give what the default gives."""
    method = "dm:iterations=3,batch_real=8,model=[convnet:width=4,depth=2]"
    runs = {}
    for device in (None, "cpu", "auto"):
        extra = ["--device", device] if device else []
        c = cli("condense", "--method", method, "--ipc", "1", *extra, "--quiet", "--out", tmp_path / f"c-{device}")
        assert c.code == 0, c.err
        e = cli("evaluate", tmp_path / f"c-{device}/synset.safetensors", "--models", "mlp:hidden=8", "--runs", "1",
                "--epochs", "2", *extra, "--quiet", "--out", tmp_path / f"e-{device}")
        assert e.code == 0, e.err
        t = cli("train", "--model", "mlp:hidden=4", "--epochs", "1", *extra, "--quiet", "--out", tmp_path / f"t-{device}")
        p = cli("predict", digits_teacher, *extra, "--out", tmp_path / f"p-{device}.npz")
        assert t.code == 0 and p.code == 0, (t.err, p.err)
        runs[device] = (e.json["models"]["mlp:hidden=8"]["runs"], t.json["test_accuracy"])  # not the timings
    assert runs[None] == runs["cpu"] == runs["auto"]
    assert_one_line_error(cli("condense", "--method", "random", "--ipc", "1", "--device", "cuda:7",
                              "--out", tmp_path / "x"), "CUDA")
