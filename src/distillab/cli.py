"""Command line: parses flags and runs the command, which calls the Python API (``distillab.api``,
``distillab.bench``, ``distillab.demo``); prints the result (a summary, or JSON with --json).

Each command -- its flags, examples and call -- is one file in ``distillab.commands``, found there by discovery;
this module builds the parser from them, reads recipes (``distillab run``) and turns errors into one line
``distillab: error: ...`` on stderr and exit code 2. Defaults are not written here: a flag left out leaves the option
to the API (``TrainConfig``, ``Protocol``, a loss term's or a method's fields).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from pathlib import Path

from ._version import __version__
from .commands import registered
from .errors import DistillabError, require


class Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --epoch must not silently mean --epochs
        super().__init__(*args, **kwargs)

    def error(self, message):  # argparse would print usage and exit; we want the one-line error
        raise DistillabError(f"{message} (see '{self.prog} --help')")


def build_parser() -> Parser:
    """Every registered command as a subcommand: its flags, and its examples under its --help."""
    parser = Parser(prog="distillab", description="Machine teaching: model distillation and dataset distillation.")
    parser.add_argument("--version", action="version", version=f"distillab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    parser.commands = sub.choices
    for command in registered().values():
        p = sub.add_parser(command.name, help=command.help, formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="examples:\n" + "\n".join(f"  {line}" for line in command.examples))
        command.arguments(p)
    return parser


RECIPE_MAX_BYTES = 256 * 1024


def _recipe_loader():
    import yaml

    class RecipeLoader(yaml.SafeLoader):
        """SafeLoader without anchors and aliases: a few hundred bytes of nested aliases expand to gigabytes."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
                raise yaml.YAMLError("anchors and aliases (& and *) are not allowed in a recipe")
            return super().compose_node(parent, index)

    return RecipeLoader


RECIPE_MAX_DEPTH = 32  # a recipe is flags and their values: a few levels of lists and mappings at most


def _check_recipe_depth(text: str, path: Path) -> None:
    """Refuse a recipe nested deeper than RECIPE_MAX_DEPTH before it is built into objects (which recurses, so
    thousands of '[' would end in a RecursionError): the parser's events come one by one, without recursion."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            require(depth <= RECIPE_MAX_DEPTH, f"{path} nests lists or mappings more than {RECIPE_MAX_DEPTH} deep; "
                                               "a recipe is flags and their values")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def recipe_argv(recipe_path: str, parser: Parser, trust_code: bool = False) -> list[str]:
    """Turn a YAML recipe (keys = the command's flags) into an argv, refusing keys the command lacks."""
    import yaml

    path = Path(recipe_path)
    require(path.is_file(), f"no such recipe file: {path}")
    require(path.stat().st_size <= RECIPE_MAX_BYTES, f"{path} is larger than a recipe can be "
                                                      f"({RECIPE_MAX_BYTES // 1024} KiB)")
    try:
        text = path.read_bytes().decode("utf-8")
        _check_recipe_depth(text, path)
        recipe = yaml.load(text, Loader=_recipe_loader())  # a safe loader: a recipe can never execute code
    except UnicodeDecodeError:
        raise DistillabError(f"{path} is not a text file; a recipe is YAML, like 'command: train'") from None
    except RecursionError:  # not reached past the depth check; kept so no nesting can end in a traceback
        raise DistillabError(f"{path} nests too deeply to be a recipe") from None
    except yaml.YAMLError as e:
        raise DistillabError(f"{path} is not valid YAML ({' '.join(str(e).split())[:150]})") from None
    require(isinstance(recipe, dict), f"{path} must be a mapping of flags, like 'command: train' and 'epochs: 5'")
    from .api import code_named_in

    named = code_named_in(recipe)
    require(trust_code or not named, f"{path} names code to import ({named[0] if named else ''}); a recipe file makes "
                                     "distillab import code only with 'distillab run RECIPE --trust-code'")
    command = recipe.pop("command", None)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    require(isinstance(command, str) and command in subparsers.choices and command != "run",
            f"{path}: 'command' must be one of {', '.join(c for c in subparsers.choices if c != 'run')}")
    sub = subparsers.choices[command]
    options = {o: act for act in sub._actions for o in act.option_strings}
    positionals = [act for act in sub._actions if not act.option_strings]
    argv = [command]
    for act in positionals:
        if act.dest in recipe:
            value = recipe.pop(act.dest)
            argv += [str(v) for v in value] if isinstance(value, list) else [str(value)]
    for key, value in recipe.items():
        flag = "--" + str(key).replace("_", "-")
        act = options.get(flag)
        require(act is not None and flag not in ("--help",),
                f"{path}: unknown recipe key '{key}' for '{command}'; known keys: "
                f"{', '.join(sorted(o[2:] for o in options if o.startswith('--') and o != '--help'))}")
        if act.nargs == 0:  # a switch (store_true, store_false, store_const): present or not
            require(isinstance(value, bool), f"{path}: '{key}' takes true or false")
            if value:
                argv.append(flag)
        elif isinstance(act, argparse._AppendAction) or act.nargs in ("+", "*"):
            values = value if isinstance(value, list) else [value]
            if isinstance(act, argparse._AppendAction):
                for v in values:
                    argv += [flag, str(v)]
            else:
                argv += [flag, *map(str, values)]
        else:
            if isinstance(value, list):
                value = ",".join(map(str, value))
            argv += [flag, str(value)]
    return argv


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"distillab: warning: {message}", file=sys.stderr)


# Flags that may come with --resume: how to run, not what to compute.
WITH_RESUME = {"command", "resume", "quiet", "trust_code", "checkpoint_every", "json", "log_level"}

SUMMARY_LIST = 20  # a list longer than this is left to --json and metrics.json
SUMMARY_SKIP = ("seconds", "peak_rss_mb", "sha256", "stages", "runs", "recipe", "machine")


def summary(result: dict) -> str:
    """A few lines a person reads: the headline figures of a result (metrics.json, or --json, has them all)."""
    lines = []
    for key, value in result.items():
        if (any(key.endswith(s) for s in SUMMARY_SKIP) and not key.startswith("estimated_")) or key == "markdown":
            continue
        if isinstance(value, dict) and {"mean", "std"} <= set(value):
            lines.append(f"{key}: {_number(value['mean'])} +- {_number(value['std'])}")
        elif isinstance(value, dict) and all(isinstance(v, dict) and "mean" in v for v in value.values()) and value:
            lines += [f"{key} {k}: {_number(v['mean'])}" + (f" +- {_number(v['std'])}" if "std" in v else "")
                      for k, v in value.items()]
        elif isinstance(value, (str, int, float, bool)) or value is None:
            lines.append(f"{key}: {_number(value)}")
        elif isinstance(value, list) and 0 < len(value) <= SUMMARY_LIST and all(
                isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in value):
            lines.append(f"{key}: {', '.join(_number(v) for v in value)}")  # a shape, class names, a few figures
    return "\n".join(lines)


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _check_resume_alone(parser: Parser, args) -> None:
    if not getattr(args, "resume", None) or args.command == "bench":
        return
    defaults = {act.dest: act.default for act in parser.commands[args.command]._actions}
    given = sorted(k for k, v in vars(args).items() if k in defaults and k not in WITH_RESUME and v != defaults[k])
    require(not given, "--resume continues a run with the options it was started with; drop "
                       + ", ".join("--" + k.replace("_", "-") for k in given))


def _parse(parser: Parser, argv):
    """The command line as arguments; unknown flags point to the command's own --help. Loads no torch: --help and
    --version answer from here."""
    args, extra = parser.parse_known_args(argv)
    command = getattr(args, "command", None)
    if command == "tune":  # the flags tune does not know are the tuned command's own: parsed by its parser here
        args.inner, args.tuned_parser = _parse(parser, [args.tuned, *extra]), parser.commands[args.tuned]
        extra = []
    require(not extra, f"unrecognized arguments: {' '.join(extra)} (see 'distillab {command} --help')")
    if command == "run":
        style = (["--json"] if args.json else []) + (["--quiet"] if args.quiet else [])
        args = _parse(parser, recipe_argv(args.recipe, parser, args.trust_code) + style)
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    warnings.showwarning = _show_warning
    try:
        args = _parse(parser, argv)
        _check_resume_alone(parser, args)
    except DistillabError as e:
        print("distillab: error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    from .api import (Interrupted, distributed_setup, distributed_teardown, is_main_process, log_to_stderr,
                      signals_stop_loops, stop_signal, to_jsonable, tune_allocator)

    tune_allocator()
    log_to_stderr(*[level for level in [getattr(args, "log_level", None)] if level])  # its default: info
    signals_stop_loops()
    try:
        distributed_setup(getattr(args, "device", None) or "cpu")
        result = registered()[args.command].run(args)
        if result is not None and is_main_process():  # --quiet: nothing on stdout, unless --json asks for it
            if getattr(args, "json", False):
                print(json.dumps(to_jsonable(result), indent=2))
            elif not getattr(args, "quiet", False):
                print(summary(result))
        distributed_teardown()
        return 0
    except DistillabError as e:
        print("distillab: error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    except (Interrupted, KeyboardInterrupt) as e:
        out = getattr(e, "resume_out", None)
        how = f"; resume with: distillab {args.command} --resume {out}" if out else ""
        print(f"distillab: stopped{how}", file=sys.stderr)
        return 143 if stop_signal() == signal.SIGTERM else 130
    except OSError as e:
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"distillab: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line for the user; DISTILLAB_DEBUG=1 shows the traceback
        if os.environ.get("DISTILLAB_DEBUG"):
            raise
        print(f"distillab: error: internal error ({type(e).__name__}: {' '.join(str(e).split())[:200]}); please "
              "report it (DISTILLAB_DEBUG=1 shows where)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
