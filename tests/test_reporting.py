"""Progress that talks: one bar per run, a line per epoch, plain progress lines at a steady interval when stderr is
not a terminal; --log-level and --quiet; a short summary on stdout unless --json."""

import json
import os
import subprocess
import sys
import time

import pytest

from distillab import reporting


def test_a_redirected_log_is_never_silent_for_long(tmp_path):
    env = {**os.environ, "DISTILLAB_PROGRESS_SECONDS": "0.5", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "distillab", "condense", "--data", "digits", "--method",
                             "dm:iterations=120,batch_real=64,model=[convnet:width=16,depth=2]", "--ipc", "5",
                             "--out", str(tmp_path / "c")], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)
    stamps, lines = [], []
    for line in proc.stderr:  # a pipe, not a terminal
        stamps.append(time.monotonic())
        lines.append(line.rstrip())
    assert proc.wait() == 0
    progress = [line for line in lines if line.startswith("condense dm:") and "ETA" in line]
    assert len(progress) >= 3, lines
    work = [t for t, line in zip(stamps, lines) if "ETA" in line or "done" in line]
    assert max(b - a for a, b in zip(work, work[1:])) < 5  # lines keep coming (interval 0.5 s here, 30 s default)
    assert any(line.startswith("condense dm: done, 120 iterations") for line in lines)
    assert reporting.PROGRESS_SECONDS <= 30


def test_epoch_lines_summary_log_level_and_quiet(cli, tmp_path, capsys):
    from distillab.cli import main

    code = main(["train", "--data", "digits", "--model", "mlp:hidden=8", "--epochs", "2", "--out", str(tmp_path / "a")])
    out, err = capsys.readouterr()
    assert code == 0 and "train epoch 2/2: loss" in err and "val accuracy" in err
    assert out.startswith("test_accuracy: 0.") and "{" not in out  # a summary a person reads
    main(["train", "--data", "digits", "--model", "mlp:hidden=8", "--epochs", "2", "--out", str(tmp_path / "b"),
          "--log-level", "warning"])
    assert capsys.readouterr().err == ""
    r = cli("train", "--data", "digits", "--model", "mlp:hidden=8", "--epochs", "2", "--quiet", "--out", tmp_path / "c")
    assert r.err == "" and r.json["epochs"] == 2  # --quiet --json: the figures, nothing else
    code = main(["train", "--data", "digits", "--model", "mlp:hidden=8", "--epochs", "2", "--quiet", "--out",
                 str(tmp_path / "d")])
    assert code == 0 and capsys.readouterr() == ("", "")  # --quiet: silent, as the README says


def test_the_summary_shows_short_lists_of_plain_values(capsys):
    from distillab.cli import main, summary

    text = summary({"input_shape": [1, 8, 8], "classes": ["a", "b"], "suggested_temperature_range": [2, 8],
                    "long": list(range(100)), "nested": [[1, 2]], "flags": [True]})
    assert text.splitlines() == ["input_shape: 1, 8, 8", "classes: a, b", "suggested_temperature_range: 2, 8"]
    assert main(["data", "info", "digits"]) == 0
    out = capsys.readouterr().out
    assert "input_shape: 1, 8, 8" in out and "layout: images, 1 channel(s) of 8x8" in out and "classes: 0, 1," in out


def test_csv_and_tensorboard_loggers(cli, tmp_path):
    import csv

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    r = cli("train", "--data", "digits", "--model", "mlp:hidden=8", "--epochs", "2", "--log", "csv", "--log",
            "tensorboard", "--quiet", "--out", tmp_path / "t")
    assert r.code == 0, r.err
    rows = list(csv.DictReader(open(tmp_path / "t/metrics.csv")))
    assert [int(row["epoch"]) for row in rows] == [1, 2] and float(rows[1]["val_accuracy"]) > 0
    assert len(list(csv.DictReader(open(tmp_path / "t/steps.csv")))) == 2 * 10  # 1,214 images, batch 128
    assert (tmp_path / "t/metrics.jsonl").exists()  # JSONL stays
    events = EventAccumulator(str(tmp_path / "t/tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("epoch/val_accuracy")] == [1, 2]
    assert len(events.Scalars("step/loss")) == 2 * 10
    final = json.loads((tmp_path / "t/metrics.json").read_text())["test_accuracy"]
    assert [e.value for e in events.Scalars("final/test_accuracy")] == [pytest.approx(final)]
    c = cli("condense", "--data", "digits", "--method", "dm:iterations=3,batch_real=8,model=[convnet:width=4,depth=2]",
            "--ipc", "1", "--log", "tensorboard", "--quiet", "--out", tmp_path / "c")
    assert c.code == 0, c.err
    events = EventAccumulator(str(tmp_path / "c/tensorboard"))
    events.Reload()
    assert events.Tags()["images"] == ["synthetic set"] and len(events.Scalars("epoch/loss")) == 3


def test_two_runs_in_two_threads_keep_their_own_warnings(tmp_path, monkeypatch):
    """A warning shown in one run's thread goes to that run's metrics.json, not to a run beside it in another."""
    import threading

    from distillab import api, runs
    from distillab.reporting import Reporter

    fit = runs.training.fit

    def warning_fit(*args, **kwargs):
        if threading.current_thread().name == "A":
            Reporter().warn("only run A warns")
        return fit(*args, **kwargs)

    monkeypatch.setattr(runs.training, "fit", warning_fit)
    results = {}

    def run(name):
        results[name] = api.train(data="digits", model="mlp:hidden=4", epochs=1, out=tmp_path / name, quiet=True)

    threads = [threading.Thread(target=run, args=(name,), name=name) for name in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["A"].metrics["warnings"] == ["only run A warns"]
    assert "warnings" not in results["B"].metrics
    assert "warnings" not in json.loads((tmp_path / "B/metrics.json").read_text())
