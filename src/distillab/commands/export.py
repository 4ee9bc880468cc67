from .flags import Command, add_quiet, add_trust


def arguments(p):
    p.add_argument("synset", metavar="FILE", help="model.safetensors or synset.safetensors")
    p.add_argument("--to", required=True, help="OUT.pt2 (torch.export), OUT.ts (TorchScript), OUT.onnx (needs the "
                                               "onnx package); for a set OUT.npz or OUT.png")
    p.add_argument("--overwrite", action="store_true", help="replace --to if it exists")
    add_trust(p)
    add_quiet(p)


def run(a):
    from ..api import export

    return export(a.synset, a.to, overwrite=a.overwrite, trust_code=a.trust_code)


COMMAND = Command(
    name="export", order=160, help="export a model to run without distillab (.pt2, .ts, .onnx), or a synthetic set "
                                   "as .npz (the npz: data format) or a PNG grid", arguments=arguments, run=run,
    examples=("distillab export runs/kd-x/model.safetensors --to student.pt2      # runs in plain PyTorch",
              "distillab export runs/condense-x/synset.safetensors --to synset.npz"))
