from ..cli_text import TEXT
from .flags import (Command, add_device, add_loggers, add_output, add_resume, api_default, given, resumed,
                    run_options)


def _expert_default(name: str) -> str:
    """``default X`` from cli_text when it lists the experts' defaults (distillab.trajectories.ExpertConfig)."""
    section = TEXT.get("experts") or {}
    return f"default {section[name]}" if name in section else "default: distillab.trajectories.ExpertConfig"


def arguments(p):
    p.add_argument("--data", help=f"{TEXT['datasets']} ({api_default('experts', 'data')})")
    p.add_argument("--model", help=f"model spec without batch norm or dropout ({_expert_default('model')}); mtt's "
                                   "model option must name the same")
    p.add_argument("--experts", type=int, help=f"how many experts ({_expert_default('experts')})")
    p.add_argument("--epochs", type=int, help=f"epochs per expert, one trajectory row each "
                                              f"({_expert_default('epochs')})")
    p.add_argument("--lr", type=float, help=f"SGD learning rate ({_expert_default('lr')})")
    p.add_argument("--momentum", type=float, help=_expert_default("momentum"))
    p.add_argument("--weight-decay", type=float, help=_expert_default("weight_decay"))
    p.add_argument("--batch-size", type=int, help=_expert_default("batch_size"))
    p.add_argument("--no-dsa", action="store_false", dest="dsa", default=None,
                   help="no differentiable siamese augmentation while the experts train")
    p.add_argument("--seed", type=int, help=f"expert i draws from the stream ('expert', i) of this seed "
                                            f"({_expert_default('seed')})")
    add_device(p)
    p.add_argument("--val-size", type=int, help="validation images carved from the training data, as condense "
                                                "carves them (default 10%%, at most 5000)")
    p.add_argument("--split-seed", type=int,
                   help=f"seed of the validation split ({api_default('experts', 'split_seed')})")
    add_output(p)
    add_resume(p)
    add_loggers(p)


def run(a):
    from ..api import experts

    if a.resume:
        return resumed(a, "experts")
    return experts(model=a.model, experts=a.experts, epochs=a.epochs, out=a.out, overwrite=a.overwrite,
                   val_size=a.val_size, quiet=a.quiet, **given(data=a.data, split_seed=a.split_seed),
                   **{k: getattr(a, k) for k in ("lr", "momentum", "weight_decay", "batch_size", "dsa", "seed",
                                                 "device") if getattr(a, k) is not None}, **run_options(a)).metrics


COMMAND = Command(
    name="experts", order=60, help="train expert trajectories for trajectory matching (--method mtt)",
    arguments=arguments, run=run, examples=(
        "distillab experts --data mnist --model convnet:width=128,depth=3 --experts 10 --epochs 15 "
        "--out runs/experts-mnist",
        "distillab condense --data mnist --method mtt:experts=runs/experts-mnist --ipc 10",
        "distillab experts --resume runs/experts-mnist      # after a kill or Ctrl-C"))
