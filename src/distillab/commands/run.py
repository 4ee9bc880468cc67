from .flags import Command, add_quiet, add_trust


def arguments(p):
    p.add_argument("recipe", help="RECIPE.yaml with 'command:' and the command's flags as keys")
    add_trust(p)
    add_quiet(p)


def run(a):  # never called: cli reads the recipe while parsing and runs its command instead
    raise AssertionError("'distillab run' is parsed into the recipe's own command")


COMMAND = Command(
    name="run", order=190, help="run a command from a YAML recipe whose keys are its flags", arguments=arguments,
    run=run, examples=("distillab run recipe.yaml      # e.g. 'command: train', 'model: mlp:hidden=100', 'epochs: 5'",))
