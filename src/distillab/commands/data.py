from ..cli_text import TEXT
from .flags import Command, add_quiet


def arguments(p):
    p.add_argument("action", choices=["fetch", "info"])
    p.add_argument("name", help=TEXT["datasets"])
    add_quiet(p)


def run(a):
    from ..api import data_fetch, data_info

    return data_fetch(a.name) if a.action == "fetch" else data_info(a.name)


COMMAND = Command(name="data", order=140, help="fetch or describe a dataset", arguments=arguments, run=run,
                  examples=("distillab data fetch mnist", "distillab data info digits"))
