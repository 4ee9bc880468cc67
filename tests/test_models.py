import sys

import pytest
import torch

from distillab.errors import DistillabError
from distillab.models import build_model, count_parameters, final_linear_path

SPECS = ["mlp:hidden=32-16", "mlp:hidden=8,dropout=0.5", "convnet:width=8", "convnet:width=8,depth=2,norm=batch,pool=max",
         "convnet:width=8,norm=layer", "convnet:width=8,norm=none", "lenet5", "lenet5-half", "resnet18:width=8"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_any_shape_and_class_count(spec, shape):
    model = build_model(spec, shape, 7)
    assert model(torch.randn(3, *shape)).shape == (3, 7)


def test_convnet3_mnist_parameter_count():
    # docs/reference.md §2: ConvNet-3, width 128, instance norm, MNIST: 317,706 parameters
    assert count_parameters(build_model("convnet:width=128,depth=3", (1, 28, 28), 10)) == 317_706


def test_hinton_mlp_sizes():
    assert count_parameters(build_model("mlp:hidden=1200-1200", (1, 28, 28), 10)) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 12010
    assert count_parameters(build_model("mlp:hidden=800-800", (1, 28, 28), 10)) == 784 * 800 + 800 + 800 * 800 + 800 + 8010


def test_init_from_generator_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_model("convnet:width=8", (1, 8, 8), 10, torch.Generator().manual_seed(1))
    assert torch.equal(torch.random.get_rng_state(), state)
    b = build_model("convnet:width=8", (1, 8, 8), 10, torch.Generator().manual_seed(1))
    c = build_model("convnet:width=8", (1, 8, 8), 10, torch.Generator().manual_seed(2))
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_xavier_init_option():
    g = lambda: torch.Generator().manual_seed(3)
    default, xavier = build_model("lenet5", (1, 28, 28), 10, g()), build_model("lenet5:init=xavier", (1, 28, 28), 10, g())
    assert torch.equal(build_model("lenet5:init=default", (1, 28, 28), 10, g()).classifier.weight, default.classifier.weight)
    for m in xavier.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            assert torch.count_nonzero(m.bias) == 0
            fan_in, fan_out = m.weight[0].numel(), m.weight.shape[0] * m.weight[0, 0].numel()
            expected = (2 / (fan_in + fan_out)) ** 0.5  # xavier-normal std
            assert abs(float(m.weight.detach().std()) / expected - 1) < 0.25, m
    assert not torch.equal(default.classifier.weight, xavier.classifier.weight)
    same = build_model("lenet5:init=xavier", (1, 28, 28), 10, g())
    assert torch.equal(same.features[0].weight, xavier.features[0].weight)  # still drawn from the generator


def test_penultimate_is_input_of_final_linear():
    assert final_linear_path(build_model("mlp:hidden=16", (1, 8, 8), 10)) == "classifier"
    assert final_linear_path(build_model("lenet5", (1, 28, 28), 10)) == "classifier"


@pytest.mark.parametrize("spec,match", [("transformer", "unknown model"), ("mlp:hidden=abc", "whole numbers"),
                                        ("mlp:width=3", "unknown option"), ("convnet:norm=group", "must be one of"),
                                        ("mlp:dropout=2", "dropout must be 0..0.95"), ("import:nope.module:f", "cannot import"),
                                        ("lenet5:init=he", "must be one of")])
def test_bad_model_specs(spec, match):
    with pytest.raises(DistillabError, match=match):
        build_model(spec, (1, 8, 8), 10)


def test_import_spec(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "import torch\n"
        "def tiny(input_shape, num_classes, hidden='5'):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(input_shape[1] * input_shape[2], int(hidden)),\n"
        "                               torch.nn.ReLU(), torch.nn.Linear(int(hidden), num_classes))\n"
        "def broken(input_shape, num_classes):\n"
        "    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("import:my_models:tiny:hidden=6", (1, 8, 8), 4)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 4) and model[1].out_features == 6
    with pytest.raises(DistillabError, match="not a torch.nn.Module"):
        build_model("import:my_models:broken", (1, 8, 8), 4)
    sys.modules.pop("my_models", None)


def test_model_with_wrong_output_shape_is_a_clear_error():
    with pytest.raises(DistillabError, match="outputs of shape"):
        build_model("import:torch.nn:Identity", (1, 8, 8), 10)
