"""The shared contract over every registered loss term and condensation method, and the tests that kill the
three wrong programs earlier suites let through (best-epoch test accuracy, a reseeded global RNG in condense(),
separate DSA draws for the real and the synthetic batch)."""

import json
import math
import typing
from dataclasses import dataclass

import pytest
import torch

from distillab import api, data
from distillab.condense import (DM, LABELS, METHODS, Labels, Method, SyntheticSet, condense, register_labels,
                               register_method)
from distillab.data import DATASETS, DataSource, Dataset, ImageSet, TrainSet, register_dataset
from distillab.errors import DistillabError
from distillab.evaluation import evaluate_images
from distillab.protocols import PROTOCOLS, Protocol
from distillab.kd import LOSSES, LossTerm, register_loss
from distillab.kd.functional import kd_loss
from distillab.models import MODELS, ModelFamily, register_model
from distillab.testing import (check_dataset, check_labels, check_loss_term, check_method, check_model,
                               contract_data)

import spy_models


@pytest.fixture(scope="module")
def train():
    return contract_data()


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_term_meets_the_contract(name):
    check_loss_term(LOSSES.get(name))


def test_kd_with_a_noisy_teacher_meets_the_contract():
    """Noise takes another path (a stream of the term's own, not distance-like): the contract runs it too."""
    check_loss_term(LOSSES.get("kd"), {"T": 4.0, "noise": 0.1})


@dataclass
class WarmKD(LossTerm):
    """DKD's warm-up as a plug-in (mdistiller scales DKD by min(epoch / warmup, 1), epochs counted from 1): here on
    Hinton's KD, from ``batch.schedule``."""

    T: float = 4.0
    warmup: int = 2
    seen: typing.ClassVar[list] = []

    def __call__(self, batch):
        WarmKD.seen.append(batch.schedule)  # what fit() gave
        ramp = min(batch.schedule.epoch / self.warmup, 1.0)
        return {"warm_kd": self.w * ramp * kd_loss(batch.student_logits, batch.teacher.logits, self.T)}


@pytest.fixture
def warm_kd():
    register_loss("warm_kd")(WarmKD)
    WarmKD.seen.clear()
    yield WarmKD
    LOSSES.unregister("warm_kd")


def test_a_term_with_a_warm_up_meets_the_contract_and_sees_the_schedule(warm_kd, digits_teacher, tmp_path):
    check_loss_term(warm_kd)
    warm_kd.seen.clear()
    api.distill(data="digits", teacher=digits_teacher, student="mlp:hidden=8", losses=["warm_kd:warmup=2", "kd"],
                epochs=3, batch_size=512, precision="fp32", out=tmp_path / "k", quiet=True)
    steps = -(-1214 // 512)  # digits' training split in batches of 512
    assert [(s.epoch, s.epochs, s.step, s.total_steps) for s in warm_kd.seen] == [
        (e, 3, (e - 1) * steps + b, 3 * steps) for e in (1, 2, 3) for b in range(steps)]
    logged = [json.loads(line) for line in (tmp_path / "k/metrics.jsonl").read_text().splitlines()]
    ramp = [r["train_warm_kd"] / r["train_kd_T4"] for r in logged if "train_warm_kd" in r]
    assert ramp == pytest.approx([0.5, 1.0, 1.0], rel=1e-5)  # beside plain kd on the same batches: min(epoch / 2, 1)


def test_a_schedule_reaches_an_objective_only_when_it_asks_for_it(tmp_path):
    from distillab.training import Schedule, takes_schedule

    assert not takes_schedule(lambda model, x, y, idx: {}) and takes_schedule(lambda m, x, y, i, schedule: {})
    assert Schedule(2, 4, 5, 16).fraction == 5 / 16 and Schedule().fraction == 0


@pytest.fixture
def source_path(tmp_path, monkeypatch):
    """What each built-in data source reads, made small in a temporary data home: a path, or ""."""
    import pickle

    import numpy as np
    from PIL import Image

    from distillab.data.sources import mnist

    monkeypatch.setenv("DISTILLAB_DATA", str(tmp_path))
    rng = np.random.default_rng(0)

    def make(name):
        if name == "npz":
            np.savez(tmp_path / "d.npz", x=rng.random((30, 1, 4, 4), dtype=np.float32), y=np.arange(30) % 3)
            return str(tmp_path / "d.npz")
        if name == "folder":
            for c in ("a", "b"):
                (tmp_path / "f" / c).mkdir(parents=True)
                for i in range(5):
                    Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)).save(tmp_path / "f" / c / f"{i}.png")
            return str(tmp_path / "f")
        if name == "hf":  # a save_to_disk folder of the Hugging Face datasets format (the test extra has it)
            datasets = pytest.importorskip("datasets")
            features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
            rows = {"image": [Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8)) for _ in range(10)],
                    "label": [i % 2 for i in range(10)]}
            datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "hf"))
            return str(tmp_path / "hf")
        if name == "cifar10":
            (tmp_path / "cifar-10-batches-py").mkdir()
            for part in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
                batch = {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), b"labels": list(range(10))}
                (tmp_path / "cifar-10-batches-py" / part).write_bytes(pickle.dumps(batch))
        if name == "cifar100":  # its extracted folder: every one of the 100 classes once, in train and test
            (tmp_path / "cifar-100-python").mkdir()
            for part in ("train", "test"):
                batch = {"data": rng.integers(0, 256, (100, 3072), dtype=np.uint8), "fine_labels": list(range(100))}
                (tmp_path / "cifar-100-python" / part).write_bytes(pickle.dumps(batch))
            meta = {"fine_label_names": [f"c{i}" for i in range(100)]}
            (tmp_path / "cifar-100-python" / "meta").write_bytes(pickle.dumps(meta))
        if name == "mnist":
            arrays = [np.zeros((60000, 28, 28), np.uint8), (np.arange(60000) % 10).astype(np.uint8),  # its shapes
                      np.zeros((10000, 28, 28), np.uint8), (np.arange(10000) % 10).astype(np.uint8)]
            (tmp_path / "mnist").mkdir()
            for file, a in zip(mnist.MNIST_FILES, arrays):
                mnist._write_idx(tmp_path / "mnist" / file, a)
            (tmp_path / "mnist" / "SHA256").write_text(mnist._mnist_digest(arrays) + "\n")
        return ""
    return make


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_data_source_meets_the_contract(name, source_path):
    check_dataset(DATASETS.get(name), source_path(name))


@dataclass
class OneClass(DataSource):
    def load(self, path, fetch):  # every label the same: a classifier cannot be trained on it
        x = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        return Dataset("one-class", ImageSet(x, torch.zeros(8, dtype=torch.int64)),
                       ImageSet(x[:2], torch.zeros(2, dtype=torch.int64)), ["a", "b"], (0.5,), (0.2,))


def test_a_source_that_leaves_a_class_without_images_is_refused():
    register_dataset("one-class")(OneClass)
    try:
        with pytest.raises((AssertionError, DistillabError), match="no training examples"):
            check_dataset(OneClass)
    finally:
        DATASETS.unregister("one-class")


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_family_meets_the_contract(name):
    check_model(MODELS.get(name), {"width": 8} if name in ("convnet", "resnet18") else
                {"hidden": (16,), "dropout": 0.5} if name == "mlp" else {})


@pytest.mark.parametrize("name", LABELS.names())
def test_every_label_mode_meets_the_contract(name, train, digits_teacher):
    check_labels(LABELS.get(name), {"model": str(digits_teacher)} if name == "teacher" else None, train)


@dataclass
class GlobalLabels(Labels):
    def apply(self, train, synset, generator, progress=None, *, trust_code=False):
        synset.label_logits = torch.randn(len(synset.images), train.num_classes)  # the global RNG
        return synset


def test_the_contract_fails_a_label_mode_that_draws_from_the_global_rng(train):
    register_labels("broken-global")(GlobalLabels)
    try:
        with pytest.raises(AssertionError, match="global RNG"):
            check_labels(GlobalLabels, {}, train)
    finally:
        LABELS.unregister("broken-global")


@pytest.mark.parametrize("name", METHODS.names())
def test_every_condensation_method_meets_the_contract(name, train):
    check_method(METHODS.get(name), train)


# ---- the contract catches broken parts ----------------------------------------------------------------------


@dataclass
class GlobalNoise(LossTerm):
    def __call__(self, batch):  # draws from the global RNG
        return {"noisy": self.w * (batch.student_logits.pow(2).mean() + torch.rand(()))}


@dataclass
class ClaimsDistance(LossTerm):
    distance_like = True

    def __call__(self, batch):  # not zero when the student equals the teacher
        return {"ce_really": self.w * torch.nn.functional.cross_entropy(batch.student_logits, batch.labels)}


@dataclass
class UndeclaredStream(LossTerm):
    def build(self, sample, generator):  # a stream of its own that generators() does not name: not checkpointed
        self.g = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 31, (), generator=generator)))
        return []

    def __call__(self, batch):
        return {"jitter": self.w * (batch.student_logits.pow(2).mean() + torch.rand((), generator=self.g))}


@dataclass
class InfiniteAtTheStart(LossTerm):
    def __call__(self, batch):  # a warm-up that divides by the epochs before this one: infinite at the first step
        return {"ramped": self.w * batch.student_logits.pow(2).mean() / (batch.schedule.epoch - 1)}


@dataclass
class NoClassifier(ModelFamily):
    def build(self, input_shape, num_classes):  # its last layer is not called classifier: feature taps miss it
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(input_shape), num_classes))


@dataclass
class GlobalWeights(ModelFamily):
    def build(self, input_shape, num_classes):  # weights re-drawn from a reseeded global RNG, not the generator
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten())
        net.classifier = torch.nn.Linear(math.prod(input_shape), num_classes)
        return net


@dataclass
class Reseeds(Method):
    def run(self, train, ipc, generator, progress=None):
        torch.manual_seed(0)  # the wrong program: reseeding inside a method (or condense())
        images = torch.randn(train.num_classes * ipc, *train.input_shape)
        return SyntheticSet.class_major(train, images, ipc)


@dataclass
class WrongCount(Method):
    def run(self, train, ipc, generator, progress=None):
        images = torch.zeros(train.num_classes * (ipc + 1), *train.input_shape)
        return SyntheticSet.class_major(train, images, ipc + 1)


@pytest.mark.parametrize("cls,registry,register,check", [
    (GlobalNoise, LOSSES, register_loss, check_loss_term),
    (ClaimsDistance, LOSSES, register_loss, check_loss_term),
    (UndeclaredStream, LOSSES, register_loss, check_loss_term),
    (InfiniteAtTheStart, LOSSES, register_loss, check_loss_term),
    (NoClassifier, MODELS, register_model, check_model),
    (GlobalWeights, MODELS, register_model, check_model),
    (Reseeds, METHODS, register_method, check_method),
    (WrongCount, METHODS, register_method, check_method),
])
def test_the_contract_fails_broken_parts(cls, registry, register, check, train):
    register(f"broken-{cls.__name__.lower()}")(cls)
    try:
        with pytest.raises((AssertionError, DistillabError)):
            check(cls, train) if check is check_method else check(cls)
    finally:
        registry.unregister(cls.name)


def test_condense_itself_leaves_the_global_rng_alone(train):
    """condense() is where a 'torch.manual_seed(seed)' would hide: run every method through it with two global
    states; the global state must come back unchanged and the sets must not depend on it."""
    for name in METHODS.names():
        method = METHODS.get(name)(**METHODS.get(name).quick)
        sets = []
        for global_seed in (11, 12):
            torch.manual_seed(global_seed)
            state = torch.random.get_rng_state()
            sets.append(condense(train, method, 1, seed=5).images)
            assert torch.equal(torch.random.get_rng_state(), state), name
        assert torch.equal(*sets), name


# ---- the evaluation protocol reads the test set once per run, after training --------------------------------


def test_protocol_meets_the_test_set_only_after_the_final_epoch():
    splits = data.split(data.load("digits"))
    images, labels = splits.train.x[:40], splits.train.y[:40]
    test_storage = splits.test.x.untyped_storage().data_ptr()
    spy_models.FORWARDS.clear()
    proto = Protocol(epochs=4, runs=2, batch_size=16, models=("import:spy_models:spy_mlp",))
    result = evaluate_images(images, labels, splits.test, proto, seed=0, num_classes=10)
    per_model: dict[int, list] = {}
    for model, training, storage in spy_models.FORWARDS:
        per_model.setdefault(model, []).append((training, storage == test_storage))
    assert len(per_model) == 2
    batches = -(-len(splits.test) // 128)  # one pass over the test set, in predict_logits' batches of 128
    for events in per_model.values():
        on_test = [i for i, (_, test) in enumerate(events) if test]
        training = [i for i, (mode, _) in enumerate(events) if mode]
        assert len(on_test) == batches, "the test set was read more than once per run"
        assert min(on_test) > max(training), "a model met the test set before its final epoch"
    assert len(result["import:spy_models:spy_mlp"]["runs"]) == 2


# ---- DM augments the real and the synthetic batch of a class with the same draw ------------------------------


def test_dm_siamese_augmentation_shares_one_draw_per_class():
    """One real image per class and a synthetic set that starts as those images: under a shared DSA draw both
    sides embed identically, so the matching loss is zero at every iteration; separate draws make it positive."""
    x = torch.randn(10, 1, 12, 12, generator=torch.Generator().manual_seed(123))
    train = TrainSet(x, torch.arange(10), [str(c) for c in range(10)], (0.0,), (1.0,), {"data": "test"})
    losses = []
    condense(train, DM(iterations=12, batch_real=1, model="convnet:width=8,depth=2", dsa=True), 1, seed=0,
             progress=lambda it, loss: losses.append(loss))
    assert len(losses) == 12 and max(losses) < 1e-8, losses
    plain = []
    condense(train, DM(iterations=3, batch_real=1, model="convnet:width=8,depth=2", init="noise"), 1, seed=0,
             progress=lambda it, loss: plain.append(loss))
    assert min(plain) > 1e-3  # the check can fail: sets that differ from the real images give a positive loss


def test_the_protocol_gives_dropout_its_own_stream():
    """A model with dropout trained by the evaluation protocol neither reads nor moves the global RNG."""
    from distillab.testing import _global_rng_set_to

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=g), torch.arange(40) % 4
    proto = Protocol(epochs=3, runs=2, models=("mlp:hidden=16,dropout=0.5",))
    results = []
    for state in (1, 2):
        with _global_rng_set_to(state):
            results.append(evaluate_images(x, y, ImageSet(x, y), proto, seed=0, num_classes=4))
    assert results[0]["mlp:hidden=16,dropout=0.5"]["runs"] == results[1]["mlp:hidden=16,dropout=0.5"]["runs"]


@pytest.mark.parametrize("name", PROTOCOLS.names())
def test_every_evaluation_protocol_meets_the_contract(name):
    from distillab.testing import check_protocol, contract_synset

    cls = PROTOCOLS.get(name)
    synset, splits = contract_synset("bptt" if name == "wang2018" else "random")
    check_protocol(cls, synset, splits)
