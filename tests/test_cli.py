"""The CLI end to end on digits (the bad-input catalogue is tests/test_bad_input.py)."""

import json
import subprocess
import sys

import numpy as np
import yaml

from conftest import assert_one_line_error

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


def test_metrics_record_the_software_and_the_thread_count(cli, tmp_path):
    """What a run's bits depend on beyond its options and seeds (the thread count orders float sums)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # a count no default would guess
    try:
        assert cli("train", "--data", "digits", "--model", "mlp:hidden=8", *FAST, "--out", tmp_path / "r").code == 0
    finally:
        torch.set_num_threads(threads)
    env = json.loads((tmp_path / "r" / "metrics.json").read_text())["environment"]
    assert (env["torch"], env["torch_threads"]) == (torch.__version__, threads + 1)


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
    assert config["losses"][0] == {"name": "kd", "w": 0.9, "T": 4.0, "noise": 0.0}
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


def test_a_recipe_sets_any_switch(cli, tmp_path):
    """Every flag that takes no value (store_true, store_const, store_false) is a true/false key of a recipe."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"command": "condense", "data": "digits", "ipc": 1, "no_dsa": True,
                                      "method": "dm:iterations=2,batch_real=8,model=[convnet:width=4,depth=2]",
                                      "out": str(tmp_path / "c")}))
    r = cli("run", recipe)
    assert r.code == 0 and "dsa=0" in yaml.safe_load((tmp_path / "c/config.yaml").read_text())["method"], r.err
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "t.npz", probs=rng.dirichlet(np.ones(10), size=1348).astype(np.float32))
    recipe.write_text(yaml.safe_dump({"command": "kd", "teacher_outputs": str(tmp_path / "t.npz"),
                                      "accept_unchecked_table": True, "student": "mlp:hidden=4", "epochs": 1,
                                      "out": str(tmp_path / "k")}))
    r = cli("run", recipe)
    assert r.code == 0 and "about chance" in r.err, r.err


def test_seeds_repeat_and_summarise(cli, tmp_path):
    r = cli("train", "--model", "mlp:hidden=8", "--epochs", "1", "--quiet", "--seeds", "0,1", "--out", tmp_path / "s")
    assert r.code == 0, r.err
    m = json.loads((tmp_path / "s/metrics.json").read_text())
    assert set(m["test_accuracy"]) == {"mean", "std", "runs"} and len(m["test_accuracy"]["runs"]) == 2
    assert (tmp_path / "s/seed-1/model.safetensors").exists()


def test_data_info_and_module_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "distillab", "data", "info", "digits", "--json"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and json.loads(r.stdout)["input_shape"] == [1, 8, 8]
    r = subprocess.run([sys.executable, "-m", "distillab", "train", "--model", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("distillab: error: ") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_existing_output_folder_is_not_clobbered(cli, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = cli("train", "--model", "mlp:hidden=8", *FAST, "--out", out)
    assert_one_line_error(r, "already exists")
    assert (out / "keep.txt").read_text() == "mine"
