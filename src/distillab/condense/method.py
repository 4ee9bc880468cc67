"""A condensation method: an options dataclass whose ``run`` turns a training set into a synthetic set; the
registry of methods and ``condense()``, which runs one and records how the set was made.

A new method is one file in ``condense/methods/`` (or your own module, registered with
``distillab.register_method``)::

    @register_method("noise")
    @dataclass
    class Noise(Method):
        scale: float = 1.0
        def run(self, train, ipc, generator, progress=None):
            images = self.scale * torch.randn(train.num_classes * ipc, *train.input_shape, generator=generator)
            return SyntheticSet.class_major(train, images, ipc)

Every random draw comes from ``generator`` (never the global RNG); ``progress(iteration, loss)`` is called once per
iteration by methods that iterate (their ``iterations`` option sets the count).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from .. import seeds
from .._version import __version__
from ..checkpoint import Checkpoints, loop_running, restore, stop_if_requested
from ..compiling import CompileChoice
from ..data import ReadLog, TrainSet
from ..errors import require
from ..memory import PeakMemory
from ..registry import Registry
from ..specs import Plugin, option_values
from .labels import Labels, parse_labels
from ..data import dataset_hash
from .synset import SyntheticSet


class RunClock:
    """Seconds a condensing run has taken, across resumes: a checkpoint keeps the count at its save, and a resumed
    run counts on from there (the work after the last checkpoint of a stopped run is not counted: it is done
    again)."""

    def __init__(self):
        self.before, self.started = 0.0, time.perf_counter()

    def __call__(self) -> float:
        return self.before + time.perf_counter() - self.started

    def resume_from(self, saved: dict) -> None:
        seconds = saved.get("seconds", 0.0)
        require(isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 <= seconds < 1e9,
                "the checkpoint's seconds are not a count of seconds; start the run again with --overwrite")
        self.before = float(seconds)


class Progress:
    """What ``condense()`` hands a method's ``run``: ``progress(iteration, loss, live)`` reports an iteration and
    keeps the loop resumable; ``start = progress.restore(live)`` puts a saved state back into the live objects
    (tensors, optimisers, generators) and says where to continue. ``live`` is optional for methods that do not
    checkpoint; they then restart from scratch when a run is resumed. ``keep``: more state saved beside ``live``
    (read back with ``saved()``); ``reads``: the training set's read log, saved and restored with the loop."""

    def __init__(self, report: Callable[[int, float], None] | None = None, checkpoints: Checkpoints | None = None,
                 keep: dict | None = None, reads: ReadLog | None = None, clock: RunClock | None = None):
        self.report, self.checkpoints, self.keep, self.reads = report, checkpoints, keep or {}, reads
        self.clock = clock

    def saved(self) -> dict | None:
        return self.checkpoints.load() if self.checkpoints else None

    def restore(self, live: dict) -> int:
        saved = self.saved()
        if saved is None:
            return 0
        restore(live, saved["live"])
        if self.clock is not None:
            self.clock.resume_from(saved)
        if self.reads is not None and isinstance(saved.get("reads"), dict):
            self.reads.draws = int(saved["reads"]["draws"])
            self.reads.seen.copy_(saved["reads"]["seen"])
        return saved["iteration"]

    def __call__(self, iteration: int, loss: float, live: dict | None = None) -> None:
        if self.report:
            self.report(iteration, loss)
        if self.checkpoints and live is not None:
            self.checkpoints.after(iteration + 1, lambda: {"live": live, "iteration": iteration + 1, **self.keep,
                                                           **self._reads(), **self._seconds()})
        else:
            stop_if_requested()

    def compile_choice(self, decide: Callable[[], CompileChoice]) -> CompileChoice:
        """The run's compile choice: the one its checkpoint kept (a resumed run goes on as it began), else
        ``decide()``; kept with every checkpoint from now on."""
        saved = self.saved()
        choice = CompileChoice.from_record(saved["compile"]) if saved is not None and "compile" in saved else decide()
        self.keep["compile"] = choice.record()
        return choice

    def _reads(self) -> dict:
        return {"reads": {"draws": self.reads.draws, "seen": self.reads.seen}} if self.reads is not None else {}

    def _seconds(self) -> dict:
        return {"seconds": self.clock()} if self.clock is not None else {}


@dataclass
class Method(Plugin):
    """Base class of condensation methods. Subclasses are dataclasses whose fields are their options."""

    # Options for a seconds-long run on digits: the contract test and `bench --quick` use them.
    quick: ClassVar[dict] = {}
    # Reference recipes by name ({name: {option: value}}): ``NAME:recipe=R,...`` (or ``from_recipe``) fills the
    # options a recipe names; the options given explicitly override it. The chosen recipe's name is kept as
    # ``recipe`` (not an option: the options alone say what runs) and recorded with the options that depart from it.
    recipes: ClassVar[dict[str, dict]] = {}
    recipe: ClassVar[str] = ""

    @classmethod
    def recipe_options(cls, name: str) -> dict:
        """The options recipe ``name`` sets; an unknown name is a one-line error that lists the known ones."""
        require(isinstance(name, str) and name in cls.recipes,
                f"{cls.name} has no recipe '{name}'; " + (f"its recipes: {', '.join(cls.recipes)}" if cls.recipes
                                                         else "it has no reference recipes"))
        return dict(cls.recipes[name])

    @classmethod
    def from_recipe(cls, name: str, **options) -> "Method":
        """This method as recipe ``name`` sets it, with ``options`` overriding it (the Python form of
        ``NAME:recipe=R,key=value``)."""
        method = cls(**{**cls.recipe_options(name), **options})
        method.recipe = name
        return method

    def recipe_record(self) -> dict | None:
        """{"name", "options": what the recipe sets, "departures": {option: {"recipe", "used"}}} or None."""
        if not self.recipe:
            return None
        recipe = type(self).recipe_options(self.recipe)
        departures = {k: {"recipe": v, "used": getattr(self, k)} for k, v in recipe.items() if getattr(self, k) != v}
        return {"name": self.recipe, "options": recipe, "departures": departures}

    def __str__(self) -> str:
        text = super().__str__()
        if not self.recipe:
            return text
        name, _, rest = text.partition(":")
        return f"{name}:recipe={self.recipe}" + (f",{rest}" if rest else "")

    def check_data(self, train: TrainSet) -> None:
        """Refuse data this method cannot condense (e.g. a model that does not fit it), before any work."""

    @property
    def iterations_total(self) -> int:
        """How many times ``run`` reports progress (0 for one-shot methods)."""
        return int(getattr(self, "iterations", 0))

    def run(self, train: TrainSet, ipc: int, generator: torch.Generator,
            progress: Progress | None = None) -> SyntheticSet:
        raise NotImplementedError

    @classmethod
    def models_as_made(cls, synset: SyntheticSet, *, runs: int, seed: int, trust_code: bool = False) -> dict | None:
        """Models trained the way this method meant its sets to be used, when that differs from the protocol (bptt:
        its learned schedule): ``{"model": spec, "init_net": ..., "models": [nn.Module, ...]}``; None otherwise."""
        return None

    @classmethod
    def as_made(cls, synset: SyntheticSet, test, *, runs: int, seed: int, trust_code: bool = False) -> dict | None:
        """Test accuracy of the models ``models_as_made`` trains (mean +- std), or None."""
        made = cls.models_as_made(synset, runs=runs, seed=seed, trust_code=trust_code)
        if made is None:
            return None
        from ..evaluation import summarise
        from ..training import accuracy

        accs = [accuracy(m, test)[0] for m in made.pop("models")]
        return {**made, **summarise(accs)}


METHODS = Registry("condensation method", Method, "--method")


def register_method(name: str, *, replace: bool = False):
    """Class decorator: make a Method dataclass available as ``--method NAME``."""
    return METHODS.register(name, replace=replace)


def parse_method(text: str, *, trust_code: bool = True) -> Method:
    """``dm:iterations=1000,lr_img=1``, ``random``, ``import:pkg.mod:Name:key=value``."""
    return METHODS.parse(text, trust_code=trust_code)


def check_ipc(train: TrainSet, ipc: int) -> None:
    require(isinstance(ipc, int) and ipc >= 1, f"--ipc must be at least 1, got {ipc}")
    counts = torch.bincount(train.y, minlength=train.num_classes)
    smallest = int(counts.min())
    require(ipc <= smallest, f"--ipc {ipc} is larger than the smallest class ({smallest} training images of class "
                             f"{train.classes[int(counts.argmin())]}); choose --ipc <= {smallest}")


def random_real_images(train: TrainSet, ipc: int, g: torch.Generator) -> torch.Tensor:
    """``ipc`` distinct real training images per class, class-major."""
    picks = [idx[torch.randperm(len(idx), generator=g)[:ipc]] for idx in train.class_indices()]
    return train.read(torch.cat(picks)).clone()


MAX_ITERATIONS = 1_000_000


def initial_images(train: TrainSet, ipc: int, init: str, g: torch.Generator) -> torch.Tensor:
    """Where learned methods start: real images (``real``) or standard normal noise (``noise``)."""
    if init == "real":
        return random_real_images(train, ipc, g)
    return torch.randn(train.num_classes * ipc, *train.input_shape, generator=g).to(train.device)


def condense(train: TrainSet, method: Method | str, ipc: int, *, seed: int = 0, labels: Labels | str = "hard",
             progress: Callable[[int, float], None] | None = None,
             checkpoints: Checkpoints | None = None, trust_code: bool = False) -> SyntheticSet:
    """Condense ``train`` into ``ipc`` images per class with ``method``, labelled by ``labels`` (``hard``,
    ``learn[:options]``, ``teacher:PATH``); the set records how it was made and what it cost (``meta["budget"]``).

    ``progress(iteration, loss)`` is told every iteration (the method's, then the label mode's); ``checkpoints``
    keep the loops resumable (a saved one is resumed from, to the same bits as an uninterrupted run).
    ``trust_code``: a teacher file that names code may be built."""
    method = parse_method(method) if isinstance(method, str) else method
    require(isinstance(method, Method), f"a condensation method must be a Method or a spec string, got {method!r}")
    labels = parse_labels(labels) if isinstance(labels, str) else labels
    require(isinstance(labels, Labels), f"--labels must be a label mode or its spec string, got {labels!r}")
    method.check()
    labels.check()
    for part in (method, labels):  # a typo (10^9), not a budget: refused before any work
        loops = int(getattr(part, "iterations", 0) or 0)
        require(loops <= MAX_ITERATIONS, f"{part.name}'s iterations must be at most {MAX_ITERATIONS:,} (the "
                                         f"longest reference recipe runs 23,600), got {loops:,}")
    train = train.counted()
    check_ipc(train, ipc)
    method.check_data(train)
    labels.check_data(train, trust_code)
    label_checkpoints = checkpoints.sibling("labels") if checkpoints else None
    clock = RunClock()
    with PeakMemory(train.device) as peak, loop_running():
        resumed = label_checkpoints.load() if label_checkpoints else None
        if resumed is not None:  # the method had finished: its set was kept with the label loop
            synset = _synset_from_tree(train, resumed["synset"])
        else:
            synset = method.run(train, ipc, seeds.generator(seed), Progress(progress, checkpoints,
                                                                            reads=train.reads, clock=clock))
            _check_made(method, synset, train, ipc)
        offset = method.iterations_total
        report = (lambda it, loss: progress(offset + it, loss)) if progress else None
        synset = labels.apply(train, synset, seeds.generator(seed, "labels"),
                              Progress(report, label_checkpoints, keep={"synset": _synset_tree(synset)},
                                       reads=train.reads, clock=clock), trust_code=trust_code)
    synset.images = synset.images.detach().float().cpu().contiguous()
    synset.labels = synset.labels.cpu()
    synset.lrs = synset.lrs.detach().cpu() if synset.lrs is not None else None
    synset.label_logits = synset.label_logits.detach().float().cpu() if synset.label_logits is not None else None
    if synset.init_state is not None:
        synset.init_state = {k: v.detach().cpu() for k, v in synset.init_state.items()}
    seconds = round(clock(), 2)  # across resumes
    synset.meta = {"method": method.name, "recipe": {"method": method.name, "ipc": ipc, "seed": seed,
                                                     **option_values(method), "labels": labels.describe()},
                   **({"method_recipe": method.recipe_record()} if method.recipe else {}),
                   "source": {**train.source, "hash": dataset_hash(train)}, "labels": str(labels),
                   "condense_seconds": seconds, "distillab_version": __version__,
                   **({"layout": train.layout} if train.layout else {}),
                   **synset.meta, "budget": budget(synset, train, seconds, peak)}
    return synset


def relabel(train: TrainSet, synset: SyntheticSet, labels: Labels | str, *, seed: int = 0,
            progress: Callable[[int, float], None] | None = None, trust_code: bool = False) -> SyntheticSet:
    """A finished hard-label set labelled by ``labels``: the same set ``condense(..., labels=labels)`` makes with
    this seed (the label mode draws from its own stream), without condensing again. The budget grows by the label
    loop's seconds and reads (its distinct-image count is the label loop's own)."""
    labels = parse_labels(labels) if isinstance(labels, str) else labels
    require(isinstance(labels, Labels), f"--labels must be a label mode or its spec string, got {labels!r}")
    require(synset.label_logits is None and synset.meta.get("labels", "hard") == "hard",
            "relabel takes a set with hard labels")
    labels.check()
    train = train.counted()
    labels.check_data(train, trust_code)
    started = time.perf_counter()
    out = SyntheticSet(images=synset.images.clone(), labels=synset.labels.clone(), classes=list(synset.classes),
                       mean=synset.mean, std=synset.std, lrs=synset.lrs, meta=dict(synset.meta),
                       init_state=synset.init_state)
    with PeakMemory(train.device) as peak:
        out = labels.apply(train, out, seeds.generator(seed, "labels"), Progress(progress), trust_code=trust_code)
    out.label_logits = out.label_logits.detach().float().cpu() if out.label_logits is not None else None
    seconds = round(time.perf_counter() - started, 2)
    spent = dict(out.meta.get("budget") or {})
    out.meta.update(labels=str(labels), recipe={**out.meta.get("recipe", {}), "labels": labels.describe()},
                    budget={**spent, **budget(out, train, seconds, peak),
                            "condense_seconds": round(spent.get("condense_seconds", 0) + seconds, 2),
                            "real_images_read": spent.get("real_images_read", 0) + train.reads.draws,
                            "label_seconds": seconds})
    return out


# What a set's budget measures of the machine and the moment (seconds, peak memory): reported in metrics.json, but
# left out of the file a run writes, so that a resumed run writes that file again byte for byte.
MEASURED = ("condense_seconds", "label_seconds", "peak_rss_mb", "peak_device_mb", "peak_measured", "compile")


def repeatable_meta(meta: dict) -> dict:
    """A set's metadata without what ``MEASURED`` names (at the top and in its budget)."""
    kept = {k: v for k, v in meta.items() if k not in MEASURED}
    if isinstance(meta.get("budget"), dict):
        kept["budget"] = {k: v for k, v in meta["budget"].items() if k not in MEASURED}
    return kept


def budget(synset: SyntheticSet, train: TrainSet, seconds: float, peak: PeakMemory) -> dict:
    """What a set costs to keep and what it cost to make."""
    size = lambda t: 0 if t is None else t.numel() * t.element_size()
    return {"images_bytes": size(synset.images), "labels_bytes": size(synset.labels) + size(synset.label_logits),
            "learned_rates_bytes": size(synset.lrs), "total_bytes": synset.nbytes(), "condense_seconds": seconds,
            "real_images_read": train.reads.draws, "distinct_real_images_read": train.reads.distinct,
            "train_images": len(train), **peak.describe()}


def _check_made(method: Method, synset, train: TrainSet, ipc: int) -> None:
    k = train.num_classes
    require(isinstance(synset, SyntheticSet), f"{method.name}.run returned {type(synset).__name__}, not a SyntheticSet")
    require(tuple(synset.images.shape) == (k * ipc, *train.input_shape),
            f"{method.name} made images of shape {tuple(synset.images.shape)}, expected {(k * ipc, *train.input_shape)}")


def _synset_tree(synset: SyntheticSet) -> dict:
    """A finished method's set, as the label loop's checkpoint keeps it."""
    return {"images": synset.images.detach(), "labels": synset.labels, "label_logits": synset.label_logits,
            "lrs": synset.lrs, "init_state": synset.init_state, "meta": synset.meta}


def _synset_from_tree(train: TrainSet, tree: dict) -> SyntheticSet:
    require(isinstance(tree, dict) and isinstance(tree.get("images"), torch.Tensor),
            "the label checkpoint is corrupt; start the run again with --overwrite")
    return SyntheticSet(images=tree["images"].to(train.device), labels=tree["labels"], classes=list(train.classes),
                        mean=tuple(train.mean), std=tuple(train.std), label_logits=tree.get("label_logits"),
                        lrs=tree.get("lrs"), meta=dict(tree.get("meta") or {}), init_state=tree.get("init_state"))
