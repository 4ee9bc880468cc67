from .flags import Command, add_quiet, add_trust, api_default, given


def arguments(p):
    p.add_argument("teacher", help="teacher model.safetensors")
    p.add_argument("--data", help="its training data (default: the dataset the teacher records)")
    p.add_argument("--records", choices=["top", "all", "spectral"],
                   help="top: the temperature-scaled logits; all: every layer's pre-activations (full covariance, "
                        "diagonal where singular or wide); spectral: each layer's top-k activation-graph modes "
                        f"({api_default('metadata', 'records')})")
    p.add_argument("--temperature", type=float,
                   help=f"divides the logits ({api_default('metadata', 'temperature')})")
    p.add_argument("--modes", type=int,
                   help=f"spectral: eigen-pairs kept per layer ({api_default('metadata', 'modes')})")
    p.add_argument("--max-full", type=int,
                   help=f"widest layer recorded with a full covariance ({api_default('metadata', 'max_full')})")
    p.add_argument("--val-size", type=int, help="validation images left out of the records (default as train)")
    p.add_argument("--out", help="FILE.safetensors (default metadata-RECORDS.safetensors)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    add_trust(p)
    add_quiet(p)


def run(a):
    from ..api import metadata

    return metadata(a.teacher, data=a.data, out=a.out, overwrite=a.overwrite, val_size=a.val_size, quiet=a.quiet,
                    trust_code=a.trust_code, **given(records=a.records, temperature=a.temperature,
                                                     max_full=a.max_full, modes=a.modes)).metrics


COMMAND = Command(
    name="metadata", order=70, help="record a teacher's per-class activation statistics, to distill from later "
                                    "without the data (Lopes et al. 2017)", arguments=arguments, run=run, examples=(
        "distillab metadata T.safetensors --records all --out meta-all.safetensors",
        "distillab metadata T.safetensors --data mnist --records top --temperature 8 --out meta-top.safetensors"))
