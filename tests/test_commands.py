"""The contract every command file keeps: a help line, examples that name it and parse, flags built without torch;
and the registry finds a command by its file alone."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from distillab import cli
from distillab.commands import Command, discover, registered

COMMANDS_DIR = Path(cli.__file__).parent / "commands"
COMMANDS = registered()
PLACEHOLDER = "..."  # stands for flags an example leaves out ('distillab kd ... --loss ...'): dropped before parsing


def _example_argv(example: str) -> list[str]:
    words = shlex.split(example.split("#")[0])  # a trailing '# comment' is no part of the command line
    return [w for w in words[1:] if w != PLACEHOLDER]


def test_every_command_file_holds_a_command():
    files = {p.stem.replace("_", "-") for p in COMMANDS_DIR.glob("*.py")} - {"--init--", "flags"}
    assert set(COMMANDS) == files


def test_the_commands_come_in_their_order():
    orders = [c.order for c in COMMANDS.values()]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    assert list(cli.build_parser().commands) == list(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_command_has_help_and_examples_naming_it(name):
    command = COMMANDS[name]
    assert isinstance(command, Command) and command.name == name and command.help.strip()
    assert command.examples and isinstance(command.examples, tuple)
    assert command.examples[0].startswith(f"distillab {name} ")
    for example in command.examples:  # a later one may show the next step with another command
        assert example.split()[:1] == ["distillab"] and example.split()[1] in COMMANDS, example


EXAMPLES = [(name, example) for name, command in sorted(COMMANDS.items()) for example in command.examples]


@pytest.mark.parametrize("name, example", EXAMPLES)
def test_every_example_parses(name, example, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # the run example's recipe, as its comment describes it
    (tmp_path / "recipe.yaml").write_text("command: train\nmodel: mlp:hidden=100\nepochs: 5\n")
    argv = _example_argv(example)
    args = cli._parse(cli.build_parser(), argv)
    assert args.command == (argv[0] if argv[0] != "run" else "train")


def test_every_flag_has_help():
    """Each flag, positional or optional, of every command says what it does in --help."""
    bare = [f"{name} {action.option_strings or action.dest}" for name, sub in cli.build_parser().commands.items()
            for action in sub._actions if not action.help]
    assert not bare, bare


def test_the_registry_finds_a_planted_command(tmp_path, monkeypatch):
    package = tmp_path / "planted_commands"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "hello.py").write_text(
        "from distillab.commands import Command\n\n"
        "COMMAND = Command(name='hello', order=1, help='say hello', arguments=lambda p: p.add_argument('--who'),\n"
        "                  examples=('distillab hello --who you',), run=lambda a: {'hello': a.who})\n")
    (package / "helpers.py").write_text("X = 1\n")  # a module without a COMMAND is no command
    monkeypatch.syspath_prepend(str(tmp_path))
    found = discover("planted_commands", [str(package)])
    assert list(found) == ["hello"] and found["hello"].run(type("Args", (), {"who": "you"})) == {"hello": "you"}


def test_building_every_commands_flags_imports_no_torch():
    code = "import sys, distillab.cli\ndistillab.cli.build_parser()\nprint('torch' in sys.modules, 'numpy' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]
