"""Help that teaches: every command's --help shows its defaults, examples and the registered names with their keys;
--help and --version answer without importing torch; an unknown flag points to the command's own help."""

import subprocess
import sys

import pytest

from distillab.cli import build_parser
from distillab.cli_text import TEXT, live

from conftest import assert_one_line_error


def test_the_help_texts_are_the_codes_own():
    """cli_text keeps what --help shows so that it needs no torch; every figure must be the code's."""
    assert TEXT == live(), "run 'python -m distillab.cli_text' and paste its TEXT into src/distillab/cli_text.py"


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["kd", "--help"], ["condense", "--help"]])
def test_help_and_version_do_not_import_torch(args):
    code = ("import sys\nfrom distillab.cli import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("command", sorted(build_parser().commands))
def test_every_command_shows_examples(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "examples: distillab " + command in text


def test_defaults_and_registered_names_are_shown(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["kd", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default 10" in text and "default 0.05" in text and "default 4.0" in text and "default 0.9" in text
    assert "rkd (w=1.0," in text and "distance=25.0" in text and "mlp:hidden" in " ".join(
        build_parser().commands["train"].format_help().split())


def test_an_unknown_flag_points_to_its_commands_help(cli):
    assert_one_line_error(cli("train", "--model", "mlp", "--colour", "red"), "see 'distillab train --help'")
