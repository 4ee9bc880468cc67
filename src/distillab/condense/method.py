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
from ..checkpoint import Checkpoints, loop_running, restore
from ..data import TrainSet
from ..errors import require
from ..registry import Registry
from ..specs import option_values, spec_string
from .synset import SyntheticSet, dataset_hash

class Progress:
    """What ``condense()`` hands a method's ``run``: ``progress(iteration, loss, live)`` reports an iteration and
    keeps the loop resumable; ``start = progress.restore(live)`` puts a saved state back into the live objects
    (tensors, optimisers, generators) and says where to continue. ``live`` is optional for methods that do not
    checkpoint; they then restart from scratch when a run is resumed."""

    def __init__(self, report: Callable[[int, float], None] | None = None, checkpoints: Checkpoints | None = None):
        self.report, self.checkpoints = report, checkpoints

    def restore(self, live: dict) -> int:
        saved = self.checkpoints.load() if self.checkpoints else None
        if saved is None:
            return 0
        restore(live, saved["live"])
        return saved["iteration"]

    def __call__(self, iteration: int, loss: float, live: dict | None = None) -> None:
        if self.report:
            self.report(iteration, loss)
        if self.checkpoints and live is not None:
            self.checkpoints.after(iteration + 1, lambda: {"live": live, "iteration": iteration + 1})


@dataclass
class Method:
    """Base class of condensation methods. Subclasses are dataclasses whose fields are their options."""

    name: ClassVar[str] = ""
    # Options for a seconds-long run on digits: the contract test and `bench --quick` use them.
    quick: ClassVar[dict] = {}

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Refuse impossible options (one line, naming the option)."""

    def check_data(self, train: TrainSet) -> None:
        """Refuse data this method cannot condense (e.g. a model that does not fit it), before any work."""

    @property
    def iterations_total(self) -> int:
        """How many times ``run`` reports progress (0 for one-shot methods)."""
        return int(getattr(self, "iterations", 0))

    def __str__(self) -> str:
        return spec_string(self.name, self)

    def describe(self) -> dict:
        return {"name": self.name, **option_values(self)}

    def run(self, train: TrainSet, ipc: int, generator: torch.Generator,
            progress: Progress | None = None) -> SyntheticSet:
        raise NotImplementedError

    @classmethod
    def as_made(cls, synset: SyntheticSet, test, *, runs: int, seed: int, trust_code: bool = False) -> dict | None:
        """Accuracy of models trained the way this method meant its sets to be used, when that differs from the
        protocol (bptt: its learned schedule); None otherwise."""
        return None


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
    return train.x[torch.cat(picks)].clone()


def initial_images(train: TrainSet, ipc: int, init: str, g: torch.Generator) -> torch.Tensor:
    """Where learned methods start: real images (``real``) or standard normal noise (``noise``)."""
    if init == "real":
        return random_real_images(train, ipc, g)
    return torch.randn(train.num_classes * ipc, *train.input_shape, generator=g).to(train.device)


def condense(train: TrainSet, method: Method | str, ipc: int, *, seed: int = 0,
             progress: Callable[[int, float], None] | None = None,
             checkpoints: Checkpoints | None = None) -> SyntheticSet:
    """Condense ``train`` into ``ipc`` images per class with ``method``; the set records how it was made.

    ``progress(iteration, loss)`` is told every iteration; ``checkpoints`` keep the loop resumable (a saved one is
    resumed from, to the same bits as an uninterrupted run)."""
    method = parse_method(method) if isinstance(method, str) else method
    require(isinstance(method, Method), f"a condensation method must be a Method or a spec string, got {method!r}")
    method.check()
    check_ipc(train, ipc)
    method.check_data(train)
    started = time.perf_counter()
    with loop_running():
        synset = method.run(train, ipc, seeds.generator(seed), Progress(progress, checkpoints))
    k = train.num_classes
    require(isinstance(synset, SyntheticSet), f"{method.name}.run returned {type(synset).__name__}, not a SyntheticSet")
    require(tuple(synset.images.shape) == (k * ipc, *train.input_shape),
            f"{method.name} made images of shape {tuple(synset.images.shape)}, expected {(k * ipc, *train.input_shape)}")
    synset.images = synset.images.detach().float().cpu().contiguous()
    synset.labels = synset.labels.cpu()
    synset.lrs = synset.lrs.detach().cpu() if synset.lrs is not None else None
    if synset.init_state is not None:
        synset.init_state = {k: v.detach().cpu() for k, v in synset.init_state.items()}
    synset.meta = {"method": method.name, "recipe": {"method": method.name, "ipc": ipc, "seed": seed,
                                                     **option_values(method)},
                   "source": {**train.source, "hash": dataset_hash(train)},
                   "condense_seconds": round(time.perf_counter() - started, 2), "distillab_version": __version__,
                   **synset.meta}
    return synset
