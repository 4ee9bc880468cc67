from ..cli_text import TEXT
from ..errors import require
from .flags import (IMPORT_PREFIX, Command, add_condense_shorthands, add_device, add_loggers, add_output, add_resume,
                    add_trust, api_default, condense_shorthands, given, resumed, run_options)


def arguments(p):
    p.add_argument("--data", help=f"{TEXT['datasets']} ({api_default('condense_data', 'data')})")
    p.add_argument("--method", help=f"NAME[:key=value,...] (required): {TEXT['methods']}; or "
                                    f"{IMPORT_PREFIX}pkg.module:Class[:key=value,...]")
    p.add_argument("--ipc", type=int, help="images per class (required)")
    p.add_argument("--labels", help="hard (default); learn[:key=value,...] (soft labels learned as "
                                    f"logits: {TEXT['labels']}); teacher:MODEL_FILE (a trained model's outputs)")
    p.add_argument("--dry-run", action="store_true", help="time a few iterations and print the estimated time and "
                                                          "memory of the run; writes nothing")
    p.add_argument("--protocol", help="NAME[:key=value,...]: measure the set on the test split by this evaluation "
                                      "protocol too (see 'distillab evaluate --help'); figures in metrics.json")
    add_condense_shorthands(p)
    p.add_argument("--seed", type=int, help=f"seeds the method's draws ({api_default('condense_data', 'seed')})")
    p.add_argument("--val-size", type=int, help="validation images carved from the training data "
                                                "(default 10%%, at most 5000)")
    p.add_argument("--split-seed", type=int,
                   help=f"seed of the validation split ({api_default('condense_data', 'split_seed')})")
    add_device(p)
    add_output(p)
    add_resume(p, "iterations", "condense_data")
    add_trust(p)
    add_loggers(p)


def run(a):
    from ..api import condense_data

    if a.resume:
        return resumed(a, "condense")
    require(a.method and a.ipc is not None, "condense needs --method NAME and --ipc N, e.g. --method dm --ipc 10")
    shorthands = condense_shorthands(a)
    given_flags = given(data=a.data, labels=a.labels, seed=a.seed, split_seed=a.split_seed, device=a.device)
    if a.dry_run:
        from ..api import condense_estimate

        require(not (a.out or a.resume or a.protocol), "--dry-run writes nothing; drop --out/--resume/--protocol")
        return condense_estimate(method=a.method, ipc=a.ipc, val_size=a.val_size, trust_code=a.trust_code,
                                 **given_flags, **shorthands)
    return condense_data(method=a.method, ipc=a.ipc, val_size=a.val_size, out=a.out, overwrite=a.overwrite,
                         quiet=a.quiet, protocol=a.protocol, trust_code=a.trust_code, **given_flags, **shorthands,
                         **run_options(a)).metrics


COMMAND = Command(
    name="condense", order=50, help="distill a dataset into a few synthetic images per class", arguments=arguments,
    run=run, examples=(
        "distillab condense --data digits --method dm --ipc 10",
        "distillab condense --data mnist --method dm:iterations=1000,batch_real=256 --ipc 10",
        "distillab condense --data mnist --method bptt:model=[lenet5:init=xavier],init_net=random --ipc 10"))
