"""The CLI end to end on digits, and the bad-input catalogue: one line on stderr, exit code 2, no output left."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import assert_one_line_error, write_npz

FAST = ["--epochs", "2", "--batch-size", "64", "--quiet"]


def test_train_writes_outputs(cli, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--data", "digits", "--model", "mlp:hidden=32", *FAST, "--out", out)
    assert r.code == 0, r.err
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "test_errors", "val_accuracy", "wall_seconds", "peak_rss_mb"):
        assert key in metrics
    assert 0.5 < metrics["test_accuracy"] <= 1 and metrics["test_errors"] == round((1 - metrics["test_accuracy"]) * 449)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["epoch"] == 1
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == "mlp:hidden=32" and config["epochs"] == 2 and config["seed"] == 0
    assert (out / "model.safetensors").exists()
    assert r.json["test_accuracy"] == metrics["test_accuracy"]
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_same_seed_same_result(cli, tmp_path):
    a = cli("train", "--model", "mlp:hidden=16,dropout=0.2", *FAST, "--augment", "shift:1", "--out", tmp_path / "a")
    b = cli("train", "--model", "mlp:hidden=16,dropout=0.2", *FAST, "--augment", "shift:1", "--out", tmp_path / "b")
    assert a.json["test_accuracy"] == b.json["test_accuracy"]
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()


def test_kd_evaluate_predict_roundtrip(cli, tmp_path, digits_teacher):
    out = tmp_path / "kd"
    r = cli("kd", "--teacher", digits_teacher, "--student", "mlp:hidden=16", "--temperature", "4", "--alpha", "0.9",
            *FAST, "--out", out)
    assert r.code == 0, r.err
    assert r.json["teacher_mode"] == "cached"
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["losses"][0] == {"name": "kd", "w": 0.9, "T": 4.0}
    assert "train_kd_T4" in json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    e = cli("evaluate", out / "model.safetensors", "--out", tmp_path / "ev", "--quiet")
    assert e.code == 0 and e.json["test_accuracy"] == r.json["test_accuracy"]
    assert e.json["val_accuracy"] == r.json["val_accuracy"]  # the same validation split, from the metadata
    p = cli("predict", digits_teacher, "--output", "probs", "--top-k", "3", "--out", tmp_path / "t.npz", "--quiet")
    assert p.code == 0, p.err
    z = np.load(tmp_path / "t.npz")
    assert z["topk_prob"].shape == (1348, 3) and z["topk_index"].shape == (1348, 3)


def test_live_teacher_with_augmentation_and_cache_refusal(cli, tmp_path, digits_teacher):
    r = cli("kd", "--teacher", digits_teacher, "--student", "mlp:hidden=16", *FAST, "--augment", "shift:1",
            "--out", tmp_path / "live")
    assert r.code == 0 and r.json["teacher_mode"] == "live"
    bad = cli("kd", "--teacher", digits_teacher, "--student", "mlp:hidden=16", *FAST, "--augment", "shift:1",
              "--cache-teacher", "yes", "--out", tmp_path / "stale")
    assert_one_line_error(bad, "stale")
    assert not (tmp_path / "stale").exists()


def test_recipe_runs_a_command(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"command": "train", "data": "digits", "model": "mlp:hidden=8", "epochs": 1,
                                      "quiet": True, "out": str(tmp_path / "out")}))
    r = cli("run", recipe)
    assert r.code == 0, r.err
    assert yaml.safe_load((tmp_path / "out/config.yaml").read_text())["epochs"] == 1


def test_seeds_repeat_and_summarise(cli, tmp_path):
    r = cli("train", "--model", "mlp:hidden=8", "--epochs", "1", "--quiet", "--seeds", "0,1", "--out", tmp_path / "s")
    assert r.code == 0, r.err
    m = json.loads((tmp_path / "s/metrics.json").read_text())
    assert set(m["test_accuracy"]) == {"mean", "std", "runs"} and len(m["test_accuracy"]["runs"]) == 2
    assert (tmp_path / "s/seed-1/model.safetensors").exists()


def test_data_info_and_module_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "distillab", "data", "info", "digits"], capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["input_shape"] == [1, 8, 8]
    r = subprocess.run([sys.executable, "-m", "distillab", "train", "--model", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("distillab: error: ") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------------------------
# The bad-input catalogue


@pytest.fixture(scope="module")
def foreign_teachers(tmp_path_factory):
    """Teachers trained on other data: 3 classes at 8x8, and 10 classes at 12x12."""
    from distillab import train

    root = tmp_path_factory.mktemp("foreign")
    three = write_npz(root / "three.npz", classes=3)
    ten = write_npz(root / "ten.npz", classes=10, size=12, n=100)
    a = train(data=f"npz:{three}", model="mlp:hidden=4", epochs=1, out=root / "a", quiet=True)
    b = train(data=f"npz:{ten}", model="mlp:hidden=4", epochs=1, out=root / "b", quiet=True)
    return a.out / "model.safetensors", b.out / "model.safetensors"


def _corrupt(tmp_path):
    p = tmp_path / "corrupt.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    return p


BAD = {
    "unknown dataset": (["train", "--data", "imagenet", "--model", "mlp"], "unknown dataset"),
    "unknown model": (["train", "--model", "transformer"], "unknown model"),
    "bad model option": (["train", "--model", "mlp:hidden=abc"], "whole numbers"),
    "unknown model option": (["train", "--model", "mlp:depth=3"], "unknown option"),
    "negative epochs": (["train", "--model", "mlp", "--epochs", "-3"], "--epochs"),
    "zero epochs": (["train", "--model", "mlp", "--epochs", "0"], "--epochs"),
    "negative lr": (["train", "--model", "mlp", "--lr", "-0.1"], "--lr"),
    "bad label smoothing": (["train", "--model", "mlp", "--label-smoothing", "1.5"], "--label-smoothing"),
    "bad augmentation": (["train", "--model", "mlp", "--augment", "rotate:5"], "augmentation"),
    "not a number": (["train", "--model", "mlp", "--epochs", "many"], "invalid int"),
    "unknown flag": (["train", "--model", "mlp", "--epoch", "3"], "unrecognized"),
    "unknown command": (["distil"], "invalid choice"),
    "missing npz": (["train", "--data", "npz:/nonexistent/x.npz", "--model", "mlp"], "no such file"),
    "missing teacher": (["kd", "--teacher", "/nonexistent/t.safetensors", "--student", "mlp"], "no such file"),
    "missing model to evaluate": (["evaluate", "/nonexistent/m.safetensors"], "no such file"),
    "no teacher": (["kd", "--student", "mlp"], "--teacher"),
    "bad seeds": (["train", "--model", "mlp", "--seeds", "a,b"], "seeds"),
    "unknown loss": (["kd", "--teacher", "TEACHER", "--student", "mlp", "--loss", "fancy"], "unknown loss"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_no_output(cli, tmp_path, case, digits_teacher):
    args, fragment = BAD[case]
    args = [str(digits_teacher) if a == "TEACHER" else a for a in args]
    out = tmp_path / "out"
    r = cli(*args, "--out", out) if args[0] in ("train", "kd", "evaluate") else cli(*args)
    assert_one_line_error(r, fragment)
    assert not out.exists() and not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("which,temperature,fragment", [
    ("bad_temperature", "0", "--temperature must be > 0"),
    ("negative_temperature", "-2", "--temperature must be > 0"),
])
def test_impossible_temperature(cli, tmp_path, digits_teacher, which, temperature, fragment):
    r = cli("kd", "--teacher", digits_teacher, "--student", "mlp", "--temperature", temperature, "--out", tmp_path / "o")
    assert_one_line_error(r, fragment)
    assert not (tmp_path / "o").exists()


def test_corrupt_files(cli, tmp_path, digits_teacher):
    corrupt = _corrupt(tmp_path)
    assert_one_line_error(cli("evaluate", corrupt, "--out", tmp_path / "o"), "corrupt.safetensors")
    assert_one_line_error(cli("kd", "--teacher", corrupt, "--student", "mlp", "--out", tmp_path / "o"), "corrupt")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 broken")
    assert_one_line_error(cli("kd", "--teacher-outputs", tmp_path / "bad.npz", "--student", "mlp",
                              "--out", tmp_path / "o"), "not a readable .npz")
    assert not (tmp_path / "o").exists()


def test_teacher_that_does_not_match_the_data(cli, tmp_path, foreign_teachers):
    three_classes, other_shape = foreign_teachers
    r = cli("kd", "--data", "digits", "--teacher", three_classes, "--student", "mlp", "--out", tmp_path / "o")
    assert_one_line_error(r, "predicts 3 classes, but the data has 10")
    r = cli("kd", "--data", "digits", "--teacher", other_shape, "--student", "mlp", "--out", tmp_path / "o")
    assert_one_line_error(r, "inputs of shape (1, 12, 12)")
    r = cli("evaluate", other_shape, "--data", "digits", "--out", tmp_path / "o")
    assert_one_line_error(r, "inputs of shape")
    assert not (tmp_path / "o").exists()


def test_recipe_errors(cli, tmp_path):
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("command: train\nmodel: mlp\nepochz: 3\n")
    assert_one_line_error(cli("run", bad_key), "unknown recipe key 'epochz'")
    no_cmd = tmp_path / "no_cmd.yaml"
    no_cmd.write_text("model: mlp\n")
    assert_one_line_error(cli("run", no_cmd), "'command' must be one of")
    tag = tmp_path / "tag.yaml"
    tag.write_text("command: !!python/object/apply:os.system ['echo hi']\n")
    assert_one_line_error(cli("run", tag), "not valid YAML")
    assert_one_line_error(cli("run", tmp_path / "missing.yaml"), "no such recipe")


def test_existing_output_folder_is_not_clobbered(cli, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = cli("train", "--model", "mlp:hidden=8", *FAST, "--out", out)
    assert_one_line_error(r, "already exists")
    assert (out / "keep.txt").read_text() == "mine"
