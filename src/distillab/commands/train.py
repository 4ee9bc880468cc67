from ..cli_text import TEXT
from ..errors import require
from .flags import (Command, add_loggers, add_output, add_resume, add_training, given, resumed, run_options,
                    train_options)


def arguments(p):
    p.add_argument("--model", help=f"model spec (required), e.g. convnet:width=32: {TEXT['models']}; or "
                                   "import:pkg.module:factory[:key=value,...] (factory(input_shape=, num_classes=))")
    add_training(p)
    add_output(p)
    add_resume(p, "epochs", "train")
    add_loggers(p)


def train_keywords(a) -> dict:
    """What train() gets from the flags besides the output (tune train passes the same)."""
    return dict(model=a.model, val_size=a.val_size, quiet=a.quiet, **given(data=a.data, split_seed=a.split_seed),
                **train_options(a), **run_options(a))


def run(a):
    from ..api import repeat_over_seeds, train

    if a.resume:
        return resumed(a, "train")
    require(a.model, "train needs --model SPEC, e.g. --model mlp:hidden=100")
    kwargs = train_keywords(a)
    if a.seeds:
        return repeat_over_seeds(train, a.seeds, out=a.out, overwrite=a.overwrite, command="train", **kwargs).metrics
    return train(out=a.out, overwrite=a.overwrite, **kwargs).metrics


COMMAND = Command(
    name="train", order=10, help="train a model with cross-entropy", arguments=arguments, run=run, examples=(
        "distillab train --data digits --model convnet:width=32,depth=2 --epochs 30",
        "distillab train --data mnist --model mlp:hidden=1200-1200,dropout=0.5 --augment shift:2 --seeds 0,1,2",
        "distillab train --resume runs/train-20261128-101500      # after a kill or Ctrl-C"))
