"""distillab tune: the flags tune does not know are the tuned command's own; cli parses them with that command's
parser and hands both over (``args.inner``, ``args.tuned_parser``), so this file needs nothing from cli."""

import argparse

from ..errors import DistillabError, require
from .flags import Command, add_output, api_default, condense_shorthands, default, given, seed_list
from .kd import kd_keywords
from .train import train_keywords


def arguments(p):
    Protocol = "protocol"
    p.add_argument("tuned", choices=["train", "kd", "condense"],
                   help="the command to tune; its own flags follow (they are fixed)")
    p.add_argument("--grid", action="append", metavar="FLAG=V1,V2,...",
                   help="a flag of the command and the values to try, e.g. --grid lr=0.01,0.05 --grid temperature=2,4 "
                        "(repeatable; every combination is a trial); for condense also an option of the method, "
                        "e.g. --method dm --grid momentum=0.5,0.9 --grid clamp=none,end")
    p.add_argument("--budget", type=float, help="minutes after which no new trial starts (default: all trials)")
    p.add_argument("--final-seeds", type=seed_list,
                   help="seeds of the best recipe's final runs, the only ones measured on the test set "
                        f"({api_default('tune', 'seeds')})")
    g = p.add_argument_group("tune condense: how a set is scored (fresh models trained on it by the protocol of "
                             "'distillab evaluate'; trials on the validation split, final runs on the test split)")
    g.add_argument("--protocol", help="NAME[:key=value,...]: the evaluation protocol that scores a set (default "
                                      "distillab); the --eval-* flags set its options")
    g.add_argument("--eval-models", nargs="+", help=f"model specs ({default(Protocol, 'models')})")
    g.add_argument("--eval-runs", type=int, help="models per spec in a trial (default 2: enough to rank recipes)")
    g.add_argument("--eval-epochs", type=int, help=default(Protocol, "epochs"))
    g.add_argument("--eval-dsa", action="store_true", default=None, help="DSA while training the models")
    g.add_argument("--eval-augment", help="none, or dc (the reference's augmentation; not with --eval-dsa)")
    g.add_argument("--final-runs", type=int, help=f"models per spec in a final run ({default(Protocol, 'runs')})")
    g.add_argument("--eval-as-made", action="store_true", default=None,
                   help="score by the models trained the way the set was made (bptt: its learned schedule), not by "
                        "the protocol's")
    add_output(p)


# flags whose API keyword has another name
GRID_KWARGS = {"loss": "losses", "cache_teacher": "cache"}


def run(a):
    from ..api import method_grid_specs, method_options_of, tune

    command, inner = a.tuned_parser, a.inner
    require(not getattr(inner, "seeds", None) and (a.tuned != "condense" or not inner.seed),
            "tune runs its final seeds itself (--final-seeds); drop --seeds / --seed")
    scoring = {k: getattr(a, k) for k in ("protocol", "eval_models", "eval_runs", "eval_epochs", "eval_dsa",
                                          "eval_augment", "final_runs", "eval_as_made") if getattr(a, k) is not None}
    require(a.tuned == "condense" or not scoring,
            "--protocol, --eval-* and --final-runs say how tune condense scores a set; tune train and kd score by validation "
            "accuracy: drop them")
    require(not getattr(inner, "resume", None) and not getattr(inner, "chain", None)
            and not getattr(inner, "dry_run", None), f"tune runs plain {a.tuned} runs: drop --resume, --chain, --dry-run")
    require(a.grid, "tune needs at least one --grid FLAG=V1,V2, e.g. --grid lr=0.01,0.05")
    if a.tuned == "kd":
        require(inner.student and (inner.teacher or inner.teacher_outputs or inner.teacher_url),
                "tune kd needs the kd flags: --teacher (or --teacher-outputs, --teacher-url) and --student")
        base = kd_keywords(inner)
    elif a.tuned == "condense":
        require(inner.method and inner.ipc is not None, "tune condense needs --method NAME and --ipc N")
        protocol = {k[5:]: v for k, v in scoring.items() if k.startswith("eval_") and k != "eval_as_made"}
        if "models" in protocol:
            protocol["models"] = tuple(protocol["models"])
        protocol["name"] = a.protocol
        base = {"method": inner.method, "ipc": inner.ipc, "val_size": inner.val_size,
                **given(data=inner.data, labels=inner.labels, split_seed=inner.split_seed, device=inner.device),
                "trust_code": inner.trust_code, "protocol": protocol, "final_runs": a.final_runs,
                "as_made": bool(a.eval_as_made), **given(**condense_shorthands(inner))}
    else:
        require(inner.model, "tune train needs --model SPEC")
        base = train_keywords(inner)
    actions = {o: act for act in command._actions for o in act.option_strings}
    method_options = set(method_options_of(inner.method, trust_code=inner.trust_code) if a.tuned == "condense" else ())
    grid, method_grid = {}, {}
    for item in a.grid:
        flag, eq, values = item.partition("=")
        flag = "--" + flag.strip().lstrip("-").replace("_", "-")
        require(eq and values, f"--grid takes FLAG=V1,V2,..., got '{item}'")
        action = actions.get(flag)
        option = flag[2:].replace("-", "_")
        if action is None and option in method_options:  # an option of the method without a flag of its own
            require(option not in method_grid, f"--grid {option} is given twice; give it once")
            method_grid[option] = values.split(",")
            continue
        require(action is not None and action.dest not in ("out", "overwrite", "seed", "seeds", "resume", "quiet"),
                f"--grid {flag[2:]}: {a.tuned} has no such flag to tune (see 'distillab {a.tuned} --help')"
                + (f" and --method {inner.method} no such option" if a.tuned == "condense" else ""))
        typed = []
        for text in values.split(","):
            try:
                value = action.type(text) if action.type else text
            except (ValueError, argparse.ArgumentTypeError):
                raise DistillabError(f"--grid {flag[2:]}: '{text}' is not a valid value") from None
            if action.choices and value not in action.choices:
                raise DistillabError(f"--grid {flag[2:]}: '{text}' is not one of {', '.join(map(str, action.choices))}")
            typed.append([value] if isinstance(action, argparse._AppendAction) else value)
        key = GRID_KWARGS.get(action.dest, action.dest)
        require(base.get(key) in (None, command.get_default(action.dest)) and key not in grid,
                f"--grid {flag[2:]}: {flag} is also given as a fixed flag (or twice in the grid); give it in one place")
        base.pop(key, None)  # the grid sets it
        grid[key] = typed
    if method_grid:
        grid = {"method": method_grid_specs(inner.method, method_grid, trust_code=inner.trust_code), **grid}
        base.pop("method")
    base.pop("quiet", None)
    return tune(a.tuned, grid, **given(seeds=a.final_seeds), budget=a.budget, out=a.out, overwrite=a.overwrite,
                quiet=a.quiet, **base).metrics


COMMAND = Command(
    name="tune", order=110, help="a grid search for train, kd or condense: trials scored on the validation split "
                                 "with the test split sealed, the best re-run with several seeds and only then "
                                 "measured", arguments=arguments, run=run, examples=(
        "distillab tune train --data digits --model mlp:hidden=64 --grid lr=0.01,0.05,0.1 --grid epochs=10,20",
        "distillab tune kd --data mnist --teacher T.safetensors --student mlp:hidden=800-800 --grid "
        "temperature=2,4,8 --grid lr=0.01,0.05 --budget 120 --final-seeds 0,1,2 --out runs/tune-kd"))
