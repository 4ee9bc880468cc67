from .flags import Command, add_device, add_quiet, add_trust, api_default, given


def arguments(p):
    p.add_argument("model", help="model.safetensors")
    p.add_argument("--data", help="dataset (default: the one the model records)")
    p.add_argument("--split", choices=["train", "test"], help=api_default("predict", "split"))
    p.add_argument("--output", choices=["probs", "logits"], help=api_default("predict", "output"))
    p.add_argument("--top-k", type=int, help="only the K largest probabilities and their classes (with --output "
                                             "probs)")
    add_device(p)
    p.add_argument("--out", help="FILE.npz")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_trust(p)
    add_quiet(p)


def run(a):
    from ..api import predict

    return predict(a.model, a.data, top_k=a.top_k, out=a.out, overwrite=a.overwrite, quiet=a.quiet,
                   trust_code=a.trust_code, **given(split=a.split, output=a.output, device=a.device))


COMMAND = Command(
    name="predict", order=120, help="write a model's outputs as a black-box teacher would give them",
    arguments=arguments, run=run, examples=(
        "distillab predict T.safetensors --data mnist --output probs --top-k 5 --out api.npz",))
