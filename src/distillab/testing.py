"""The contract every plug-in meets, as scikit-learn's ``check_estimator`` checks every estimator.

    from distillab.testing import check_audit, check_datafree, check_labels, check_loss_term, check_method
    check_loss_term(MyLoss)      # raises AssertionError naming the broken promise
    check_method(MyMethod)
    check_labels(MyLabelMode)
    check_model(MyModelFamily)
    check_dataset(MyDataSource)
    check_protocol(MyProtocol)
    check_datafree(MyDataFreeMethod)
    check_audit(MyAudit)

The test suite runs them over every registered loss term, condensation method, label mode, data-free method, audit
and evaluation protocol; a new part gets them for free.
Checked: options round-trip through the spec string and the file metadata; an unknown option is a one-line error;
the same seed gives identical output; the global RNG is neither changed nor read; a loss term draws only from the
streams it declares (``generators()``, checkpointed with a run) and, given the training's ``Schedule`` (mid-run in
the contract), stays finite at the first and the last step (a warm-up); values (and, for losses, gradients) are finite; a
method returns the asked number of images per class in the data's shape, class-major; a distance-like loss is zero
when the student equals the teacher.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import typing

import torch

from . import seeds
from .condense import LABELS, METHODS, Labels, Method, SyntheticSet, condense
from .data import TrainSet
from .errors import DistillabError
from .kd import LOSSES, Distillation, LossTerm, ModelTeacher
from .models import MODELS, ModelFamily, build_model
from .specs import option_fields
from .training import Schedule

_NET = "convnet:width=4,depth=2"
# Where training stands when the contract calls a loss term: mid-run, so that a warm-up's factor is neither 0 nor 1
_MID_RUN, _FIRST_STEP, _LAST_STEP = Schedule(2, 4, 5, 16), Schedule(1, 4, 0, 16), Schedule(4, 4, 15, 16)
_SHAPE, _CLASSES = (1, 8, 8), 3


# --------------------------------------------------------------------------------------------------------------
# Shared checks


def _variants(cls, base: dict) -> list[dict]:
    """The base options, and each option changed on its own (those the class accepts)."""
    found = [dict(base)]
    defaults = cls(**base)
    for key, (_, kind) in option_fields(cls).items():
        value = getattr(defaults, key)
        if typing.get_origin(kind) is typing.Literal:
            others = [c for c in typing.get_args(kind) if c != value]
            changed = others[0] if others else value
        elif kind is bool:
            changed = not value
        elif kind is int:
            changed = value + 1
        elif kind is float:
            changed = value * 0.5 if value else 0.25
        else:
            continue
        try:
            cls(**{**base, key: changed})
        except DistillabError:
            continue
        found.append({**base, key: changed})
    return found


def _check_options(registry, cls, base: dict) -> None:
    for options in _variants(cls, base):
        part = cls(**options)
        text = str(part)
        again = registry.parse(text)
        assert again == part, f"{cls.__name__}: the spec '{text}' parses back to {again!r}, not {part!r}"
        recorded = json.loads(json.dumps(part.describe()))
        assert registry.from_description(recorded) == part, \
            f"{cls.__name__}: its metadata {recorded} does not rebuild it"
    try:
        registry.parse(f"{cls.name}:no_such_option=1")
    except DistillabError as e:
        assert "\n" not in str(e) and "no_such_option" in str(e), f"unclear error for an unknown option: {e}"
    else:
        raise AssertionError(f"{cls.__name__}: an unknown option was accepted")


@contextlib.contextmanager
def _global_rng_set_to(seed: int):
    """Sets the global RNG to a known state (the caller's own is restored afterwards) and fails if the code inside
    moves it. Run twice with different seeds and compare: output that differs means the code reads it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = torch.random.get_rng_state()
        yield
        assert torch.equal(torch.random.get_rng_state(), state), "the global RNG was used or reseeded"


# --------------------------------------------------------------------------------------------------------------
# Loss terms


def _loss_run(cls, options: dict, seed: int, same_teacher: bool = False):
    g = seeds.generator(seed)
    student = build_model(_NET, _SHAPE, _CLASSES, g)
    teacher = copy.deepcopy(student) if same_teacher else build_model(_NET, _SHAPE, _CLASSES, g)
    x = torch.randn(6, *_SHAPE, generator=g)
    y = torch.arange(6) % _CLASSES
    idx = torch.arange(6)
    term = cls(**options)
    objective = Distillation(ModelTeacher(teacher, term.teacher_taps()), [term], examples=len(x))
    extra = objective.attach(student, x, idx, generator=seeds.generator(seed, "connectors"))
    streams = {name: g.get_state() for name, g in term.generators().items()}
    student.train()
    values = objective(student, x, y, idx, schedule=_MID_RUN)
    assert values and all(isinstance(k, str) and torch.is_tensor(v) and v.dim() == 0 for k, v in values.items()), \
        f"{cls.__name__} must return a dict of named scalar tensors, got {values!r}"[:300]
    sum(values.values()).backward()
    for name, g in term.generators().items():  # the streams it declares back where they were: the same values
        g.set_state(streams[name])
    with torch.no_grad():
        replay = objective(student, x, y, idx, schedule=_MID_RUN)
    assert all(torch.equal(values[k].detach(), replay[k]) for k in values), \
        f"{cls.__name__}: the same batch from the same state of its streams (generators()) gave other values; " \
        "a term draws only from the generators it declares, which the training loop checkpoints"
    with torch.no_grad():
        for schedule in (_FIRST_STEP, _LAST_STEP):
            ends = objective(student, x, y, idx, schedule=schedule)
            assert ends.keys() == values.keys() and all(math.isfinite(float(v)) for v in ends.values()), \
                f"{cls.__name__}: at {schedule} its values are {ends}; they must be finite, under the same names"
        for name, g in term.generators().items():
            g.set_state(streams[name])
    params = [p for m in (student, *extra) for p in m.parameters()]
    grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]
    return {k: v.detach() for k, v in values.items()}, grads


def check_loss_term(cls: type, options: dict | None = None) -> None:
    """Run a LossTerm class through the shared contract (see the module docstring), with ``options`` (default:
    the class's ``example``): give them to check a setting that takes another path (a term that draws noise)."""
    assert isinstance(cls, type) and issubclass(cls, LossTerm) and dataclasses.is_dataclass(cls), \
        f"{cls!r} is not a LossTerm dataclass"
    assert cls.name and LOSSES.get(cls.name) is cls, f"{cls.__name__} is not registered (register_loss)"
    options = dict(cls.example if options is None else options)
    _check_options(LOSSES, cls, options)
    with _global_rng_set_to(1):
        values, grads = _loss_run(cls, options, seed=0)
    with _global_rng_set_to(2):
        again, grads_again = _loss_run(cls, options, seed=0)
    assert values.keys() == again.keys() and all(torch.equal(values[k], again[k]) for k in values), \
        f"{cls.__name__}: the same seed gave other values ({values} vs {again})"
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_again)), f"{cls.__name__}: the same seed gave other gradients"
    assert all(math.isfinite(float(v)) for v in values.values()), f"{cls.__name__}: values not finite: {values}"
    assert all(bool(torch.isfinite(g).all()) for g in grads), f"{cls.__name__}: gradients not finite"
    assert any(bool(g.abs().sum() > 0) for g in grads), f"{cls.__name__}: no gradient reaches the student"
    if cls(**options).distance_like:
        same, _ = _loss_run(cls, options, seed=0, same_teacher=True)
        assert all(abs(float(v)) < 1e-5 for v in same.values()), \
            f"{cls.__name__} is distance-like but not zero when the student equals the teacher: {same}"


# --------------------------------------------------------------------------------------------------------------
# Data sources


def check_dataset(cls: type, path: str = "") -> None:
    """Run a DataSource class through the shared contract (``path``: for a source that reads ``NAME:PATH``): it
    loads through ``data.load`` by its spec; images are float (N, C, H, W), finite, train and test of one shape;
    labels are int64 class indices, every class has training images; normalisation has one mean and std per
    channel; a second load gives the same tensors whatever the global RNG, which it leaves as it was."""
    from . import data

    assert isinstance(cls, type) and issubclass(cls, data.DataSource) and dataclasses.is_dataclass(cls), \
        f"{cls!r} is not a DataSource dataclass"
    assert cls.name and data.DATASETS.get(cls.name) is cls, f"{cls.__name__} is not registered (register_dataset)"
    spec = f"{cls.name}:{path}" if cls.takes_path else cls.name
    with _global_rng_set_to(1):
        ds = data.load(spec, fetch=False)
    with _global_rng_set_to(2):
        again = data.load(spec, fetch=False)
    assert ds.spec == spec, f"{cls.__name__}: the dataset records spec {ds.spec!r}, not {spec!r}"
    for part, s, t in (("train", ds.train, again.train), ("test", ds.test, again.test)):
        assert s.x.dtype == torch.float32 and s.x.dim() == 4 and len(s.x) == len(s.y) > 0, \
            f"{cls.__name__}: {part} images {tuple(s.x.shape)} {s.x.dtype} for {len(s.y)} labels"
        assert s.y.dtype == torch.int64 and 0 <= int(s.y.min()) and int(s.y.max()) < ds.num_classes, \
            f"{cls.__name__}: {part} labels are not class indices 0..{ds.num_classes - 1}"
        assert torch.equal(s.x, t.x) and torch.equal(s.y, t.y), f"{cls.__name__}: a second load gave other {part} data"
    assert ds.test.x.shape[1:] == ds.train.x.shape[1:], f"{cls.__name__}: train and test images differ in shape"
    channels = ds.input_shape[0]
    assert len(ds.mean) == len(ds.std) == channels and all(v > 0 for v in ds.std), \
        f"{cls.__name__}: mean {ds.mean} and std {ds.std} for {channels} channels"
    assert ds.num_classes >= 2 and len(set(ds.train.y.tolist())) == ds.num_classes, \
        f"{cls.__name__}: not every one of its {ds.num_classes} classes has training images"


# --------------------------------------------------------------------------------------------------------------
# Model families


def check_model(cls: type, options: dict | None = None, shapes=((1, 8, 8), (3, 32, 32)), num_classes: int = 3) -> None:
    """Run a ModelFamily class through the shared contract: its options round-trip through the spec string and the
    file metadata; for each input shape the network gives (batch, num_classes) logits and ends in a linear layer
    named ``classifier``; the same generator seed gives the same weights whatever the global RNG, another seed
    other weights; the global RNG is left as it was."""
    assert isinstance(cls, type) and issubclass(cls, ModelFamily) and dataclasses.is_dataclass(cls), \
        f"{cls!r} is not a ModelFamily dataclass"
    assert cls.name and MODELS.get(cls.name) is cls, f"{cls.__name__} is not registered (register_model)"
    options = dict(options or {})
    _check_options(MODELS, cls, options)
    spec = str(cls(**options))
    for shape in shapes:
        with _global_rng_set_to(1):
            net = build_model(spec, shape, num_classes, seeds.generator(4))
        with _global_rng_set_to(2):
            again = build_model(spec, shape, num_classes, seeds.generator(4))
        other = build_model(spec, shape, num_classes, seeds.generator(5))
        a, b, c = net.state_dict(), again.state_dict(), other.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{cls.__name__}: the same seed gave other weights"
        assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point()), \
            f"{cls.__name__}: another seed gave the same weights (they are not drawn from the generator)"
        assert isinstance(dict(net.named_modules()).get("classifier"), torch.nn.Linear), \
            f"{cls.__name__}: its last linear layer is not named 'classifier' (feature losses tap its input)"
        net.eval()
        with torch.no_grad():
            out = net(torch.randn(2, *shape, generator=seeds.generator(0)))
        assert tuple(out.shape) == (2, num_classes) and bool(torch.isfinite(out).all()), \
            f"{cls.__name__}: outputs of shape {tuple(out.shape)} for inputs {shape}"


# --------------------------------------------------------------------------------------------------------------
# Condensation methods


def contract_data() -> TrainSet:
    """scikit-learn's digits, normalised: small enough for every method's quick options."""
    from .data import load, split

    return split(load("digits")).train_set()


def _method_run(cls, train: TrainSet, ipc: int, seed: int):
    steps = []
    synset = condense(train, cls(**cls.quick), ipc, seed=seed, progress=lambda it, loss: steps.append((it, loss)))
    return synset, steps


def check_method(cls: type, train: TrainSet | None = None, ipc: int = 2) -> None:
    """Run a Method class through the shared contract (see the module docstring); it runs with ``cls.quick``."""
    assert isinstance(cls, type) and issubclass(cls, Method) and dataclasses.is_dataclass(cls), \
        f"{cls!r} is not a Method dataclass"
    assert cls.name and METHODS.get(cls.name) is cls, f"{cls.__name__} is not registered (register_method)"
    _check_options(METHODS, cls, dict(cls.quick))
    train = train or contract_data()
    k = train.num_classes
    with _global_rng_set_to(1):
        synset, steps = _method_run(cls, train, ipc, seed=3)
    with _global_rng_set_to(2):
        again, _ = _method_run(cls, train, ipc, seed=3)
    assert isinstance(synset, SyntheticSet), f"{cls.__name__} returned {type(synset).__name__}"
    assert tuple(synset.images.shape) == (k * ipc, *train.input_shape), \
        f"{cls.__name__}: images of shape {tuple(synset.images.shape)} for IPC {ipc}"
    assert synset.ipc == ipc and synset.labels.tolist() == [c for c in range(k) for _ in range(ipc)], \
        f"{cls.__name__}: labels are not {ipc} per class, class-major"
    assert list(synset.classes) == list(train.classes) and tuple(synset.mean) == tuple(train.mean), \
        f"{cls.__name__}: the set does not carry the data's classes and normalisation"
    assert bool(torch.isfinite(synset.images).all()), f"{cls.__name__}: images not finite"
    assert torch.equal(synset.images, again.images) and torch.equal(synset.labels, again.labels), \
        f"{cls.__name__}: the same seed gave another set"
    for a, b in ((synset.lrs, again.lrs), (synset.label_logits, again.label_logits)):
        assert (a is None) == (b is None) and (a is None or torch.equal(a, b)), f"{cls.__name__}: not deterministic"
    total = cls(**cls.quick).iterations_total
    assert len(steps) == total, f"{cls.__name__}: reported progress {len(steps)} times for {total} iterations"
    assert all(math.isfinite(loss) for _, loss in steps), f"{cls.__name__}: progress losses not finite"
    assert synset.meta.get("method") == cls.name and synset.meta["recipe"]["ipc"] == ipc, \
        f"{cls.__name__}: the set does not record how it was made"
    assert synset.meta["budget"]["real_images_read"] > 0, \
        f"{cls.__name__}: read no real image through train.read(idx); the set's budget cannot count what it used"
    for recipe in cls.recipes:  # a named recipe fills its options, round-trips through the spec and is recorded
        made = cls.from_recipe(recipe)
        assert METHODS.parse(f"{cls.name}:recipe={recipe}") == made and METHODS.parse(str(made)).recipe == recipe, \
            f"{cls.__name__}: recipe {recipe} does not round-trip through its spec ({made})"
        assert all(getattr(made, k) == v for k, v in cls.recipes[recipe].items()), \
            f"{cls.__name__}: recipe {recipe} names options it does not set"
        assert made.recipe_record()["departures"] == {}, f"{cls.__name__}: recipe {recipe} departs from itself"


def check_labels(cls: type, options: dict | None = None, train: TrainSet | None = None, ipc: int = 2) -> None:
    """Run a label mode (a Labels class) through the shared contract on a random real set: with ``options``
    (default: the class's ``quick``) the same seed labels the set alike whatever the global RNG, the images stay
    as the method made them, hard labels stay one per image, class-major, and soft ones (``label_logits``) are
    finite, one row of class logits per image; progress is reported once per iteration."""
    assert isinstance(cls, type) and issubclass(cls, Labels) and dataclasses.is_dataclass(cls), \
        f"{cls!r} is not a Labels dataclass"
    assert cls.name and LABELS.get(cls.name) is cls, f"{cls.__name__} is not registered (register_labels)"
    options = dict(cls.quick if options is None else options)
    _check_options(LABELS, cls, options)
    train = train or contract_data()
    k, runs = train.num_classes, []
    for global_seed in (1, 2):
        steps = []
        with _global_rng_set_to(global_seed):
            runs.append(condense(train, "random", ipc, seed=3, labels=cls(**options),
                                 progress=lambda it, loss: steps.append((it, loss))))
    made, again = runs
    plain = condense(train, "random", ipc, seed=3)
    assert torch.equal(made.images, plain.images), f"{cls.__name__}: a label mode changed the images"
    assert made.labels.tolist() == [c for c in range(k) for _ in range(ipc)], \
        f"{cls.__name__}: hard labels are not {ipc} per class, class-major"
    assert (made.label_logits is None) == (again.label_logits is None), f"{cls.__name__}: not deterministic"
    if made.label_logits is not None:
        assert tuple(made.label_logits.shape) == (k * ipc, k), \
            f"{cls.__name__}: label logits of shape {tuple(made.label_logits.shape)}, not one row of {k} per image"
        assert bool(torch.isfinite(made.label_logits).all()), f"{cls.__name__}: label logits not finite"
        assert torch.equal(made.label_logits, again.label_logits), f"{cls.__name__}: the same seed labelled otherwise"
    total = cls(**options).iterations_total
    assert len(steps) == total, f"{cls.__name__}: reported progress {len(steps)} times for {total} iterations"
    assert made.meta["recipe"]["labels"]["name"] == cls.name, f"{cls.__name__}: the set does not record its labels"


# --------------------------------------------------------------------------------------------------------------
# Data-free methods


def contract_teacher(norm: str = "batch"):
    """A small teacher (LeNet-5, BatchNorm when ``norm='batch'``) briefly trained on digits, frozen for a
    data-free method; with its training split."""
    from .data import load, split
    from .datafree import FrozenTeacher
    from .training import TrainConfig, fit

    splits = split(load("digits"))
    model = build_model(f"lenet5:norm={norm}", splits.input_shape, splits.num_classes, seeds.generator(0))
    fit(model, splits, TrainConfig(epochs=3, batch_size=64, lr=0.05))
    return FrozenTeacher(model, splits.input_shape, splits.classes, splits.mean, splits.std), splits


def check_datafree(cls: type, teacher=None, options: dict | None = None) -> None:
    """Run a DataFreeMethod class through the shared contract: options round-trip; ``samples`` images of the
    teacher's input shape with one valid label each; progress reported ``steps(samples)`` times with finite
    losses; the same seed gives the same images; the global RNG is neither changed nor read. Runs with
    ``cls.quick`` (and ``options``, e.g. a metadata file)."""
    from .datafree import DATAFREE, DataFreeMethod, synthesize

    assert isinstance(cls, type) and issubclass(cls, DataFreeMethod) and dataclasses.is_dataclass(cls), \
        f"{cls!r} is not a DataFreeMethod dataclass"
    assert cls.name and DATAFREE.get(cls.name) is cls, f"{cls.__name__} is not registered (register_datafree)"
    options = {**cls.quick, **(options or {})}
    _check_options(DATAFREE, cls, options)
    teacher = teacher or contract_teacher()[0]
    method = cls(**options)

    def run():
        steps = []
        made = synthesize(teacher, method, seed=3, progress=lambda it, loss: steps.append((it, loss)))
        return made, steps

    with _global_rng_set_to(1):
        made, steps = run()
    with _global_rng_set_to(2):
        again, _ = run()
    n = method.samples
    assert tuple(made["images"].shape) == (n, *teacher.input_shape), \
        f"{cls.__name__}: images of shape {tuple(made['images'].shape)} for {n} samples"
    assert made["labels"].shape == (n,) and int(made["labels"].min()) >= 0 \
        and int(made["labels"].max()) < teacher.num_classes, f"{cls.__name__}: not one valid label per image"
    assert bool(torch.isfinite(made["images"]).all()), f"{cls.__name__}: images not finite"
    assert torch.equal(made["images"], again["images"]) and torch.equal(made["labels"], again["labels"]), \
        f"{cls.__name__}: the same seed gave another transfer set"
    assert len(steps) == method.steps(n), f"{cls.__name__}: reported progress {len(steps)} times for " \
                                          f"{method.steps(n)} steps"
    assert all(math.isfinite(loss) for _, loss in steps), f"{cls.__name__}: progress losses not finite"


# --------------------------------------------------------------------------------------------------------------
# Audits


def contract_audit_inputs():
    """What an audit contract run looks at: a small random-subset set of digits, a reference MLP trained on them
    briefly, and the digits splits normalised as the set."""
    from .audits import AuditInputs
    from .data import load, split
    from .datafree import FrozenTeacher
    from .training import TrainConfig, fit

    splits = split(load("digits"))
    synset = condense(splits.train_set(), "random", 2, seed=0)
    model = build_model("mlp:hidden=32", splits.input_shape, splits.num_classes, seeds.generator(0))
    fit(model, splits, TrainConfig(epochs=3, batch_size=64, lr=0.05))
    reference = FrozenTeacher(model, splits.input_shape, splits.classes, splits.mean, splits.std)
    return AuditInputs(synset=synset, reference=reference, splits=splits, fpr=(0.1,))


def check_audit(cls: type, inputs=None, options: dict | None = None) -> None:
    """Run an Audit class through the shared contract: options round-trip; a dict with ``flagged`` (bool) and
    ``summary`` (one line) that survives JSON; the same seed gives the same finding; the global RNG is neither
    changed nor read; ``markdown`` gives lines of text; an input it needs and lacks is a one-line error. Runs
    with ``cls.quick`` (and ``options``)."""
    from .audits import AUDITS, Audit, run_audits

    assert isinstance(cls, type) and issubclass(cls, Audit) and dataclasses.is_dataclass(cls), \
        f"{cls!r} is not an Audit dataclass"
    assert cls.name and AUDITS.get(cls.name) is cls, f"{cls.__name__} is not registered (register_audit)"
    options = {**cls.quick, **(options or {})}
    _check_options(AUDITS, cls, options)
    inputs = inputs or contract_audit_inputs()
    audit = cls(**options)
    with _global_rng_set_to(1):
        finding = run_audits([audit], inputs, seed=3)[cls.name]
    with _global_rng_set_to(2):
        again = run_audits([audit], inputs, seed=3)[cls.name]
    assert isinstance(finding["flagged"], bool) and isinstance(finding["summary"], str) \
        and "\n" not in finding["summary"], f"{cls.__name__}: a finding needs 'flagged' and a one-line 'summary'"
    text = json.dumps(finding, sort_keys=True)
    assert text == json.dumps(again, sort_keys=True), f"{cls.__name__}: the same seed gave another finding"
    lines = audit.markdown(json.loads(text))
    assert isinstance(lines, list) and all(isinstance(line, str) for line in lines), \
        f"{cls.__name__}.markdown must return a list of lines"
    for need in cls.needs:
        lacking = dataclasses.replace(inputs, **{"reference" if need == "reference" else "splits": None})
        try:
            run_audits([audit], lacking)
        except DistillabError as e:
            assert "\n" not in str(e) and cls.name in str(e), f"unclear error for a missing input: {e}"
        else:
            raise AssertionError(f"{cls.__name__}: ran without the {need} it needs")


# --------------------------------------------------------------------------------------------------------------
# Evaluation protocols


def contract_synset(method: str = "random"):
    """A tiny digits set (IPC 2) and the digits test split normalised as it: what a protocol contract run
    measures; ``method`` another quick method (a bptt set for protocols that train by its schedule)."""
    from .data import load, split

    splits = split(load("digits"))
    cls = METHODS.get(method)
    return condense(splits.train_set(), cls(**cls.quick), 2, seed=0), splits


def check_protocol(cls: type, synset=None, splits=None, options: dict | None = None) -> None:
    """Run an EvalProtocol class through the shared contract: options round-trip through the spec string and the
    metadata; an unknown option is a one-line error; resolved for the data, it records itself as JSON; it measures
    the set with ``runs`` accuracies in [0, 1] per model; the same seed gives the same figures; the global RNG is
    neither changed nor read. Runs with ``cls.quick`` (and ``options``) on ``synset`` (default: a random digits
    set)."""
    from .evaluation import EvalProtocol, PROTOCOLS, evaluate_set

    assert isinstance(cls, type) and issubclass(cls, EvalProtocol) and dataclasses.is_dataclass(cls), \
        f"{cls!r} is not an EvalProtocol dataclass"
    assert cls.name and PROTOCOLS.get(cls.name) is cls, f"{cls.__name__} is not registered (register_protocol)"
    options = {**cls.quick, **(options or {})}
    _check_options(PROTOCOLS, cls, options)
    if synset is None:
        synset, splits = contract_synset()
    proto = cls(**options).for_data(splits.spec, synset)
    record = json.loads(json.dumps(proto.record()))
    assert record["name"] == cls.name and isinstance(record.get("reference"), str) and record["reference"], \
        f"{cls.__name__}: its record must name it and say whose evaluation it is (reference)"

    def run():
        return evaluate_set(synset, splits.test, cls(**options), data=splits.spec, seed=3,
                            num_classes=splits.num_classes)[0]

    with _global_rng_set_to(1):
        results = run()
    with _global_rng_set_to(2):
        again = run()
    assert results and all(set(r) >= {"mean", "std", "runs"} for r in results.values()), \
        f"{cls.__name__}: figures per model need mean, std and runs, got {results!r}"[:300]
    for spec, r in results.items():
        assert all(0.0 <= a <= 1.0 for a in r["runs"]) and r["runs"] == again[spec]["runs"], \
            f"{cls.__name__}: {spec}: accuracies {r['runs']} not in [0, 1] or not repeated by the same seed"
