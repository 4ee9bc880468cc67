from ..cli_text import TEXT
from ..errors import require
from .flags import (Command, add_loggers, add_output, add_resume, add_training, add_trust, default, resumed,
                    run_options, train_options)


def arguments(p):
    p.add_argument("--teacher", help="teacher model.safetensors (required)")
    p.add_argument("--method", help=f"NAME[:key=value,...] (required): {TEXT['datafree']}")
    p.add_argument("--student", help="student model spec (required; see --model of 'distillab train --help')")
    p.add_argument("--samples", type=int, help="transfer-set images (the method's option samples)")
    p.add_argument("--iterations", type=int, help="the method's synthesis budget (its option iterations)")
    p.add_argument("--temperature", type=float, help=f"of the kd loss ({default('hinton', 'temperature')}); not "
                                                     "with --loss")
    p.add_argument("--loss", action="append", help="loss term NAME[:key=value,...], repeatable (default kd at "
                                                   "--temperature, weight 1)")
    add_training(p, real_data=False)
    add_trust(p)
    add_output(p)
    add_resume(p, "epochs", "distill_datafree")
    add_loggers(p)


def run(a):
    from ..api import distill_datafree

    if a.resume:
        return resumed(a, "datafree")
    require(a.teacher and a.method and a.student, "datafree needs --teacher MODEL.safetensors, --method NAME and "
                                                  "--student SPEC, e.g. --method dafl --student lenet5-half")
    return distill_datafree(a.teacher, method=a.method, student=a.student, data=a.data, losses=a.loss,
                            temperature=a.temperature, samples=a.samples, iterations=a.iterations, out=a.out,
                            overwrite=a.overwrite, quiet=a.quiet, trust_code=a.trust_code,
                            **{k: v for k, v in train_options(a).items() if k not in ("pseudo", "pseudo_ratio")},
                            **run_options(a)).metrics


COMMAND = Command(
    name="datafree", order=80, help="distill a teacher without its training data: a transfer set made from the "
                                    "teacher alone, then KD", arguments=arguments, run=run, examples=(
        "distillab datafree --teacher T.safetensors --method dafl --student lenet5-half --epochs 30 --lr 0.01",
        "distillab datafree --teacher T.safetensors --method lopes:metadata=meta-all.safetensors "
        "--student mlp:hidden=800-800 --samples 24000 --iterations 300",
        "distillab datafree --teacher bn.safetensors --method deepinversion --student lenet5-half --quiet",
        "distillab datafree --teacher T.safetensors --method noise --student lenet5-half      # the floor"))
