from ..cli_text import TEXT
from .flags import Command, add_quiet


def arguments(p):
    p.add_argument("file", metavar="FILE", help="their torch file: VICO res_*.pt, MTT images_best.pt or images_N.pt "
                                                "(read with torch.load(weights_only=True) only)")
    p.add_argument("--format", required=True, choices=["vico", "mtt"], help="which code wrote FILE")
    p.add_argument("--data", required=True, help=f"the dataset the set was made from (the file does not say): "
                                                 f"{TEXT['datasets']}")
    p.add_argument("--out", required=True, help="the FILE.safetensors to write")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--experiment", type=int, help="vico: which experiment of FILE (default 0)")
    p.add_argument("--labels", help="mtt: the labels file (default labels_X.pt beside images_X.pt)")
    add_quiet(p)


def run(a):
    from ..api import import_synset

    return import_synset(a.file, format=a.format, data=a.data, out=a.out, overwrite=a.overwrite,
                         experiment=a.experiment, labels=a.labels, quiet=a.quiet)


COMMAND = Command(
    name="import-synset", order=170, help="read a synthetic set the reference code made (VICO DC/DSA/DM, MTT) into "
                                          "a synset.safetensors that evaluate takes", arguments=arguments, run=run,
    examples=("distillab import-synset res_DM_MNIST_ConvNet_10ipc.pt --format vico --data mnist --out dm.safetensors",
              "distillab import-synset logged_files/CIFAR10/run/images_best.pt --format mtt --data cifar10 "
              "--out mtt.safetensors"))
