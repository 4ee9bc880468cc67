from .flags import Command, add_quiet, add_trust


def arguments(p):
    p.add_argument("model", help="teacher model.safetensors")
    p.add_argument("--data", help="dataset (default: the one the model was trained on)")
    add_trust(p)
    add_quiet(p)


def run(a):
    from ..api import inspect_teacher

    return inspect_teacher(a.model, a.data, quiet=a.quiet, trust_code=a.trust_code)


COMMAND = Command(
    name="inspect", order=30, help="a dark-knowledge meter for a teacher", arguments=arguments, run=run, examples=(
        "distillab inspect runs/t/model.safetensors", "distillab inspect T.safetensors --data mnist"))
