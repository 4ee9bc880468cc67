"""docs/extending.md runs as written: its module registers a loss, a method, a data-free method and an audit from
outside the package, its Python and command-line examples work, and every part passes the shared contract."""

import re
import shlex
import sys
from pathlib import Path

import pytest

from distillab.data import DATASETS
from distillab.models import MODELS

from distillab.audits import AUDITS
from distillab.condense import METHODS
from distillab.datafree import DATAFREE
from distillab.kd import LOSSES

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """The page's module, importable as mylab; its registrations undone afterwards."""
    module = next(b for b in _blocks("python") if b.startswith("# mylab.py"))
    (tmp_path / "mylab.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("mylab", None)
    LOSSES.unregister("cosine")
    METHODS.unregister("medoids")
    DATAFREE.unregister("uniform")
    AUDITS.unregister("duplicates")
    MODELS.unregister("wide-linear")
    DATASETS.unregister("stripes")


def test_the_page_runs_as_written(workdir, cli, capsys):
    use = next(b for b in _blocks("python") if b.startswith("# use.py"))
    exec(compile(use, "use.py", "exec"), {})
    accuracy, images, flagged, stripes = capsys.readouterr().out.split()
    assert 0.5 < float(accuracy) <= 1 and int(images) == 50 and flagged == "False"  # medoids are distinct images
    assert float(stripes) > 0.9  # two classes anyone can tell apart: the source's images and labels reach training
    for line in _blocks("bash")[0].strip().splitlines():
        args = shlex.split(line)
        assert args[0] == "distillab"
        r = cli(*args[1:], "--quiet")
        assert r.code == 0, (line, r.err)
    assert (workdir / "runs/cosine-cli/model.safetensors").exists()
    for run in ("uniform", "uniform-cli"):  # the data-free method made a transfer set and taught a student
        assert (workdir / f"runs/{run}/transfer.safetensors").exists()
        assert (workdir / f"runs/{run}/model.safetensors").exists()
    assert r.json["models"]["convnet:width=16,depth=2"]["mean"] > 0.5  # the medoids set trains a model
    assert (workdir / "runs/duplicates-cli/audit.md").exists()
    check = next(b for b in _blocks("python") if b.startswith("# check.py"))
    exec(compile(check, "check.py", "exec"), {})


def test_registered_names_join_the_help_and_the_errors(workdir, cli):
    import mylab  # noqa: F401

    from distillab.condense import METHODS
    from distillab.kd import LOSSES

    assert "cosine (w=1.0, center=1)" in LOSSES.help() and "medoids (iterations=5)" in METHODS.help()
    from conftest import assert_one_line_error

    assert_one_line_error(cli("condense", "--method", "medoids:iterations=0", "--ipc", "1"), "at least 1")
    assert_one_line_error(cli("condense", "--method", "import:mylab:Nothing", "--ipc", "1"), "cannot import")


def test_the_command_file_on_the_page_is_a_command(tmp_path, monkeypatch):
    """The page's command file, dropped into a folder of commands, is found, builds its flags and runs."""
    from distillab import api, cli
    from distillab.commands import discover

    source = next(b for b in _blocks("python") if b.startswith("# src/distillab/commands/accuracy.py"))
    package = tmp_path / "page_commands"
    package.mkdir()
    (package / "__init__.py").write_text("")
    # the file's relative imports point into distillab's own commands folder, where it is meant to live
    (package / "accuracy.py").write_text(source.replace("from .flags", "from distillab.commands.flags")
                                         .replace("from ..api", "from distillab.api"))
    monkeypatch.syspath_prepend(str(tmp_path))
    command = discover("page_commands", [str(package)])["accuracy"]
    parser = cli.Parser(prog="distillab accuracy")
    command.arguments(parser)
    api.train(data="digits", model="mlp:hidden=16", epochs=5, out=tmp_path / "t", quiet=True)
    example = command.examples[0].split()[2:]
    args = parser.parse_args([str(tmp_path / "t" / "model.safetensors") if w.endswith(".safetensors") else w
                              for w in example] + ["--quiet"])
    figures = command.run(args)
    assert set(figures) == {"test_accuracy", "val_accuracy"} and 0.3 < figures["test_accuracy"] <= 1  # above chance (0.1)
    assert not (tmp_path / "runs").exists()  # nothing written
