from ..cli_text import TEXT
from ..errors import require
from .flags import Command, add_quiet, api_default, given


def arguments(p):
    p.add_argument("action", choices=["fetch", "info", "export"],
                   help="fetch: download it into the cache; info: what it holds; export: its rows in its own order "
                        "(.npz), for a teacher outside distillab to answer")
    p.add_argument("name", help=TEXT["datasets"])
    p.add_argument("--split", choices=["train", "test"],
                   help=f"export: which rows ({api_default('data_export', 'split')})")
    p.add_argument("--out", help="export: FILE.npz (default runs/data-SPLIT-<timestamp>.npz)")
    p.add_argument("--overwrite", action="store_true", help="export: replace --out if it exists")
    add_quiet(p)


def run(a):
    from ..api import data_export, data_fetch, data_info

    if a.action == "export":
        return data_export(a.name, out=a.out, overwrite=a.overwrite, quiet=a.quiet, **given(split=a.split))
    require(a.split is None and a.out is None and not a.overwrite, "--split, --out and --overwrite go with export")
    return data_fetch(a.name) if a.action == "fetch" else data_info(a.name)


COMMAND = Command(name="data", order=140, help="fetch, describe or export a dataset", arguments=arguments, run=run,
                  examples=("distillab data fetch mnist", "distillab data info digits",
                            "distillab data export mnist --split train --out rows.npz      # for a foreign teacher"))
