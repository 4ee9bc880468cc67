from ..cli_text import TEXT
from .flags import Command, add_device, add_output, add_trust, api_default, given


def arguments(p):
    p.add_argument("synset", help="synset.safetensors")
    p.add_argument("--reference", help="a trusted model.safetensors of the same data (labels, class-stats)")
    p.add_argument("--data", help="the dataset the set was condensed from (default: the one it records)")
    p.add_argument("--audits", nargs="+", metavar="NAME[:key=value,...]",
                   help=f"which audits (default: every one the inputs allow): {TEXT.get('audits', '')}")
    p.add_argument("--privacy", action="store_true", help="add the privacy audits (memorisation, membership)")
    p.add_argument("--fpr", type=float, nargs="+",
                   help=f"false-positive rates the membership attacks are read at ({api_default('audit', 'fpr')}; "
                        "each needs 10/rate held-out images)")
    p.add_argument("--seed", type=int, help=f"seeds the audits' models and draws ({api_default('audit', 'seed')})")
    add_device(p)
    add_trust(p)
    add_output(p)


def run(a):
    from ..api import audit

    return audit(a.synset, reference=a.reference, data=a.data, audits=a.audits, privacy=a.privacy, out=a.out,
                 overwrite=a.overwrite, quiet=a.quiet, trust_code=a.trust_code,
                 **given(fpr=a.fpr, seed=a.seed, device=a.device)).metrics


COMMAND = Command(
    name="audit", order=90, help="audit a synthetic set: poisoning (labels a trusted model disputes, class "
                                 "statistics, what it teaches) and privacy (memorisation, membership inference)",
    arguments=arguments, run=run, examples=(
        "distillab audit synset.safetensors --reference trusted.safetensors      # poisoning audits",
        "distillab audit synset.safetensors --data mnist --privacy --out runs/audit-dm",
        "distillab audit synset.safetensors --audits labels:confidence=0.8 confusion:models=5 "
        "--reference T.safetensors"))
