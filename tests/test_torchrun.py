"""torchrun with 2 gloo processes on the CPU gives the single-process results: training (batches sharded, gradients
summed), distribution matching (real batches sharded, embedding sums summed) and the evaluation protocol (models
dealt out, draws replayed). Rank 0 writes; the others leave nothing behind."""

import json
import os
import subprocess
import sys

import pytest
import torch

import distillab
from distillab.files import load_tensors

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "distillab",
                        *map(str, args), "--quiet", "--json"], cwd=cwd, env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun process runs
    yield
    torch.set_num_threads(threads)


def test_training_on_two_processes_equals_one(tmp_path, one_thread):
    args = dict(data="digits", model="mlp:hidden=16", epochs=3, batch_size=64, augment="shift:1")
    one = distillab.train(out=tmp_path / "one", quiet=True, **args)
    two = torchrun("train", "--data", "digits", "--model", "mlp:hidden=16", "--epochs", "3", "--batch-size", "64",
                   "--augment", "shift:1", "--out", "two", cwd=tmp_path)
    a, _ = load_tensors(tmp_path / "one/model.safetensors", "distillab.model")
    b, _ = load_tensors(tmp_path / "two/model.safetensors", "distillab.model")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5  # float sums in another order, nothing more
    assert two["test_errors"] == one.metrics["test_errors"]
    environments = [json.loads((tmp_path / run / "metrics.json").read_text())["environment"] for run in ("one", "two")]
    assert environments[0]["processes"] == 1 and "agreement_with_one_process" not in environments[0]
    assert environments[1]["processes"] == 2 and "not bit for bit" in environments[1]["agreement_with_one_process"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


def test_distribution_matching_and_the_protocol_on_two_processes(tmp_path, one_thread):
    method = "dm:iterations=4,batch_real=33,model=[convnet:width=8,depth=2]"  # 33: shards of unequal size
    distillab.condense_data("digits", method, 2, out=tmp_path / "one", quiet=True)
    torchrun("condense", "--data", "digits", "--method", method, "--ipc", "2", "--out", "two", cwd=tmp_path)
    a, _ = load_tensors(tmp_path / "one/synset.safetensors", "distillab.synset")
    b, _ = load_tensors(tmp_path / "two/synset.safetensors", "distillab.synset")
    assert float((a["images"] - b["images"]).abs().max()) < 1e-5
    models = ["mlp:hidden=16", "convnet:width=4,depth=2"]
    one = distillab.evaluate_synset(tmp_path / "one/synset.safetensors", models=models, runs=3, epochs=4, dsa=True,
                                    out=tmp_path / "e1", quiet=True)
    two = torchrun("evaluate", "one/synset.safetensors", "--models", *models, "--runs", "3", "--epochs", "4", "--dsa",
                   "--out", "e2", cwd=tmp_path)
    for spec in models:  # three models over two ranks: each trained as in one process
        assert two["models"][spec]["runs"] == pytest.approx(one.metrics["models"][spec]["runs"], abs=1 / 449)
