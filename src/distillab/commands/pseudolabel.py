from ..errors import require
from .flags import Command, add_device, add_quiet, add_trust, default, given


def arguments(p):
    p.add_argument("--teacher", help="teacher model.safetensors (required)")
    p.add_argument("--data", help="the unlabeled images (required): npz:PATH (an 'x' without 'y'), folder:PATH (image "
                                  "files directly in it), or a labelled dataset, whose labels are not used")
    p.add_argument("--transforms", help="views averaged besides the original, comma-joined: identity (none: a single "
                                        "pass), shift (+-2 px), scale (0.9, 1.1), rotate (+-10 degrees), flip "
                                        f"({default('pseudolabel', 'transforms')})")
    p.add_argument("--threshold", type=float, help="keep the images whose averaged top probability is at least this "
                                                   f"({default('pseudolabel', 'threshold')}: all)")
    p.add_argument("--soft", action="store_true", default=None,
                   help="keep the averaged probabilities as soft labels instead of the most likely class")
    add_device(p)
    p.add_argument("--out", help="FILE.npz (default runs/pseudolabel-<timestamp>.npz)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_trust(p)
    add_quiet(p)


def run(a):
    from ..api import pseudolabel

    require(a.teacher and a.data, "pseudolabel needs --teacher MODEL.safetensors and --data UNLABELED (npz:PATH, "
                                  "folder:PATH or a dataset)")
    return pseudolabel(a.teacher, a.data, transforms=a.transforms, threshold=a.threshold, soft=a.soft, out=a.out,
                       overwrite=a.overwrite, **given(device=a.device), quiet=a.quiet, trust_code=a.trust_code)


COMMAND = Command(
    name="pseudolabel", order=130, help="label unlabeled images by a teacher's predictions averaged over "
                                        "transformed views (omni-supervised learning)", arguments=arguments, run=run,
    examples=(
        "distillab pseudolabel --teacher T.safetensors --data npz:unlabeled.npz --transforms shift,scale,rotate "
        "--out labels.npz",
        "distillab train --data npz:labeled.npz --model lenet5 --pseudo labels.npz --pseudo-ratio 6:4",
        "distillab pseudolabel --teacher T.safetensors --data folder:photos --transforms flip,scale --threshold 0.9 "
        "--soft --out soft.npz"))
