import json
from pathlib import Path

import numpy as np
import pytest

from distillab import checkpoint
from distillab.cli import main


REPOSITORY_RUNS = Path(__file__).resolve().parents[1] / "runs"


def _repository_runs() -> set[str]:
    return set(p.name for p in REPOSITORY_RUNS.iterdir()) if REPOSITORY_RUNS.is_dir() else set()


@pytest.fixture(autouse=True)
def _nothing_written_into_the_repository():
    """A test writes under its tmp_path: a run folder left in the repository's own runs/ (a default --out) fails it."""
    before = _repository_runs()
    yield
    new = sorted(_repository_runs() - before)
    assert not new, f"this test wrote {new} into {REPOSITORY_RUNS}: give its runs an out= under tmp_path"


class CliResult:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    @property
    def json(self):
        return json.loads(self.out)


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process; returns exit code, stdout and stderr."""
    def run(*args):
        args = [str(a) for a in args]
        if args and not {"--help", "-h", "--version"} & set(args):
            args.append("--json")  # tests read the full result; people get a summary
        code = main(args)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)
    return run


@pytest.fixture
def stop_after(monkeypatch):
    """``stop_after(n)``: the n-th step boundary of a run sees a stop request, as SIGTERM would make it (0: none)."""
    def arm(n: int):
        calls = {"n": 0}

        def requested():
            calls["n"] += 1
            return calls["n"] == n

        monkeypatch.setattr(checkpoint, "stop_requested", requested)
    return arm


def assert_one_line_error(result, *fragments):
    assert result.code == 2, (result.code, result.err)
    lines = [line for line in result.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("distillab: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory):
    """A small teacher trained once on digits for the whole session."""
    from distillab import train

    out = tmp_path_factory.mktemp("teacher") / "run"
    train(data="digits", model="mlp:hidden=64", epochs=15, lr=0.05, batch_size=64, out=out, quiet=True)
    return out / "model.safetensors"


def write_npz(path: Path, n=60, classes=3, size=8, channels=None, seed=0, with_test=False):
    rng = np.random.default_rng(seed)
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    y = np.arange(n) % classes
    x = (rng.random(shape) * 0.3).astype(np.float32)
    x[..., : size // 2, :] += (y / classes).reshape((-1,) + (1,) * (x.ndim - 1))  # learnable signal
    arrays = {"x": x, "y": y}
    if with_test:
        arrays.update(x_test=x[:20], y_test=y[:20])
    np.savez(path, **arrays)
    return path


def pytest_configure(config):
    """Under pytest-xdist (make test runs two workers on two cores) each worker keeps to one thread: two 2-thread
    torch processes on 2 cores slow each other several times over."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"  # and the subprocesses tests start
