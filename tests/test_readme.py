"""Every command line in the README still parses, and its loss terms and method specs still resolve (the old
per-method flags included). Running them in full is the demo's and the benchmarks' job."""

import shlex
from pathlib import Path

import pytest

from distillab.api import loss_terms, method_from
from distillab.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _command_lines() -> list[str]:
    lines = []
    for line in README.read_text().splitlines():
        if line.startswith("    distillab "):
            command = line.split("#")[0].strip()
            command = command.replace("kd ...", "kd --teacher t.safetensors --student mlp:hidden=8")
            command = command.replace("[--quick]", "--quick")
            lines += [part.strip() for part in command.split("|")]
    return lines


LINES = _command_lines()


def test_the_readme_has_its_command_lines():
    assert len(LINES) >= 17 and any("--iterations" in line for line in LINES)


@pytest.mark.parametrize("line", LINES)
def test_readme_command_line_parses(line):
    args = build_parser().parse_args(shlex.split(line)[1:])
    if args.command == "kd":
        assert loss_terms(args.loss, args.temperature, args.alpha)
    if args.command == "condense":
        method_from(args.method, {"iterations": args.iterations, "lr_img": args.lr_img, "model": args.model,
                                  "batch_real": args.batch_real, "init": args.init, "dsa": args.dsa})
