"""The reference's non-differentiable evaluation augmentation (DCAugment, the protocol's ``augment="dc"``): per image
one of crop / scale / rotate (noise on request), with the reference's geometry and padding, drawn from a generator."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_one_line_error
from distillab.augmentation import DCAugment
from distillab.data import ImageSet
from distillab.errors import DistillabError
from distillab.evaluation import Augmentation, _replay, evaluate_images, train_sequential, train_vectorised
from distillab.protocols import Protocol
from distillab.models import build_model


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def only(op, x_shape, n, seed=0, **values):
    """DC parameters for n images with every image given ``op``; any of the op's values can be overridden."""
    aug = DCAugment(strategy=op, input_shape=x_shape)
    params = aug.sample(n, g(seed))
    params.update(values)
    return aug, params


# ---- the reference's padding and geometry, written per image the way its description reads ----

def crop_like_reference(img, row, col, pad, fill):
    c, h, w = img.shape
    canvas = fill.view(c, 1, 1).expand(c, h + 2 * pad, w + 2 * pad).clone()
    canvas[:, pad:pad + h, pad:pad + w] = img
    return canvas[:, row:row + h, col:col + w]


def scale_like_reference(img, new_h, new_w):
    c, h, w = img.shape
    resized = F.interpolate(img[None], [new_h, new_w], mode="nearest")[0]
    side = max(new_h, new_w, h, w)
    canvas = torch.zeros(c, side, side)
    r, q = (side - new_h) // 2, (side - new_w) // 2
    canvas[:, r:r + new_h, q:q + new_w] = resized
    r, q = (side - h) // 2, (side - w) // 2
    return canvas[:, r:r + h, q:q + w]


def test_same_generator_same_images_and_the_caller_rng_untouched():
    aug, x = DCAugment(input_shape=(1, 8, 8)), torch.randn(32, 1, 8, 8)
    state = torch.random.get_rng_state()
    a, b, c = aug(x, g(3)), aug(x, g(3)), aug(x, g(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_each_image_gets_its_own_draw():
    """64 copies of one image come out as many different images: the draw is per image, not per batch."""
    x = torch.randn(1, 1, 8, 8).expand(64, 1, 8, 8).contiguous()
    out = DCAugment(input_shape=(1, 8, 8))(x, g(0))
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > 30
    params = DCAugment(input_shape=(1, 8, 8)).sample(3000, g(1))
    share = torch.bincount(params["op"], minlength=3) / 3000  # one op of three per image, uniformly
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.04)


def test_crop_is_a_shift_padded_with_the_batch_channel_mean():
    x = torch.randn(200, 3, 8, 8) + torch.tensor([2.0, -1.0, 0.5]).view(1, 3, 1, 1)
    aug, p = only("crop", (3, 8, 8), 200)
    out = aug.apply(x, p)
    mean = x.mean(dim=(0, 2, 3))
    for i in range(0, 200, 7):
        expected = crop_like_reference(x[i], int(p["offset"][i, 0]), int(p["offset"][i, 1]), 4, mean)
        assert torch.equal(out[i], expected), i
    # the window's corner takes 2*pad values per axis: content moves by -3 .. +4 px, as the reference draws it
    assert set(p["offset"].flatten().tolist()) == set(range(8))


def test_crop_of_a_bright_pixel_moves_it_by_the_drawn_offset():
    x = torch.zeros(50, 1, 12, 12)
    x[:, 0, 6, 6] = 1.0
    aug, p = only("crop", (1, 12, 12), 50)
    out = aug.apply(x, p)
    for i in range(50):
        row, col = (out[i, 0] == 1.0).nonzero()[0].tolist()
        assert (row, col) == (6 + 4 - int(p["offset"][i, 0]), 6 + 4 - int(p["offset"][i, 1]))


@pytest.mark.parametrize("shape", [(1, 28, 28), (2, 8, 8), (1, 9, 13)])
def test_scale_is_a_nearest_resize_centred_on_a_canvas_of_zeros(shape):
    x = torch.randn(60, *shape) + 3.0  # far from 0, so the zero padding shows
    aug, p = only("scale", shape, 60)
    out = aug.apply(x, p)
    _, h, w = shape
    for i in range(60):
        new_h, new_w = p["size"][i].tolist()
        assert torch.equal(out[i], scale_like_reference(x[i], new_h, new_w)), (i, new_h, new_w)
    sizes = aug.sample(4000, g(3))["size"].float() / torch.tensor([h, w])
    # int(f * size) of f uniform in [0.8, 1.2): both zoom out and zoom in are drawn, to the edges
    assert (sizes >= 0.8 - 1 / min(h, w)).all() and (sizes < 1.2).all()
    assert sizes.min() < 0.82 and sizes.max() > 1.18 - 1 / min(h, w)


def test_scale_moves_a_bright_pixel_where_the_factor_says():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 1, 4] = 1.0
    aug, p = only("scale", (1, 9, 9), 1, size=torch.tensor([[10, 10]]))
    out = aug.apply(x, p)
    # 9 px -> 10 px, nearest; the 10x10 image is cut back from its top-left (the reference's integer centring)
    assert (out[0, 0] == 1.0).nonzero().tolist() == [[2, 5]]


def test_rotation_by_zero_is_the_identity_and_a_quarter_turn_is_counter_clockwise():
    x = torch.zeros(3, 1, 9, 9)
    x[:, 0, 1, 4] = 1.0  # above the centre
    aug, p = only("rotate", (1, 9, 9), 3, angle=torch.tensor([0, 90, -90]))
    out = aug.apply(x, p)
    assert torch.allclose(out[0], x[0], atol=1e-5)
    assert torch.allclose(out[1, 0], x[0, 0].rot90(1), atol=1e-4)  # to the left of the centre
    assert torch.allclose(out[2, 0], x[0, 0].rot90(-1), atol=1e-4)  # to the right
    angles = aug.sample(5000, g(2))["angle"]
    assert angles.dtype == torch.int64 and angles.min() == -45 and angles.max() == 44  # whole degrees, [-45, 45)


def test_rotation_fills_its_corners_with_the_batch_mean():
    x = torch.full((4, 2, 12, 12), 5.0)
    x[:, 1] = -1.0
    aug, p = only("rotate", (2, 12, 12), 4, angle=torch.tensor([45, 45, -45, 30]))
    out = aug.apply(x, p)
    corner = out[:, :, 0, 0]  # outside the rotated square for these angles
    assert torch.allclose(corner, torch.full_like(corner, 2.0), atol=1e-4)  # the mean of the channel means


def test_noise_has_the_reference_scale():
    x = torch.randn(64, 1, 16, 16)
    aug = DCAugment(strategy="noise", input_shape=(1, 16, 16))
    delta = aug(x, g(0)) - x
    assert abs(float(delta.std()) - 0.001) < 5e-5 and abs(float(delta.mean())) < 5e-5


def test_replay_draws_exactly_what_apply_draws():
    aug, x = DCAugment(strategy="crop_scale_rotate_noise", input_shape=(1, 8, 8)), torch.randn(10, 1, 8, 8)
    a, b = g(7), g(7)
    aug(x, a)
    aug.sample(10, b)
    assert torch.equal(a.get_state(), b.get_state())


def test_signals_crop_and_scale_along_their_length_only():
    aug = DCAugment(input_shape=(1, 1, 40))
    assert aug.ops == ["crop", "scale"]
    x = torch.randn(100, 1, 1, 40)
    out = aug(x, g(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    with pytest.raises(DistillabError, match="no rotation"):
        DCAugment(strategy="rotate", input_shape=(1, 1, 40))


def test_bad_settings_are_refused():
    for kwargs in [dict(strategy="crop_flip"), dict(crop=0), dict(scale=1.5), dict(rotate=0), dict(noise=-1.0)]:
        with pytest.raises(DistillabError):
            DCAugment(**kwargs)
    with pytest.raises(DistillabError, match="set up for inputs"):
        DCAugment(input_shape=(1, 8, 8))(torch.randn(2, 1, 9, 9), g())


# ---- the protocol ----

def tiny(augment, seed=0):
    x = torch.randn(20, 1, 8, 8, generator=g(9))
    y = torch.arange(20) % 4
    proto = Protocol(epochs=3, batch_size=8, runs=1, models=("mlp:hidden=8",), augment=augment)
    model = build_model("mlp:hidden=8", (1, 8, 8), 4, g(seed))
    return x, y, proto, model


def test_the_protocol_trains_with_dc_and_replays_its_draws():
    x, y, proto, model = tiny("dc")
    plain = copy.deepcopy(model)
    aug = Augmentation(DCAugment.for_inputs((1, 8, 8)), per_image=True)
    trained, replayed = g(1), g(1)
    train_sequential([model], x, y, proto, trained, aug)
    train_sequential([plain], x, y, Protocol(**{**proto.__dict__, "augment": "none"}), g(1), None)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), plain.parameters()))
    _replay(len(x), proto, replayed, aug)  # 20 images in batches of 8: the last batch has 4
    assert torch.equal(trained.get_state(), replayed.get_state())


def test_the_vectorised_protocol_augments_too():
    x, y, proto, model = tiny("dc")
    models, plain = [model, copy.deepcopy(model)], [copy.deepcopy(model), copy.deepcopy(model)]
    train_vectorised(models, x, y, proto, g(1), Augmentation(DCAugment.for_inputs((1, 8, 8)), per_image=True))
    train_vectorised(plain, x, y, proto, g(1), None)
    assert any(not torch.equal(a, b) for a, b in zip(models[0].parameters(), plain[0].parameters()))
    r = evaluate_images(x, y, ImageSet(x, y), Protocol(epochs=2, batch_size=8, runs=2, models=("mlp:hidden=8",),
                                                       augment="dc"), vectorise=True, num_classes=4)
    assert r["mlp:hidden=8"]["vectorised"] and len(r["mlp:hidden=8"]["runs"]) == 2


def test_evaluate_images_augments_every_batch_with_dc_and_only_with_dc(monkeypatch):
    calls, original = [], DCAugment.apply
    monkeypatch.setattr(DCAugment, "apply", lambda self, x, p: calls.append(len(x)) or original(self, x, p))
    x, y = torch.randn(20, 1, 8, 8, generator=g(9)), torch.arange(20) % 4
    for augment in ("none", "dc"):
        evaluate_images(x, y, ImageSet(x, y), Protocol(epochs=2, batch_size=8, runs=1, models=("mlp:hidden=8",),
                                                       augment=augment), num_classes=4)
    assert calls == [8, 8, 4] * 2  # the dc run: two epochs of batches of 8, 8 and 4 images; none: nothing


def test_the_protocol_refuses_dc_with_dsa_and_unknown_names():
    with pytest.raises(DistillabError, match="pick one"):
        Protocol(dsa=True, augment="dc").check()
    with pytest.raises(DistillabError, match="none, dc"):
        Protocol(augment="crop").check()


def test_cli_evaluates_a_digits_set_with_dc(cli, tmp_path):
    r = cli("condense", "--data", "digits", "--method", "random", "--ipc", "2", "--quiet", "--out", tmp_path / "c")
    assert r.code == 0, r.err
    common = ("evaluate", tmp_path / "c/synset.safetensors", "--models", "convnet:width=4,depth=2", "--runs", "1",
              "--epochs", "2", "--quiet")
    e = cli(*common, "--augment", "dc", "--out", tmp_path / "e")
    assert e.code == 0, e.err
    assert e.json["augment"] == "dc" and 0 <= e.json["models"]["convnet:width=4,depth=2"]["mean"] <= 1
    assert "augment: dc" in (tmp_path / "e/config.yaml").read_text()
    assert_one_line_error(cli(*common, "--augment", "dc", "--dsa", "--out", tmp_path / "x"), "pick one")
    assert_one_line_error(cli(*common, "--augment", "flip", "--out", tmp_path / "y"), "--augment")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert json.loads((tmp_path / "e/metrics.json").read_text())["augment"] == "dc"
