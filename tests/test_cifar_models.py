"""The CIFAR networks of the distillation papers' tables (models/families/resnet_cifar.py, wrn.py, vgg.py,
mobilenetv2.py, shufflenetv1.py, shufflenetv2.py): their sizes against the papers' "#params", their shapes, specs,
gradients and errors. No training."""

import pytest
import torch

from distillab import seeds
from distillab.errors import DistillabError
from distillab.kd.taps import FeatureTaps
from distillab.models import (MODELS, build_model, count_parameters, final_linear_path, load_model, save_model,
                              stateful_layers)

# spec: (parameters at 3x32x32 inputs and 100 classes, exactly as CRD's code (RepDistiller, models/) builds the
# network -- checked against it when these families were written -- and the "#params" the KD papers' CIFAR-100
# tables print, in millions, as in docs/reference.md §1)
PAPER = {
    "resnet56": (861_620, 0.86),
    "resnet110": (1_736_564, 1.74),
    "resnet20": (278_324, 0.28),
    "resnet32x4": (7_433_860, 7.43),
    "resnet8x4": (1_233_540, 1.23),
    "wrn:depth=40,width=2": (2_255_156, 2.25),
    "wrn:depth=16,width=2": (703_284, 0.70),
    "vgg13": (9_462_180, 9.46),
    "vgg8": (3_965_028, 3.96),
    "mobilenetv2": (812_836, 0.81),
    "shufflenetv1": (949_258, 0.95),
    "shufflenetv2": (1_355_528, 1.36),
}
# the same code's other sizes (in CRD's model list, not in the tables)
OTHERS = {"resnet8": 83_892, "resnet14": 181_108, "resnet32": 472_756, "resnet44": 667_188,
          "wrn:depth=40,width=1": 569_780, "wrn:depth=16,width=1": 180_916, "vgg11": 9_277_284}

SPECS = list(PAPER)
SMALL = ["resnet20", "resnet8x4", "wrn:depth=16,width=2", "vgg8", "mobilenetv2", "shufflenetv1", "shufflenetv2"]


def _paper_rounding(count: int, paper: float) -> bool:
    """The tables print millions to two decimals, mostly rounded (ResNet-110's 1,736,564 is 1.74) and at least once
    cut (VGG-8's 3,965,028 is 3.96): either reading of the count must give the printed number."""
    millions = count / 1e6
    return abs(round(millions, 2) - paper) < 1e-9 or abs(int(millions * 100) / 100 - paper) < 1e-9


@pytest.mark.parametrize("spec", SPECS)
def test_parameter_counts_match_the_papers_tables(spec):
    exact, paper = PAPER[spec]
    model = build_model(spec, (3, 32, 32), 100)
    assert count_parameters(model) == exact
    assert _paper_rounding(exact, paper), f"{spec}: {exact / 1e6:.4f}M does not print as {paper}M"
    assert abs(exact / 1e6 - paper) < 0.0055  # within the tables' last digit


@pytest.mark.parametrize("spec", list(OTHERS))
def test_parameter_counts_of_the_other_sizes(spec):
    assert count_parameters(build_model(spec, (3, 32, 32), 100)) == OTHERS[spec]


@pytest.mark.parametrize("spec", SPECS)
def test_cifar100_logits_and_the_features_part(spec):
    model = build_model(spec, (3, 32, 32), 100).eval()
    x = torch.randn(3, 3, 32, 32, generator=seeds.generator(0))
    with torch.no_grad():
        out, feats = model(x), model.features(x)
    assert out.shape == (3, 100) and bool(torch.isfinite(out).all())
    assert final_linear_path(model) == "classifier" and feats.shape == (3, model.classifier.in_features)
    assert torch.allclose(model.classifier(feats), out)  # .features is everything before the classifier
    assert stateful_layers(model)  # batch norm: fine for KD, refused where a model must be stateless


@pytest.mark.parametrize("spec", SMALL)
@pytest.mark.parametrize("shape,classes", [((1, 28, 28), 10), ((1, 8, 8), 3), ((3, 64, 64), 200)])
def test_other_input_shapes(spec, shape, classes):
    model = build_model(spec, shape, classes)
    assert model(torch.randn(2, *shape)).shape == (2, classes)


@pytest.mark.parametrize("spec", SMALL)
def test_signals(spec):
    """1-D signals are held as (C, 1, L) images: every family takes them but the VGGs, which refuse in one line."""
    if spec.startswith("vgg"):
        with pytest.raises(DistillabError, match=r"at least 8x8 pixels, got 1x64") as e:
            build_model(spec, (2, 1, 64), 5)
        assert "\n" not in str(e.value)
    else:
        assert build_model(spec, (2, 1, 64), 5)(torch.randn(2, 2, 1, 64)).shape == (2, 5)


@pytest.mark.parametrize("spec", SMALL + ["resnet32x4", "vgg13"])
def test_spec_round_trip(spec):
    family = MODELS.parse(spec)
    again = MODELS.parse(str(family))
    assert again == family and str(again) == str(family) and again.name == spec.partition(":")[0]
    assert MODELS.from_description(family.describe(), source="test") == family
    a = build_model(spec, (3, 32, 32), 100, seeds.generator(7)).state_dict()
    b = build_model(str(family), (3, 32, 32), 100, seeds.generator(7)).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_spec_strings_read_as_written():
    assert str(MODELS.parse("wrn:depth=16,width=2")) == "wrn:init=default,depth=16,width=2"
    assert str(MODELS.parse("resnet8x4")) == "resnet8x4:init=default"
    assert str(MODELS.parse("mobilenetv2")) == "mobilenetv2:init=default,width=0.5,expand=6"
    assert str(MODELS.parse("wrn")) == str(MODELS.parse("wrn:depth=40,width=2"))  # WRN-40-2, the common teacher


@pytest.mark.parametrize("spec", SPECS)
def test_forward_and_backward(spec):
    model = build_model(spec, (3, 32, 32), 100, seeds.generator(1))
    x = torch.randn(4, 3, 32, 32, generator=seeds.generator(2))
    y = torch.arange(4) * 7
    torch.nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert float(first.weight.grad.abs().sum()) > 0 and float(model.classifier.weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("spec,match", [
    ("resnet56:depth=20", "unknown option"), ("vgg8:bn=0", "unknown option"),
    ("shufflenetv1:groups=8", "unknown option"), ("wrn:depth=17", "depth must be 6n\\+4"),
    ("wrn:depth=4", "depth must be 10..1000"), ("wrn:width=0", "width must be"),
    ("wrn:depth=abc", "whole number"), ("mobilenetv2:width=0", "width must be"), ("mobilenetv2:expand=0", "expand"),
    ("resnet56:init=he", "must be one of"), ("vgg13:init=kaiming", "must be one of")])
def test_bad_options_are_one_line_errors(spec, match):
    with pytest.raises(DistillabError, match=match) as e:
        build_model(spec, (3, 32, 32), 100)
    assert "\n" not in str(e.value)


def test_weights_come_from_the_generator_and_the_init_option():
    g = lambda seed: seeds.generator(seed)
    a, b, c = (build_model("resnet20", (3, 32, 32), 100, g(s)) for s in (3, 3, 4))
    assert torch.equal(a.features.stem[0].weight, b.features.stem[0].weight)
    assert not torch.equal(a.features.stem[0].weight, c.features.stem[0].weight)
    # the reference code's initialisation: Kaiming-normal (fan-out) convolutions; VGG's classifier N(0, 0.01)
    w = build_model("vgg8", (3, 32, 32), 100, g(3))
    conv = w.features.block4[0].weight
    assert abs(float(conv.detach().std()) / (2 / (conv.shape[0] * 9)) ** 0.5 - 1) < 0.05
    assert abs(float(w.classifier.weight.detach().std()) / 0.01 - 1) < 0.05 and not w.classifier.bias.any()
    x = build_model("resnet20:init=xavier", (3, 32, 32), 100, g(3))
    assert not torch.equal(x.features.stem[0].weight, a.features.stem[0].weight)


@pytest.mark.parametrize("spec,paths", [
    ("resnet8x4", ["features.stem", "features.stage1", "features.stage2", "features.stage3", "features.pool"]),
    ("wrn:depth=16,width=2", ["features.stem", "features.stage3", "features.head"]),
    ("vgg8", ["features.block0", "features.block4", "features.pool"]),
    ("mobilenetv2", ["features.stem", "features.stage1", "features.stage7", "features.head"]),
    ("shufflenetv1", ["features.stem", "features.stage3"]),
    ("shufflenetv2", ["features.stem", "features.stage3", "features.head"])])
def test_documented_tap_paths(spec, paths):
    model = build_model(spec, (3, 32, 32), 100)
    taps = FeatureTaps(model, paths + ["penultimate"], "student")
    model(torch.randn(2, 3, 32, 32))
    assert set(taps.features) == set(paths) | {"penultimate"}
    assert taps.features["penultimate"].shape == (2, model.classifier.in_features)
    taps.remove()


def test_the_fitnets_pair_resnet32x4_to_resnet8x4_taps_equal_maps():
    """CRD's resnet32x4 -> resnet8x4: the last stages give maps of one shape (256 x 8 x 8 on CIFAR)."""
    shapes = []
    for spec in ("resnet32x4", "resnet8x4"):
        model = build_model(spec, (3, 32, 32), 100)
        taps = FeatureTaps(model, ["features.stage3"], spec)
        model(torch.randn(2, 3, 32, 32))
        shapes.append(tuple(taps.features["features.stage3"].shape))
        taps.remove()
    assert shapes == [(2, 256, 8, 8)] * 2


def test_a_saved_model_loads_back(tmp_path):
    model = build_model("wrn:depth=16,width=1", (3, 32, 32), 10, seeds.generator(5))
    path = tmp_path / "m.safetensors"
    save_model(path, model, spec="wrn:depth=16,width=1", input_shape=(3, 32, 32), classes=[str(i) for i in range(10)],
               mean=[0.5] * 3, std=[0.25] * 3)
    loaded, meta = load_model(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded(x), model.eval()(x)) and meta["spec"] == "wrn:depth=16,width=1"


def test_a_channel_shuffling_model_exports_for_any_batch_size(tmp_path):
    """ShuffleNet's channel shuffle reshapes by the input's own sizes: the TorchScript export, traced at batch 2,
    runs at batch 5."""
    import distillab

    model = build_model("shufflenetv2", (3, 32, 32), 10, seeds.generator(6))
    path = tmp_path / "s.safetensors"
    save_model(path, model, spec="shufflenetv2", input_shape=(3, 32, 32), classes=[str(i) for i in range(10)],
               mean=[0.0] * 3, std=[1.0] * 3)
    distillab.export(path, tmp_path / "s.ts")
    x = torch.rand(5, 3, 32, 32, generator=seeds.generator(0))
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(tmp_path / "s.ts"))(x), model.eval()(x), atol=1e-5)
