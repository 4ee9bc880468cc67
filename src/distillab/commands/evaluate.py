from ..cli_text import TEXT
from ..errors import require
from .flags import (Command, add_compile, add_device, add_loggers, add_output, add_resume, add_trust, api_default, default, given, resumed,
                    run_options)


def arguments(p):
    Protocol = "protocol"
    p.add_argument("model", nargs="*", default=[], metavar="FILE",
                   help="model.safetensors, or one or more synset.safetensors of one dataset (several sets or "
                        "--models: a matrix, one row per set, one column per model: matrix.md, matrix.png)")
    p.add_argument("--data", help="dataset (default: the one the file records)")
    add_device(p)
    g = p.add_argument_group("synthetic sets: the evaluation protocol (defaults: its options dataclass, "
                             "distillab.protocols; the flags below set its options)")
    g.add_argument("--protocol", help=f"NAME[:key=value,...] (default distillab): {TEXT['protocols']}")
    g.add_argument("--models", nargs="+", help=f"model specs to train ({default(Protocol, 'models')})")
    g.add_argument("--runs", type=int, help=f"fresh models per spec ({default(Protocol, 'runs')})")
    g.add_argument("--epochs", type=int, help=default(Protocol, "epochs"))
    g.add_argument("--dsa", action="store_true", default=None,
                   help="differentiable siamese augmentation while training")
    g.add_argument("--augment", help="none, or dc: the reference's non-differentiable augmentation (crop, scale or "
                                     "rotate, drawn per image; not with --dsa)")
    g.add_argument("--seed", type=int, help=f"seeds the models' initialisation and draws "
                                            f"({api_default('evaluate_synset', 'seed')})")
    g.add_argument("--vectorise", action="store_true", default=None,
                   help="train the runs together (torch.func vmap); slower than one at a time on 2-core CPUs here")
    add_compile(g, api_default("evaluate_synset", "compile"))
    add_trust(p)
    add_output(p)
    add_resume(p)
    add_loggers(p)


def run(a):
    from ..api import evaluate

    if a.resume:
        return resumed(a, "evaluate")
    require(a.model, "evaluate needs a model.safetensors or synset.safetensors file")
    return evaluate(a.model[0] if len(a.model) == 1 else a.model, a.data, protocol=a.protocol,
                    **given(device=a.device), models=a.models, runs=a.runs, epochs=a.epochs, dsa=a.dsa,
                    augment=a.augment, seed=a.seed, vectorise=a.vectorise, **given(compile=a.compile), out=a.out, overwrite=a.overwrite,
                    quiet=a.quiet, trust_code=a.trust_code, log=run_options(a).get("log")).metrics


COMMAND = Command(
    name="evaluate", order=40, help="evaluate a saved model, or a synthetic set by an evaluation protocol",
    arguments=arguments, run=run, examples=(
        "distillab evaluate runs/kd-x/model.safetensors --data digits",
        "distillab evaluate runs/condense-x/synset.safetensors --models convnet:width=128,depth=3 --runs 5 --dsa",
        "distillab evaluate --resume runs/evaluate-x"))
