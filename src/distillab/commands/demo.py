from .flags import Command, add_output


def arguments(p):
    p.add_argument("--quick", action="store_true", help="digits instead of MNIST: under 2 minutes")
    add_output(p)


def run(a):
    from ..demo import demo

    return demo(quick=a.quick, out=a.out, overwrite=a.overwrite, quiet=a.quiet).metrics


COMMAND = Command(name="demo", order=150, help="teacher -> student end to end, with a report", arguments=arguments,
                  run=run, examples=("distillab demo --quick      # 20 seconds on scikit-learn's digits",
                                     "distillab demo --out runs/demo      # MNIST, minutes"))
