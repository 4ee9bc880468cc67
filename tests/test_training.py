import pytest
import torch

from distillab import data
from distillab.errors import DistillabError
from distillab.models import build_model
from distillab.training import TrainConfig, choose_precision, fit, lr_factor


@pytest.fixture(scope="module")
def splits():
    return data.split(data.load("digits"))


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_same_seed_same_weights_and_global_rng_untouched(splits):
    cfg = TrainConfig(epochs=2, batch_size=64, augment="shift:1", seed=7)
    state = torch.random.get_rng_state()
    runs = []
    for _ in range(2):
        m = build_model("mlp:hidden=16,dropout=0.2", splits.input_shape, 10, torch.Generator().manual_seed(7))
        fit(m, splits, cfg)
        runs.append(_params(m))
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(torch.random.get_rng_state(), state)


def test_learns_digits_and_logs_terms(splits):
    m = build_model("mlp:hidden=32", splits.input_shape, 10)
    result = fit(m, splits, TrainConfig(epochs=5, batch_size=64))
    assert result.history[-1]["val_accuracy"] > 0.85
    assert {"train_ce", "train_loss", "val_accuracy", "lr", "seconds"} <= set(result.history[0])


def test_best_val_selection_restores_best_epoch(splits):
    m = build_model("mlp:hidden=16", splits.input_shape, 10)
    result = fit(m, splits, TrainConfig(epochs=4, select="best-val", lr=0.5, schedule="constant"))
    from distillab.training import accuracy
    assert accuracy(m, splits.val)[0] == pytest.approx(result.best_val_accuracy)


def test_schedules():
    cfg = TrainConfig(epochs=10, schedule="step")
    assert [lr_factor(cfg, e, 0) for e in (0, 4, 5, 9)] == [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.1)]
    assert lr_factor(TrainConfig(schedule="cosine"), 0, 0.0) == 1.0
    assert lr_factor(TrainConfig(schedule="cosine"), 0, 1.0) == pytest.approx(0.0)


def test_max_norm_caps_incoming_weights(splits):
    m = build_model("mlp:hidden=16", splits.input_shape, 10)
    fit(m, splits, TrainConfig(epochs=1, max_norm=0.5, lr=0.5))
    assert float(m.features[1].weight.detach().norm(dim=1).max()) <= 0.5 + 1e-5


@pytest.mark.parametrize("kwargs", [dict(epochs=0), dict(epochs=-1), dict(lr=0), dict(batch_size=0),
                                    dict(label_smoothing=1.0), dict(optimizer="lbfgs"), dict(momentum=1.5)])
def test_bad_config(kwargs):
    with pytest.raises(DistillabError):
        TrainConfig(**kwargs).check()


def test_bf16_autocast_runs_and_learns(splits):
    m = build_model("mlp:hidden=32", splits.input_shape, 10)
    result = fit(m, splits, TrainConfig(epochs=3, batch_size=64, precision="bf16"))
    assert result.history[-1]["val_accuracy"] > 0.7


def test_the_allocator_setting_takes_effect_once_and_can_be_turned_off(monkeypatch):
    import platform

    from distillab import speed

    monkeypatch.setitem(speed._DONE, "tuned", None)
    monkeypatch.setenv("DISTILLAB_NO_MALLOPT", "1")
    assert speed.tune_allocator() is False
    monkeypatch.setitem(speed._DONE, "tuned", None)
    monkeypatch.delenv("DISTILLAB_NO_MALLOPT")
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert speed.tune_allocator() is expected and speed.tune_allocator() is expected


def test_precision_auto_times_both_and_keeps_the_faster_at_equal_loss(splits):
    from distillab.training import cross_entropy_objective

    def probe(fp32_seconds, bf16_seconds):
        ticks = iter([0.0, fp32_seconds] * 5 + [0.0, bf16_seconds] * 5)  # start and end of each probe step
        m = build_model("mlp:hidden=16", splits.input_shape, 10)
        return choose_precision(m, cross_entropy_objective(), splits.train.x, splits.train.y,
                                TrainConfig(batch_size=64), timer=lambda: next(ticks))

    assert probe(0.1, 0.5)[0] == "fp32"
    choice, record = probe(0.5, 0.1)
    assert choice == "bf16" and record["bf16_step_seconds"] == 0.1  # one step's losses agree to 2% on this MLP
    assert probe(0.5, 0.47)[0] == "fp32"  # not 10% faster: not worth bf16's rounding


def test_precision_auto_is_recorded(tmp_path):
    from distillab import train

    r = train(data="digits", model="mlp:hidden=8", epochs=1, precision="auto", out=tmp_path / "t", quiet=True)
    assert r.metrics["precision"] in ("fp32", "bf16") and r.metrics["precision_probe"]["chosen"] == r.metrics["precision"]
