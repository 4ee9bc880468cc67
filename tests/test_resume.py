"""Resume after a kill: a run killed with SIGKILL (or stopped with SIGTERM) and resumed ends in the same bytes as
an uninterrupted run; two runs cannot share one --out."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distillab import api, checkpoint, runs, training  # api imports every module of runs
from distillab.protocols import Protocol
from distillab.errors import DistillabError
from distillab.files import load_tensors, read_meta

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
VOLATILE = ("seconds", "peak_rss_mb")  # wall-clock and memory figures differ from run to run


def distillab(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distillab", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


def start(*args, cwd) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distillab", *map(str, args)], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path} appeared: {proc.communicate()}"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.005)


def interrupted(args, out: str, checkpoint: str, cwd: Path, sig=signal.SIGKILL) -> subprocess.Popen:
    """Start a run, wait for its checkpoint, then send it ``sig``."""
    proc = start(*args, "--out", out, "--quiet", cwd=cwd)
    wait_for(cwd / f".{out}.partial" / checkpoint, proc)
    proc.send_signal(sig)
    proc.stdout_text, proc.stderr_text = proc.communicate(timeout=120)
    return proc


def _steady(value):
    if isinstance(value, dict):
        return {k: _steady(v) for k, v in value.items() if not k.endswith(VOLATILE)}
    return value


def same_run(a: Path, b: Path) -> None:
    """The same outputs, bit for bit, apart from wall-clock figures and the runs' own folder names (a chain's
    later stages record their teacher's path)."""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix == ".safetensors":
            (ta, ma), (tb, mb) = (load_tensors(p, read_meta(p)["format"]) for p in (a / rel, b / rel))
            assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), rel
            assert json.dumps(_steady(ma)).replace(a.name, b.name) == json.dumps(_steady(mb)), rel
        elif rel.name == "steps.jsonl":
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        elif rel.name == "metrics.jsonl":
            strip = lambda p: [{k: v for k, v in json.loads(l).items() if not k.endswith(VOLATILE)}  # noqa: E731
                               for l in p.read_text().splitlines()]
            assert strip(a / rel) == strip(b / rel), rel


TRAIN = ["train", "--data", "digits", "--model", "mlp:hidden=32,dropout=0.2", "--epochs", "20", "--batch-size", "32",
         "--augment", "shift:1"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    assert distillab(*TRAIN, "--out", "reference", "--quiet", cwd=root).returncode == 0
    return root


def test_a_killed_training_run_resumes_to_the_same_bytes(work):
    interrupted(TRAIN, "killed", "checkpoints/fit.safetensors", work)
    assert not (work / "killed").exists() and (work / ".killed.partial").exists()
    again = distillab(*TRAIN, "--out", "killed", cwd=work)
    assert again.returncode == 2 and "--resume" in again.stderr  # an unfinished run is not silently restarted
    r = distillab("train", "--resume", "killed", "--quiet", cwd=work)
    assert r.returncode == 0, r.stderr
    same_run(work / "reference", work / "killed")


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_leaves_a_resumable_checkpoint_mid_epoch(work, sig, code):
    out = f"stopped-{sig.name}"
    proc = interrupted(TRAIN, out, "checkpoints/fit.safetensors", work, sig)
    assert proc.returncode == code, (proc.returncode, proc.stderr_text)
    assert proc.stderr_text.strip() == f"distillab: stopped; resume with: distillab train --resume {out}"
    assert (work / f".{out}.partial/checkpoints/fit.safetensors").exists()
    if sig == signal.SIGTERM:  # the same handler serves both signals: one resume shows the checkpoint is whole
        r = distillab("train", "--resume", out, "--quiet", cwd=work)
        assert r.returncode == 0, r.stderr
        same_run(work / "reference", work / out)


def test_a_killed_condensation_resumes_to_the_same_set(work):
    args = ["condense", "--data", "digits", "--method", "dm:iterations=40,batch_real=16,model=[convnet:width=8,depth=2]",
            "--ipc", "2", "--checkpoint-every", "7"]
    assert distillab(*args, "--out", "dm-reference", "--quiet", cwd=work).returncode == 0
    interrupted(args, "dm-killed", "checkpoints/condense.safetensors", work)
    r = distillab("condense", "--resume", "dm-killed", "--quiet", cwd=work)
    assert r.returncode == 0, r.stderr
    same_run(work / "dm-reference", work / "dm-killed")


def test_resume_takes_no_other_options_and_needs_an_unfinished_run(work):
    r = distillab("train", "--resume", "reference", cwd=work)
    assert r.returncode == 2 and "nothing to resume" in r.stderr
    r = distillab("train", "--resume", "reference", "--epochs", "3", cwd=work)
    assert r.returncode == 2 and "drop --epochs" in r.stderr


# ---- the same for every long command, stopped in-process (as a signal would stop it) and resumed ---------------


def stopped_and_resumed(run, stop_after, n: int, out: Path, **kwargs):
    """Run ``run`` stopped at the n-th step boundary, then resumed; returns the resumed run's Result."""
    stop_after(n)
    with pytest.raises(checkpoint.Interrupted):
        run(out=out, quiet=True, **kwargs)
    assert not out.exists() and out.with_name(f".{out.name}.partial").exists()
    stop_after(0)
    return api.resume(out)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "t"
    api.train(data="digits", model="convnet:width=8,depth=2", epochs=2, batch_size=64, out=out, quiet=True)
    return str(out / "model.safetensors")


def test_kd_with_learned_connectors_resumes_to_the_same_bytes(tmp_path, stop_after, teacher):
    kwargs = dict(data="digits", teacher=teacher, student="convnet:width=4,depth=2", losses=["ce", "hint"],
                  student_tap="features.0", epochs=4, batch_size=64, augment="shift:1", cache=False)
    api.distill(out=tmp_path / "reference", quiet=True, **kwargs)
    stopped_and_resumed(api.distill, stop_after, 30, tmp_path / "resumed", **kwargs)
    same_run(tmp_path / "reference", tmp_path / "resumed")


def test_kd_with_a_noisy_teacher_resumes_to_the_same_bytes(tmp_path, stop_after, teacher):
    """The noise stream is checkpointed: resumed mid-epoch, the run draws what the uninterrupted one drew."""
    kwargs = dict(data="digits", teacher=teacher, student="mlp:hidden=16", losses=["kd:T=1,noise=0.2", "ce:w=0.1"],
                  epochs=3, batch_size=64)
    api.distill(out=tmp_path / "reference", quiet=True, **kwargs)
    stopped_and_resumed(api.distill, stop_after, 30, tmp_path / "resumed", **kwargs)
    same_run(tmp_path / "reference", tmp_path / "resumed")


def test_datafree_resumes_in_the_students_training_with_the_transfer_set_kept(tmp_path, stop_after, teacher):
    kwargs = dict(teacher=teacher, method="dafl:iterations=4,batch=16,width=4", samples=300,
                  student="mlp:hidden=8", epochs=3, batch_size=64)
    api.distill_datafree(out=tmp_path / "reference", quiet=True, **kwargs)
    stopped_and_resumed(api.distill_datafree, stop_after, 8, tmp_path / "resumed", **kwargs)
    same_run(tmp_path / "reference", tmp_path / "resumed")


def test_a_chain_resumes_inside_its_second_stage(tmp_path, stop_after, teacher):
    kwargs = dict(data="digits", teacher=teacher, students=["mlp:hidden=16", "mlp:hidden=8"], epochs=3,
                  batch_size=64)
    api.chain(out=tmp_path / "reference", quiet=True, **kwargs)
    stopped_and_resumed(api.chain, stop_after, 3 * 19 + 25, tmp_path / "resumed", **kwargs)  # stage 1 has 57 steps
    same_run(tmp_path / "reference", tmp_path / "resumed")


def test_seeds_resume_with_the_seeds_still_missing(tmp_path, stop_after):
    kwargs = dict(data="digits", model="mlp:hidden=8", epochs=2, batch_size=64, command="train")
    api.repeat_over_seeds(api.train, [0, 1], out=tmp_path / "reference", quiet=True, **kwargs)
    stopped_and_resumed(api.repeat_over_seeds, stop_after, 2 * 19 + 5, tmp_path / "resumed", fn=api.train,
                        seeds=[0, 1], **kwargs)
    same_run(tmp_path / "reference", tmp_path / "resumed")


@pytest.mark.parametrize("method", ["dm:iterations=12,batch_real=16,model=[convnet:width=8,depth=2]",
                                    "bptt:iterations=12,steps=2,epochs=1,batch_real=64,model=[mlp:hidden=16]",
                                    "bptt:iterations=12,steps=1,epochs=2,batch_real=64,model=[mlp:hidden=16],"
                                    "init_net=random,lr_decay_every=3"])
def test_condense_resumes_to_the_same_set(tmp_path, stop_after, method):
    kwargs = dict(data="digits", method=method, ipc=2, checkpoint_every=4)
    api.condense_data(out=tmp_path / "reference", quiet=True, **kwargs)
    stopped_and_resumed(api.condense_data, stop_after, 7, tmp_path / "resumed", **kwargs)
    same_run(tmp_path / "reference", tmp_path / "resumed")


def test_a_resumed_condensation_counts_the_seconds_before_its_stop(tmp_path, stop_after, monkeypatch):
    """The budget's condense_seconds cover the whole run: the stopped part (to its checkpoint) and the resumed
    one. The stopped part runs on a clock that moves 1,000 s per reading, so its count dwarfs the resumed part."""
    import types

    from distillab.condense import method as method_module

    fast = {"t": 0.0}

    def perf_counter():
        fast["t"] += 1000.0
        return fast["t"]

    kwargs = dict(data="digits", method="dm:iterations=12,batch_real=16,model=[convnet:width=8,depth=2]", ipc=2,
                  checkpoint_every=4)
    monkeypatch.setattr(method_module, "time", types.SimpleNamespace(perf_counter=perf_counter))
    stop_after(7)
    with pytest.raises(checkpoint.Interrupted):
        api.condense_data(out=tmp_path / "resumed", quiet=True, **kwargs)
    saved = checkpoint.Checkpoints(tmp_path / ".resumed.partial/checkpoints/condense.safetensors").load()
    assert saved["iteration"] == 7 and saved["seconds"] >= 1000  # a stop request checkpoints where it stops
    monkeypatch.setattr(method_module, "time", time)
    stop_after(0)
    seconds = api.resume(tmp_path / "resumed").metrics["condense_seconds"]
    assert saved["seconds"] < seconds < saved["seconds"] + 60


@pytest.mark.parametrize("forged", ["soon", -5.0, float("inf"), True, 5.0])
def test_a_checkpoint_with_forged_seconds_is_refused_in_one_line(tmp_path, stop_after, forged):
    kwargs = dict(data="digits", method="dm:iterations=6,batch_real=16,model=[convnet:width=4,depth=2]", ipc=2)
    stop_after(3)
    with pytest.raises(checkpoint.Interrupted):
        api.condense_data(out=tmp_path / "run", quiet=True, **kwargs)
    saved = checkpoint.Checkpoints(tmp_path / ".run.partial/checkpoints/condense.safetensors")
    saved.save({**saved.load(), "seconds": forged})
    stop_after(0)
    if forged == 5.0:  # the same file with a true count resumes: what is refused is the forged value
        assert api.resume(tmp_path / "run").metrics["condense_seconds"] >= 5.0
        return
    with pytest.raises(DistillabError, match="seconds"):
        api.resume(tmp_path / "run")


def test_condense_resumes_inside_the_label_loop(tmp_path, stop_after):
    kwargs = dict(data="digits", method="dm:iterations=4,batch_real=16,model=[convnet:width=4,depth=2]", ipc=2,
                  labels="learn:iterations=8,steps=2,batch_real=32,model=[mlp:hidden=8]", checkpoint_every=3)
    api.condense_data(out=tmp_path / "reference", quiet=True, **kwargs)
    stop_after(9)  # one request check per iteration: the 4 of the method, then the 5th of the label loop
    with pytest.raises(checkpoint.Interrupted):
        api.condense_data(out=tmp_path / "resumed", quiet=True, **kwargs)
    assert (tmp_path / ".resumed.partial/checkpoints/condense-labels.safetensors").exists()
    stop_after(0)
    api.resume(tmp_path / "resumed")
    same_run(tmp_path / "reference", tmp_path / "resumed")


def test_evaluation_resumes_with_the_models_still_missing(tmp_path, stop_after):
    api.condense_data("digits", "random", 5, out=tmp_path / "set", quiet=True)
    kwargs = dict(path=str(tmp_path / "set/synset.safetensors"), models=["convnet:width=8,depth=2", "mlp:hidden=8"],
                  runs=2, epochs=6, dsa=True)
    reference = api.evaluate_synset(out=tmp_path / "reference", quiet=True, **kwargs)
    resumed = stopped_and_resumed(api.evaluate_synset, stop_after, 3, tmp_path / "resumed", **kwargs)
    for spec, r in reference.metrics["models"].items():
        assert resumed.metrics["models"][spec]["runs"] == r["runs"], spec


def test_a_changed_call_is_not_resumed(tmp_path, stop_after):
    stop_after(3)
    with pytest.raises(checkpoint.Interrupted):
        api.train(data="digits", model="mlp:hidden=8", epochs=3, out=tmp_path / "r", quiet=True)
    with pytest.raises(DistillabError, match="other options"):
        api.train(data="digits", model="mlp:hidden=8", epochs=4, out=tmp_path / "r", resume=True, quiet=True)


def test_two_runs_cannot_share_one_out(work):
    long = [*TRAIN[:TRAIN.index("--epochs")], "--epochs", "2000", "--batch-size", "32"]
    first = start(*long, "--out", "shared", "--quiet", cwd=work)
    wait_for(work / ".shared.partial/.lock", first)
    others = [start("train", "--data", "digits", "--model", "mlp:hidden=4", "--epochs", "1", "--out", "shared", *extra,
                    cwd=work) for extra in ([], ["--overwrite"])]
    for other in others:
        out, err = other.communicate(timeout=120)
        assert other.returncode == 2 and "another distillab run is writing" in err, (err, first.poll())
        assert len(err.strip().splitlines()) == 1
    assert first.poll() is None, "the first run should still be running"
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 143
    call = json.loads((work / ".shared.partial/call.json").read_text())
    assert call["kwargs"]["model"] == "mlp:hidden=32,dropout=0.2" and call["kwargs"]["epochs"] == 2000  # its own
    assert (work / ".shared.partial/checkpoints/fit.safetensors").exists() and not (work / "shared").exists()


def test_a_loss_that_turns_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    from distillab import data
    from distillab.checkpoint import Checkpoints
    from distillab.models import build_model
    from distillab.training import TrainConfig, fit, cross_entropy_objective

    splits = data.split(data.load("digits"))
    plain, steps = cross_entropy_objective(), {"n": 0}

    def turns_nan(model, x, y, idx):  # fine for two epochs (22 steps each), then NaN
        steps["n"] += 1
        terms = plain(model, x, y, idx)
        return {k: v * float("nan") for k, v in terms.items()} if steps["n"] > 44 else terms

    checkpoints = Checkpoints(tmp_path / "fit.safetensors", every=1)
    with pytest.raises(DistillabError, match="diverged at epoch 3.*last good checkpoint is kept"):
        fit(build_model("mlp:hidden=8", splits.input_shape, 10), splits, TrainConfig(epochs=5, batch_size=64),
            objective=turns_nan, checkpoints=checkpoints)
    saved = checkpoints.load()
    assert saved["epoch"] == 2 and all(torch.isfinite(v).all() for v in saved["live"]["model"][1].values())


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EROFS"])
def test_a_full_or_read_only_disk_ends_in_one_line_and_leaves_nothing(cli, tmp_path, monkeypatch, errno_name):
    import errno

    from distillab import outputs

    def fail(self, metrics):
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)), str(self.dir))

    monkeypatch.setattr(outputs.RunOutput, "write_metrics", fail)
    r = cli("train", "--data", "digits", "--model", "mlp:hidden=4", "--epochs", "1", "--checkpoint-every", "0",
            "--quiet", "--out", tmp_path / "o")
    assert r.code == 2 and r.err.startswith("distillab: error: ") and len(r.err.strip().splitlines()) == 1, r.err
    assert os.strerror(getattr(errno, errno_name)) in r.err
    assert not (tmp_path / "o").exists() and not (tmp_path / ".o.partial").exists()


def test_loops_without_a_checkpoint_stop_at_their_next_step_when_asked(monkeypatch):
    """A benchmark cell or a library call keeps no checkpoint: a signal must still stop it at a step boundary
    (before this, it ran to the loop's end -- a whole evaluation -- and only then stopped)."""
    from distillab import data, evaluation
    from distillab.condense import DM, condense
    from distillab.models import build_model
    from distillab.training import TrainConfig, fit

    splits = data.split(data.load("digits"))
    steps = []
    trained = evaluation.train_sequential

    def first_model_then_signal(models, *args, **kwargs):
        steps.append("model")
        out = trained(models, *args, **kwargs)
        monkeypatch.setitem(checkpoint._STOP, "requested", True)  # as SIGTERM during the first model would
        return out

    monkeypatch.setattr(evaluation, "train_sequential", first_model_then_signal)
    with pytest.raises(checkpoint.Interrupted):
        evaluation.evaluate_images(splits.train.x[:40], splits.train.y[:40], splits.test,
                                   Protocol(epochs=1, runs=3, models=("mlp:hidden=4",)))
    assert steps == ["model"] and not checkpoint._STOP["requested"]  # stopped after one model of three

    def signal_at(n):
        def on(*_):
            steps.append("step")
            if len(steps) == n:
                monkeypatch.setitem(checkpoint._STOP, "requested", True)
        return on

    steps.clear()
    with pytest.raises(checkpoint.Interrupted):
        condense(splits.train_set(), DM(iterations=20, batch_real=8, model="convnet:width=4,depth=1"), 1,
                 progress=signal_at(2))
    assert len(steps) == 2
    steps.clear()
    net = build_model("mlp:hidden=4", splits.input_shape, splits.num_classes)
    with pytest.raises(checkpoint.Interrupted):
        fit(net, splits, TrainConfig(epochs=3, batch_size=64), on_step=signal_at(3))
    assert len(steps) == 3


@pytest.mark.parametrize("run", ["condense", "evaluate", "train", "experts"])
def test_a_run_resumes_on_the_device_it_started_on(tmp_path, stop_after, monkeypatch, run):
    """A run started on another device than the default resumes on it (issue 29: condense and evaluate runs did
    not record the device and resumed on the CPU without a word). "cpu:0" is a device every machine has."""
    if run == "evaluate":
        api.condense_data("digits", "random", 2, out=tmp_path / "set", quiet=True)
    start = {"condense": lambda **kw: api.condense_data(
                 data="digits", method="dm:iterations=6,batch_real=16,model=[convnet:width=4,depth=2]", ipc=2, **kw),
             "evaluate": lambda **kw: api.evaluate_synset(str(tmp_path / "set/synset.safetensors"),
                                                          models=["mlp:hidden=8"], runs=4, epochs=3, **kw),
             "train": lambda **kw: api.train(data="digits", model="mlp:hidden=8", epochs=3, **kw),
             "experts": lambda **kw: api.experts("digits", "mlp:hidden=8", 4, 2, **kw)}[run]
    seen = []
    resolve = training.resolve_device
    for room in (runs.training, runs.evaluating, runs.condensing):  # where the runs read a device
        monkeypatch.setattr(room, "resolve_device", lambda device: seen.append(device) or resolve(device))
    stop_after(2)
    with pytest.raises(checkpoint.Interrupted):
        start(out=tmp_path / "run", quiet=True, device="cpu:0")
    assert "cpu:0" in seen
    seen.clear()
    stop_after(0)
    api.resume(tmp_path / "run")
    assert seen and set(seen) == {"cpu:0"}, seen


def test_a_resumed_condense_writes_the_same_bytes(tmp_path, stop_after):
    """Every file of a killed and resumed condense run equals the uninterrupted run's, compared with cmp: the set's
    file keeps no timings (they go to metrics.json, the one file that differs: seconds, memory, environment)."""
    kwargs = dict(data="digits", method="dm:iterations=12,batch_real=16,model=[convnet:width=8,depth=2]", ipc=2,
                  checkpoint_every=4)
    api.condense_data(out=tmp_path / "reference", quiet=True, **kwargs)
    stopped_and_resumed(api.condense_data, stop_after, 7, tmp_path / "resumed", **kwargs)
    files = sorted(str(p.relative_to(tmp_path / "reference")) for p in (tmp_path / "reference").rglob("*")
                   if p.is_file())
    assert "synset.safetensors" in files and files == sorted(
        str(p.relative_to(tmp_path / "resumed")) for p in (tmp_path / "resumed").rglob("*") if p.is_file())
    differ = [f for f in files if subprocess.run(["cmp", "-s", tmp_path / "reference" / f, tmp_path / "resumed" / f]
                                                 ).returncode != 0]
    assert differ == ["metrics.json"], differ
    budget = json.loads((tmp_path / "resumed/metrics.json").read_text())["budget"]
    assert budget["condense_seconds"] > 0 and "peak_rss_mb" in budget  # still reported, where timings belong


def test_a_resumed_training_run_writes_the_same_bytes_but_its_timings(tmp_path, stop_after):
    """What the README promises of a resumed train run: every file compares equal with cmp but metrics.json and
    metrics.jsonl, and metrics.jsonl differs only in each epoch's seconds."""
    kwargs = dict(data="digits", model="mlp:hidden=16", epochs=3, batch_size=64, augment="shift:1")
    api.train(out=tmp_path / "reference", quiet=True, **kwargs)
    stopped_and_resumed(api.train, stop_after, 19 + 7, tmp_path / "resumed", **kwargs)
    a, b = tmp_path / "reference", tmp_path / "resumed"
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    assert "model.safetensors" in files and files == sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    differ = [f for f in files if subprocess.run(["cmp", "-s", a / f, b / f]).returncode != 0]
    assert set(differ) <= {"metrics.json", "metrics.jsonl"}, differ
    steady = lambda p: [{k: v for k, v in json.loads(line).items() if k != "seconds"}  # noqa: E731
                        for line in p.read_text().splitlines()]
    assert steady(a / "metrics.jsonl") == steady(b / "metrics.jsonl")
