from ..cli_text import TEXT
from ..errors import require
from .flags import Command, add_quiet, api_default, given


def arguments(p):
    p.add_argument("name", help=", ".join(TEXT["benchmarks"]))
    p.add_argument("--quick", action="store_true", help="the seconds-long version on digits")
    p.add_argument("--out", help="folder for NAME.json, NAME.md and the runs (default runs/bench)")
    p.add_argument("--workers", type=int,
                   help="processes for benchmarks made of independent cells (dd-mnist); finished cells are kept "
                        f"in OUT/work, so a rerun resumes ({api_default('run_benchmark', 'workers')})")
    p.add_argument("--resume", metavar="OUT", help="the same as --out OUT: a benchmark keeps its finished cells and "
                                                   "teachers there and takes them up again")
    p.add_argument("--protocol", help="dd-mnist, cross-arch, dm-budget: measure their sets by this evaluation "
                                      "protocol instead of their own (e.g. vico-dsa); those cells are kept apart")
    p.add_argument("--cells", nargs="+", metavar="PATTERN", default=(),
                   help="run only the cells whose names match (dd-mnist, e.g. 'dm-10-*' 'random-*-dc'); the table "
                        "shows these and the cells kept in OUT from earlier runs")
    add_quiet(p)


def run(a):
    from ..bench import run_benchmark

    require(not (a.resume and a.out and a.resume != a.out), "give --resume OUT or --out OUT, not both")
    return run_benchmark(a.name, quick=a.quick, out=a.resume or a.out, quiet=a.quiet, cells=tuple(a.cells),
                         protocol=a.protocol, **given(workers=a.workers))


COMMAND = Command(name="bench", order=180, help="run a benchmark (the papers' tables)", arguments=arguments, run=run,
                  examples=("distillab bench hinton-mnist --quick",
                            "distillab bench dd-mnist --workers 2 --out runs/bench"))
