"""The CIFAR-100 KD recipes (recipes/kd/cifar100/): each holds the papers' settings for resnet32x4 -> resnet8x4, and
each runs end to end through 'distillab run' -- the real YAML with only the data (a tiny CIFAR-shaped npz), the
epochs, the batch, the device and the output folders replaced in a copy -- with its loss terms and optimiser settings
arriving in the run's config.yaml and every term logged in metrics.jsonl."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from distillab.cli import main

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "kd" / "cifar100"
TEACHER_OUT = "runs/cifar100-resnet32x4"

# What each recipe's loss terms must be (mdistiller a08d46f's configs/cifar100, and the DIST and LSKD authors' own
# CIFAR-100 settings; recipes/kd/cifar100/README.md): name -> the options that matter, as config.yaml records them.
PAPERS = {
    "kd": [{"name": "ce", "w": 0.1}, {"name": "kd", "w": 0.9, "T": 4.0}],
    "dkd": [{"name": "ce", "w": 1.0}, {"name": "dkd", "w": 1.0, "alpha": 1.0, "beta": 8.0, "T": 4.0, "warmup": 20,
                                       "standardise": False}],
    "dist": [{"name": "ce", "w": 1.0}, {"name": "dist", "w": 2.0, "beta": 1.0, "gamma": 1.0, "T": 4.0}],
    "lskd": [{"name": "ce", "w": 0.1}, {"name": "lskd", "w": 9.0, "T": 2.0}],
    "crd": [{"name": "ce", "w": 1.0}, {"name": "crd", "w": 0.8, "feat_dim": 128, "negatives": 16384, "nce_t": 0.07,
                                       "momentum": 0.5, "student": "penultimate", "teacher": "penultimate"}],
    "reviewkd": [{"name": "ce", "w": 1.0}, {"name": "reviewkd", "w": 5.0, "warmup": 20, "max_mid": 512,
                                            "student": "features.stage1+features.stage2+features.stage3+penultimate",
                                            "teacher": "features.stage1+features.stage2+features.stage3+penultimate"}],
}
SHARED = {"data": "cifar100", "epochs": 240, "batch_size": 64, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
          "weight_decay": 0.0005, "schedule": "step", "lr_steps": [151, 181, 211], "augment": "crop:4,flip",
          "device": "cuda"}
# What a tiny run replaces; everything else is the recipe's own.
TINY = {"epochs": 1, "batch_size": 8, "device": "cpu"}


def _recipe(name: str) -> dict:
    return yaml.safe_load((RECIPES / f"{name}.yaml").read_text())


def _tiny_copy(name: str, folder: Path, data: Path, teacher: Path | None = None) -> Path:
    """The recipe with the tiny data, one epoch of batches of 8 on the CPU, outputs under ``folder``."""
    recipe = _recipe(name)
    recipe.update(TINY, data=f"npz:{data}", out=str(folder / name), quiet=True)
    if teacher is not None:
        recipe["teacher"] = str(teacher)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """16 + 8 CIFAR-shaped images (3 x 32 x 32, uint8) of 4 classes, and the teacher teacher.yaml trains on them."""
    folder = tmp_path_factory.mktemp("recipes")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    y = np.arange(16) % 4
    np.savez(folder / "tiny.npz", x=x, y=y, x_test=x[:8], y_test=y[:8])
    assert main(["run", str(_tiny_copy("teacher", folder, folder / "tiny.npz"))]) == 0
    return folder


def test_every_recipe_holds_the_papers_settings():
    assert sorted(p.stem for p in RECIPES.glob("*.yaml")) == sorted([*PAPERS, "teacher"])
    teacher = _recipe("teacher")
    assert teacher["command"] == "train" and teacher["model"] == "resnet32x4" and teacher["out"] == TEACHER_OUT
    for name in ["teacher", *PAPERS]:
        recipe = _recipe(name)
        assert {k: recipe.get(k) for k in SHARED} == SHARED, name
        if name != "teacher":
            assert recipe["command"] == "kd" and recipe["student"] == "resnet8x4", name
            assert recipe["teacher"] == f"{TEACHER_OUT}/model.safetensors", name  # what teacher.yaml writes
            assert recipe["out"].startswith("runs/") and recipe["out"] != TEACHER_OUT, name
    assert len({_recipe(name)["out"] for name in PAPERS}) == len(PAPERS)


def test_the_teacher_recipe_runs(tiny):
    config = yaml.safe_load((tiny / "teacher/config.yaml").read_text())
    assert config["model"].startswith("resnet32x4") and config["lr_steps"] == [151, 181, 211]
    assert config["augment"] == "crop:4,flip" and (tiny / "teacher/model.safetensors").is_file()


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_each_kd_recipe_runs_with_its_papers_loss(cli, tiny, tmp_path, name):
    r = cli("run", _tiny_copy(name, tmp_path, tiny / "tiny.npz", tiny / "teacher/model.safetensors"))
    assert r.code == 0, r.err
    config = yaml.safe_load((tmp_path / name / "config.yaml").read_text())
    assert config["command"] == "kd" and config["student"].startswith("resnet8x4")
    assert config["teacher_mode"] == "live"  # augmented batches: the teacher answers each one
    got = config["losses"]
    assert [term["name"] for term in got] == [term["name"] for term in PAPERS[name]]
    for want, term in zip(PAPERS[name], got):
        assert {k: term.get(k) for k in want} == want, (name, term)
    expected = {**SHARED, **TINY}
    assert {k: config.get(k) for k in expected if k != "data"} == {k: v for k, v in expected.items() if k != "data"}
    logged = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    terms = [k for k in logged[0] if k.startswith("train_") and k != "train_loss"]
    assert len(terms) == len(PAPERS[name]) and terms[0] == "train_ce", terms
    assert all(np.isfinite(logged[0][k]) for k in terms) and logged[0]["lr"] == 0.05
    assert r.json["test_size"] == 8
