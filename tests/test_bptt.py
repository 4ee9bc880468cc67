"""BPTT dataset distillation (Wang et al. 2018): the unroll, the step batches, distillation and its evaluation."""

import pytest
import torch
import torch.nn.functional as F

from distillab import data
from distillab.condense import SYNSET_FORMAT, SyntheticSet
from distillab.condense.methods.bptt import (BPTT, bptt_distill, bptt_meta, check_unrollable,
                                             inverse_softplus, step_batches, train_with_schedule, unroll)
from distillab.condense.synset import init_state_from_tensors, init_state_tensors
from distillab.errors import DistillabError
from distillab.files import load_tensors, save_tensors
from distillab.models import build_model
from distillab.training import accuracy

K = 10
# Small and fast on 8x8 digits: noise images, 5 steps, and larger rates than the paper's MNIST defaults so that
# 30 iterations are enough (the distilled set reaches ~0.8 test accuracy across seeds; chance is 0.1).
FAST = dict(iterations=30, steps=5, epochs=1, batch_real=256, model="mlp:hidden=32", lr_init=0.1, lr_img=0.05)


@pytest.fixture(scope="module")
def splits():
    return data.split(data.load("digits"))


def tiny_mlp(seed=0, hidden=8, shape=(1, 4, 4), classes=3):
    model = build_model(f"mlp:hidden={hidden}", shape, classes, torch.Generator().manual_seed(seed))
    return model, {n: p.detach().clone() for n, p in model.named_parameters()}


def noise_set(splits, seed, ipc=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(K * ipc, *splits.input_shape, generator=g)
    return images, torch.arange(K).repeat_interleave(ipc), g


def as_synset(splits, images, raw_lrs, cfg, labels=None):
    labels = torch.arange(K).repeat_interleave(len(images) // K) if labels is None else labels
    return SyntheticSet(images=images, labels=labels, classes=list(splits.classes), mean=splits.mean,
                        std=splits.std, lrs=raw_lrs, meta={"bptt": bptt_meta(cfg)})


@pytest.fixture(scope="module")
def fixed_run(splits):
    cfg = BPTT(init_net="fixed", **FAST)
    images, labels, g = noise_set(splits, seed=0)
    losses = []
    x, raw, init = bptt_distill(splits.train_set(), images, labels, cfg, g, on_iteration=lambda it, v: losses.append((it, v)))
    return cfg, images, labels, x, raw, init, losses


# ---- the unroll ----


def test_unroll_gradients_reach_images_and_every_learning_rate():
    model, p0 = tiny_mlp()
    g = torch.Generator().manual_seed(1)
    images = torch.randn(6, 1, 4, 4, generator=g).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    raw = torch.full((4,), inverse_softplus(0.1)).requires_grad_(True)
    params = unroll(model, p0, images, labels, raw, steps=2)
    real = torch.randn(20, 1, 4, 4, generator=g)
    loss = F.cross_entropy(torch.func.functional_call(model, params, (real,)), torch.arange(20) % 3)
    loss.backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert raw.grad is not None and (raw.grad != 0).all(), raw.grad


def test_unroll_with_zero_learning_rates_leaves_the_params_unchanged():
    model, p0 = tiny_mlp()
    images = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    params = unroll(model, p0, images, torch.arange(3), torch.full((5,), -40.0), steps=5)
    for name, p in p0.items():
        assert torch.allclose(params[name], p, atol=1e-7), name
    # and a real rate does change them (the comparison above can fail)
    moved = unroll(model, p0, images, torch.arange(3), torch.full((5,), inverse_softplus(0.5)), steps=5)
    assert max(float((moved[n].detach() - p).abs().max()) for n, p in p0.items()) > 1e-3


def _manual_step(model, params, x, y, lr):
    loss = F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names])
    return {n: (params[n] - lr * g).detach().requires_grad_(True) for n, g in zip(names, grads)}


def test_one_unrolled_step_is_a_plain_sgd_step():
    model, p0 = tiny_mlp(seed=3)
    images = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(3)
    lr = 0.37
    got = unroll(model, p0, images, labels, torch.tensor([inverse_softplus(lr)]), steps=1)
    want = _manual_step(model, {n: p.clone().requires_grad_(True) for n, p in p0.items()}, images, labels, lr)
    for name in p0:
        assert torch.allclose(got[name], want[name], atol=1e-6), name


def test_each_step_uses_its_own_batch_and_its_own_rate_and_epochs_repeat_the_batches():
    model, p0 = tiny_mlp(seed=4)
    images = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])  # ipc 2, steps 2: step 0 takes images 0,2,4; step 1 takes 1,3,5
    lrs = [0.2, 0.05, 0.3, 0.1]                # 2 steps x 2 epochs
    got = unroll(model, p0, images, labels, torch.tensor([inverse_softplus(v) for v in lrs]), steps=2)
    params = {n: p.clone().requires_grad_(True) for n, p in p0.items()}
    for s, lr in enumerate(lrs):
        idx = torch.tensor([0, 2, 4]) if s % 2 == 0 else torch.tensor([1, 3, 5])
        params = _manual_step(model, params, images[idx], labels[idx], lr)
    for name in p0:
        assert torch.allclose(got[name], params[name], atol=1e-5), name
    # without create_graph: the same numbers, detached
    plain = unroll(model, p0, images, labels, torch.tensor([inverse_softplus(v) for v in lrs]), steps=2,
                   create_graph=False)
    for name in p0:
        assert not plain[name].requires_grad and torch.allclose(plain[name], got[name], atol=1e-6)


def test_one_hot_soft_targets_give_the_same_unroll_as_hard_labels():
    model, p0 = tiny_mlp(seed=5)
    images = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    raw = torch.full((4,), inverse_softplus(0.2))
    hard = unroll(model, p0, images, labels, raw, steps=2)
    soft = unroll(model, p0, images, F.one_hot(labels, 3).float(), raw, steps=2)
    for name in p0:
        assert torch.allclose(hard[name], soft[name], atol=1e-6), name
    smooth = unroll(model, p0, images, F.one_hot(labels, 3).float() * 0.7 + 0.1, raw, steps=2)
    assert not torch.allclose(smooth["classifier.weight"], hard["classifier.weight"], atol=1e-4)


def test_models_with_batch_norm_or_dropout_are_refused(splits):
    for spec in ("convnet:width=4,depth=1,norm=batch", "mlp:hidden=8,dropout=0.5"):
        with pytest.raises(DistillabError, match="batch norm|dropout"):
            check_unrollable(build_model(spec, splits.input_shape, K))
    check_unrollable(build_model("convnet:width=4,depth=1", splits.input_shape, K))  # instance norm is fine
    check_unrollable(build_model("lenet5", splits.input_shape, K))


# ---- step batches ----


def test_step_batches_split_100_images_into_10_disjoint_batches_of_one_per_class():
    labels = torch.arange(10).repeat_interleave(10)
    batches = step_batches(labels, 10, 10)
    assert len(batches) == 10
    for b in batches:
        assert len(b) == 10 and sorted(labels[b].tolist()) == list(range(10))
    assert sorted(torch.cat(batches).tolist()) == list(range(100))  # disjoint and covering


def test_step_batches_reuse_all_images_when_ipc_is_not_a_multiple_of_steps():
    labels = torch.arange(10)
    batches = step_batches(labels, 10, 10)
    assert len(batches) == 10 and all(b.tolist() == list(range(10)) for b in batches)
    three = step_batches(torch.arange(10).repeat_interleave(3), 10, 2)  # ipc 3, steps 2
    assert all(len(b) == 30 for b in three)
    two = step_batches(torch.arange(4).repeat_interleave(4), 4, 2)  # ipc 4, steps 2: 2 per class per step
    assert [sorted(b.tolist()) for b in two] == [[0, 1, 4, 5, 8, 9, 12, 13], [2, 3, 6, 7, 10, 11, 14, 15]]


# ---- distillation ----


def test_learning_rates_start_at_lr_init_and_zero_iterations_change_nothing(splits):
    images, labels, g = noise_set(splits, seed=7)
    cfg = BPTT(iterations=0, steps=4, epochs=3, model="mlp:hidden=8")
    x, raw, init = bptt_distill(splits.train_set(), images, labels, cfg, g)
    assert raw.shape == (12,) and torch.allclose(F.softplus(raw), torch.full((12,), 0.02), atol=1e-7)
    assert torch.equal(x, images) and init is not None


def test_fixed_init_distillation_lowers_the_real_loss_and_trains_a_good_model(splits, fixed_run):
    cfg, images, labels, x, raw, init, losses = fixed_run
    assert [it for it, _ in losses] == list(range(30))
    values = [v for _, v in losses]
    first, last = sum(values[:5]) / 5, sum(values[-5:]) / 5
    assert last < first - 0.3, (first, last)
    assert x.shape == images.shape and raw.shape == (5,) and not torch.equal(x, images)
    assert set(init) == {n for n, _ in build_model(cfg.model, splits.input_shape, K).state_dict().items()}

    learned = train_with_schedule(cfg.model, splits.input_shape, K, as_synset(splits, x, raw, cfg), init_state=init)
    assert not learned.training
    acc, _ = accuracy(learned, splits.test)
    assert acc > 0.5, acc
    # the same schedule on the starting noise images gets (near) chance: the gain comes from distillation
    before = train_with_schedule(cfg.model, splits.input_shape, K,
                                 as_synset(splits, images, torch.full((5,), inverse_softplus(cfg.lr_init)), cfg),
                                 init_state=init)
    assert accuracy(before, splits.test)[0] < acc - 0.3


def test_distillation_is_deterministic(splits, fixed_run):
    cfg, _, _, x, raw, init, losses = fixed_run
    images, labels, g = noise_set(splits, seed=0)
    x2, raw2, init2 = bptt_distill(splits.train_set(), images, labels, cfg, g)
    assert torch.equal(x, x2) and torch.equal(raw, raw2)
    assert all(torch.equal(init[n], init2[n]) for n in init)
    images, labels, g = noise_set(splits, seed=1)
    x3, _, _ = bptt_distill(splits.train_set(), images, labels, BPTT(**{**FAST, "iterations": 2}), g)
    assert not torch.allclose(x3, x2)


def test_the_fixed_init_round_trips_through_a_file_and_is_required(splits, fixed_run, tmp_path):
    cfg, _, _, x, raw, init, _ = fixed_run
    synset = as_synset(splits, x, raw, cfg)
    tensors = init_state_tensors(init)
    assert tensors and all(name.startswith("init.") for name in tensors)
    assert init_state_tensors(None) == {} and init_state_from_tensors({"images": x}) is None
    path = tmp_path / "synset.safetensors"
    save_tensors(path, {"images": x, "labels": synset.labels, "lrs": raw, **tensors},
                 {"format": SYNSET_FORMAT, "bptt": synset.meta["bptt"]})
    loaded, meta = load_tensors(path, SYNSET_FORMAT)
    back = init_state_from_tensors(loaded)
    assert set(back) == set(init) and all(torch.equal(back[n], init[n]) for n in init)
    assert meta["bptt"]["init_net"] == "fixed" and meta["bptt"]["steps"] == 5

    a = train_with_schedule(cfg.model, splits.input_shape, K, synset, init_state=init)
    b = train_with_schedule(cfg.model, splits.input_shape, K, synset, init_state=back)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    with pytest.raises(DistillabError, match="fixed initialisation"):
        train_with_schedule(cfg.model, splits.input_shape, K, synset)
    with pytest.raises(DistillabError, match="does not fit"):
        train_with_schedule("mlp:hidden=16", splits.input_shape, K, synset, init_state=init)
    with pytest.raises(DistillabError, match="schedule"):
        train_with_schedule(cfg.model, splits.input_shape, K, SyntheticSet(x, synset.labels, synset.classes,
                                                                           synset.mean, synset.std, lrs=raw))


def test_random_init_mode_returns_no_init_state_and_trains(splits):
    cfg = BPTT(init_net="random", **{**FAST, "iterations": 8})
    images, labels, g = noise_set(splits, seed=2)
    losses = []
    x, raw, init = bptt_distill(splits.train_set(), images, labels, cfg, g, on_iteration=lambda it, v: losses.append(v))
    assert init is None and len(losses) == 8 and raw.shape == (5,)
    assert torch.isfinite(x).all() and not torch.equal(x, images)
    synset = as_synset(splits, x, raw, cfg)
    m1 = train_with_schedule(cfg.model, splits.input_shape, K, synset, torch.Generator().manual_seed(1))
    m2 = train_with_schedule(cfg.model, splits.input_shape, K, synset, torch.Generator().manual_seed(2))
    assert not m1.training and not torch.equal(m1.classifier.weight, m2.classifier.weight)


def test_bptt_leaves_the_global_rng_alone(splits):
    state = torch.get_rng_state()
    for mode in ("fixed", "random"):
        images, labels, g = noise_set(splits, seed=3)
        cfg = BPTT(init_net=mode, **{**FAST, "iterations": 3})
        x, raw, init = bptt_distill(splits.train_set(), images, labels, cfg, g)
        train_with_schedule(cfg.model, splits.input_shape, K, as_synset(splits, x, raw, cfg),
                            torch.Generator().manual_seed(0), init_state=init)
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_configs_are_refused(splits):
    images, labels, g = noise_set(splits, seed=0)
    with pytest.raises(DistillabError, match="init_net"):
        bptt_distill(splits.train_set(), images, labels, BPTT(init_net="sometimes", **{**FAST, "iterations": 1}), g)
    with pytest.raises(DistillabError, match="batch norm"):
        bptt_distill(splits.train_set(), images, labels,
                     BPTT(**{**FAST, "iterations": 1, "model": "convnet:width=4,depth=1,norm=batch"}), g)
    with pytest.raises(DistillabError, match="labels"):
        bptt_distill(splits.train_set(), images, labels[:5], BPTT(**{**FAST, "iterations": 1}), g)
    with pytest.raises(DistillabError, match="lr_decay"):
        bptt_distill(splits.train_set(), images, labels, BPTT(**{**FAST, "iterations": 1, "lr_decay": 0}), g)


def test_the_adam_rate_decays_on_schedule(splits, monkeypatch):
    seen = []
    real_step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    images, labels, g = noise_set(splits, seed=0)
    bptt_distill(splits.train_set(), images, labels, BPTT(**{**FAST, "iterations": 5, "lr_decay_every": 2, "lr_decay": 0.5}), g)
    assert seen == pytest.approx([0.05, 0.05, 0.025, 0.025, 0.0125])  # FAST: lr_img 0.05
