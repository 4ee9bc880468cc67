from ..cli_text import TEXT
from ..errors import require
from .flags import (IMPORT_PREFIX, Command, add_loggers, add_output, add_resume, add_teacher_service, add_training,
                    add_trust, default, given, resumed, run_options, teacher_service, train_options)


def arguments(p):
    Hinton = "hinton"
    p.add_argument("--teacher", nargs="+", help="teacher model file(s); several form an averaged ensemble (from "
                                                "Python also a function x -> probabilities, given the data's raw "
                                                "values in its own shape: distill(teacher_inputs='raw'))")
    p.add_argument("--teacher-outputs",
                   help="a black box's answers, .npz: 'probs' or 'logits' (N, K), or 'topk_index' + 'topk_prob' (N, "
                        "k); one row per training example in the dataset's own order -- 'distillab data export' "
                        "writes the rows to answer, with 'index' and 'labels' to keep beside the answers ('distillab "
                        "predict' writes a distillab model's)")
    p.add_argument("--accept-unchecked-table", action="store_const", const=True,
                   help="--teacher-outputs: use a table without labels even where its answers agree with the labels "
                        "only at chance (its rows are likely in another order)")
    add_teacher_service(p)
    p.add_argument("--student", help="student model spec (see --model of 'distillab train --help')")
    p.add_argument("--chain", nargs="+", metavar="TEACHER SPEC",
                   help="teacher-assistant chain: TEACHER SPEC1 SPEC2 ...; each stage learns from the previous one")
    p.add_argument("--chain-from-all", action="store_true",
                   help="each chain stage learns from the ensemble of the teacher and all earlier stages")
    p.add_argument("--temperature", type=float,
                   help=f"shorthand for --loss kd:T=.. ({default(Hinton, 'temperature')}); not with --loss")
    p.add_argument("--alpha", type=float,
                   help=f"shorthand: weight of kd, 1-alpha on ce ({default(Hinton, 'alpha')}); not with --loss")
    p.add_argument("--loss", action="append", help="loss term NAME[:key=value,...], repeatable; "
                                                   f"{TEXT['losses']}; or {IMPORT_PREFIX}pkg.module:Class[:key=value,...]")
    p.add_argument("--tap", action="append", default=[], help="student=PATH or teacher=PATH (module path or "
                                                              "'penultimate') for feature losses")
    p.add_argument("--cache-teacher", choices=["auto", "yes", "no"],
                   help="compute the teacher's outputs once (auto, the default: when there is no augmentation)")
    add_training(p)
    add_trust(p)
    add_output(p)
    add_resume(p, "epochs", "distill")
    add_loggers(p)


def _taps(taps: list[str]) -> dict:
    found = {"student_tap": "penultimate", "teacher_tap": "penultimate"}
    for t in taps:
        role, eq, path = t.partition("=")
        require(eq and role in ("student", "teacher") and path, f"--tap takes student=PATH or teacher=PATH, got '{t}'")
        found[f"{role}_tap"] = path
    return found


def kd_options(a) -> dict:
    """What every distillation gets from the flags (a chain's stages too)."""
    return dict(temperature=a.temperature, alpha=a.alpha, losses=a.loss,
                **given(accept_unchecked_table=a.accept_unchecked_table),
                **given(cache={"auto": "auto", "yes": True, "no": False}.get(a.cache_teacher)), val_size=a.val_size,
                quiet=a.quiet, trust_code=a.trust_code, **_taps(a.tap),
                **given(data=a.data, split_seed=a.split_seed),
                **train_options(a), **run_options(a))


def kd_keywords(a) -> dict:
    """What distill() gets from the flags besides the output (tune kd passes the same)."""
    service = teacher_service(a)
    teacher = None
    if a.teacher:
        teacher = a.teacher[0] if len(a.teacher) == 1 else list(a.teacher)
    return dict(teacher=teacher, student=a.student, teacher_outputs=a.teacher_outputs, **kd_options(a), **service)


def run(a):
    from ..api import chain, distill, repeat_over_seeds

    if a.resume:
        return resumed(a, "kd")
    if a.chain:
        require(len(a.chain) >= 2, "--chain takes a teacher file and at least one student spec: --chain "
                                   "T.safetensors mlp:hidden=300 mlp:hidden=30")
        require(not (a.teacher or a.teacher_outputs or a.student), "--chain replaces --teacher and --student")
        require(not a.seeds, "--seeds with --chain: run the chain once per seed instead")
        return chain(teacher=a.chain[0], students=a.chain[1:], from_all=a.chain_from_all, out=a.out,
                     overwrite=a.overwrite, **kd_options(a)).metrics
    require(a.student, "kd needs --student SPEC (or --chain TEACHER SPEC1 SPEC2 ...)")
    require(a.teacher or a.teacher_outputs or a.teacher_url,
            "kd needs --teacher MODEL.safetensors, --teacher-outputs FILE.npz or --teacher-url URL")
    require(sum(map(bool, (a.teacher, a.teacher_outputs, a.teacher_url))) == 1,
            "give one of --teacher, --teacher-outputs and --teacher-url")
    kwargs = kd_keywords(a)
    if a.seeds:
        return repeat_over_seeds(distill, a.seeds, out=a.out, overwrite=a.overwrite, command="kd", **kwargs).metrics
    return distill(out=a.out, overwrite=a.overwrite, **kwargs).metrics


COMMAND = Command(
    name="kd", order=20, help="distill a teacher into a student", arguments=arguments, run=run, examples=(
        "distillab kd --data digits --teacher runs/t/model.safetensors --student mlp:hidden=32",
        "distillab kd ... --loss kd:T=4,w=0.9 --loss ce:w=0.1 --loss rkd:distance=25,angle=50",
        "distillab kd --data mnist --chain T.safetensors mlp:hidden=300-300 mlp:hidden=30-30",
        "distillab kd --data mnist --teacher-outputs api.npz --student mlp:hidden=800-800 --loss kd:T=4",
        "distillab kd --data mnist --teacher-url http://127.0.0.1:8000 --token-file token.txt --student "
        "mlp:hidden=800-800 --concurrency 8 --query-cache mnist.queries.sqlite"))
