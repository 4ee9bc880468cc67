import pytest
import torch

from distillab.dsa import DSA, DSAParams, FAMILIES
from distillab.errors import DistillabError


def images(n=4, c=3, size=8, seed=0):
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_same_seed_same_output_and_different_seeds_differ():
    dsa, x = DSA(), images(6)
    a = dsa(x, torch.Generator().manual_seed(3))
    b = dsa(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    others = [dsa(x, torch.Generator().manual_seed(s)) for s in range(4, 10)]
    assert any(not torch.allclose(a, o) for o in others)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_changes_image_and_keeps_shape(family):
    dsa, x = DSA(strategy=family), images(16)
    p = dsa.sample(len(x), torch.Generator().manual_seed(1))
    assert p.family == family and p.n == 16
    out = dsa.apply(x, p)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.allclose(out, x)


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_params_transform_batches_of_any_size_identically(family):
    dsa = DSA(strategy=family)
    a, b = images(5, seed=1), images(2, seed=2)
    p = dsa.sample(1, torch.Generator().manual_seed(7))
    together = dsa.apply(torch.cat([a, b]), p)
    assert torch.allclose(together, torch.cat([dsa.apply(a, p), dsa.apply(b, p)]), atol=1e-6)
    # one parameter set: copies of one image come out identical
    copies = dsa.apply(a[:1].expand(3, -1, -1, -1), p)
    assert torch.allclose(copies, copies[:1].expand_as(copies), atol=1e-6)


def test_per_image_params_differ_between_images():
    dsa = DSA(strategy="rotate")
    x = images(1).expand(4, -1, -1, -1)
    out = dsa.apply(x, dsa.sample(4, torch.Generator().manual_seed(0)))
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_flow_to_the_input(family):
    dsa = DSA(strategy=family)
    x = images(3, size=6).double().requires_grad_()
    p = dsa.sample(len(x), torch.Generator().manual_seed(2))
    weights = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    (dsa.apply(x, p) * weights).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda t: dsa.apply(t, p), (x.detach().requires_grad_(),))


def test_no_flip_for_digits():
    dsa = DSA(allow_flip=False)
    assert "flip" not in dsa.families and len(dsa.families) == 5
    g = torch.Generator().manual_seed(0)
    chosen = {dsa.sample(1, g).family for _ in range(300)}
    assert chosen == set(FAMILIES) - {"flip"}
    with pytest.raises(DistillabError, match="flip"):
        DSA(strategy="flip", allow_flip=False)


def test_all_families_are_chosen_with_default_strategy():
    g = torch.Generator().manual_seed(0)
    assert {DSA().sample(1, g).family for _ in range(300)} == set(FAMILIES)


def test_global_rng_is_untouched():
    dsa, x = DSA(), images()
    state = torch.random.get_rng_state()
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        dsa.apply(x, dsa.sample(len(x), g))
        dsa(x, g)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_sampled_parameters_lie_in_their_ranges():
    g = torch.Generator().manual_seed(0)
    v = DSA(strategy="rotate").sample(2000, g).values["angle"]
    assert v.abs().max() <= 15 and v.abs().max() > 14 and v.min() < 0 < v.max()
    v = DSA(strategy="scale").sample(2000, g).values["scale"]
    assert v.min() >= 1 / 1.2 - 1e-6 and v.max() <= 1.2 + 1e-6 and v.min() < 0.85 and v.max() > 1.15
    v = DSA(strategy="crop").sample(2000, g).values["shift"]
    assert v.abs().max() <= 0.125 and v.abs().max() > 0.12
    v = DSA(strategy="cutout").sample(2000, g).values["centre"]
    assert v.min() >= 0 and v.max() < 1
    f = DSA(strategy="flip").sample(2000, g).values["flip"].float().mean()
    assert 0.45 < f < 0.55
    c = DSA(strategy="color").sample(2000, g).values
    assert c["brightness"].abs().max() <= 0.5 and c["brightness"].abs().max() > 0.49
    assert 0 <= c["saturation"].min() and c["saturation"].max() <= 2 and c["saturation"].max() > 1.9
    assert 0.5 <= c["contrast"].min() and c["contrast"].max() <= 1.5


def test_neutral_parameters_are_the_identity():
    dsa, x = DSA(), images()
    one = torch.ones(1)
    neutral = [DSAParams("rotate", {"angle": torch.zeros(1)}),
               DSAParams("scale", {"scale": torch.ones(1, 2)}),
               DSAParams("crop", {"shift": torch.zeros(1, 2)}),
               DSAParams("flip", {"flip": torch.zeros(1, dtype=torch.bool)}),
               DSAParams("color", {"brightness": torch.zeros(1), "saturation": one, "contrast": one})]
    for p in neutral:
        assert torch.allclose(dsa.apply(x, p), x, atol=1e-5), p.family


def test_geometry_is_what_it_says():
    dsa, x = DSA(), images()
    rotated = dsa.apply(x, DSAParams("rotate", {"angle": torch.tensor([90.0])}))
    assert torch.allclose(rotated, torch.rot90(x, 1, dims=(2, 3)), atol=1e-5)
    shifted = dsa.apply(x, DSAParams("crop", {"shift": torch.tensor([[1 / 8, 0.0]])}))  # one pixel right
    assert torch.allclose(shifted[..., 1:], x[..., :-1], atol=1e-5) and shifted[..., 0].abs().max() < 1e-6
    shrunk = dsa.apply(x, DSAParams("scale", {"scale": torch.tensor([[2.0, 1.0]])}))  # half width, centred
    assert shrunk[..., :2].abs().max() < 1e-6 and shrunk[..., 6:].abs().max() < 1e-6
    assert shrunk[..., 2:6].abs().min() > 0
    flipped = dsa.apply(x, DSAParams("flip", {"flip": torch.tensor([True, False, True, False])}))
    assert torch.equal(flipped[0::2], x[0::2].flip(3)) and torch.equal(flipped[1::2], x[1::2])


def test_cutout_zeroes_one_square_of_half_the_size():
    dsa, x = DSA(), images() + 10  # no zeros in the input
    out = dsa.apply(x, DSAParams("cutout", {"centre": torch.tensor([[0.5, 0.5]])}))
    zero = out == 0
    assert zero.sum() == 4 * 3 * 4 * 4  # a 4x4 square in every channel of every image
    assert zero[..., 2:6, 2:6].all() and torch.equal(out[~zero], x[~zero])
    corner = dsa.apply(x, DSAParams("cutout", {"centre": torch.zeros(1, 2)}))  # clipped at the border
    assert (corner == 0).sum() == 4 * 3 * 2 * 2 and (corner[..., :2, :2] == 0).all()


def test_color_ops():
    dsa, x = DSA(), images()
    one = torch.ones(1)
    brighter = dsa.apply(x, DSAParams("color", {"brightness": torch.tensor([0.3]), "saturation": one,
                                                "contrast": one}))
    assert torch.allclose(brighter, x + 0.3, atol=1e-6)
    grey = dsa.apply(x, DSAParams("color", {"brightness": torch.zeros(1), "saturation": torch.zeros(1),
                                            "contrast": one}))
    assert torch.allclose(grey, x.mean(1, keepdim=True).expand_as(x), atol=1e-6)
    flat = dsa.apply(x, DSAParams("color", {"brightness": torch.zeros(1), "saturation": one,
                                            "contrast": torch.zeros(1)}))
    assert torch.allclose(flat, x.mean((1, 2, 3), keepdim=True).expand_as(x), atol=1e-6)
    mono = images(c=1)  # saturation is a no-op for one channel
    saturated = dsa.apply(mono, DSAParams("color", {"brightness": torch.zeros(1), "saturation": torch.tensor([1.8]),
                                                    "contrast": one}))
    assert torch.allclose(saturated, mono)


def test_params_on_a_device_and_dtype_follow_the_input():
    dsa = DSA(strategy="rotate")
    p = dsa.sample(1, torch.Generator().manual_seed(0), device="cpu")
    out = dsa.apply(images().double(), p)
    assert out.dtype == torch.float64


def test_bad_input_is_refused():
    with pytest.raises(DistillabError, match="unknown DSA op family 'blur'"):
        DSA(strategy="color_blur")
    dsa = DSA()
    p = dsa.sample(3, torch.Generator().manual_seed(0))
    with pytest.raises(DistillabError, match="sampled for 3 images"):
        dsa.apply(images(4), p)
    with pytest.raises(DistillabError, match="unknown DSA op family"):
        dsa.apply(images(1), DSAParams("blur", {"x": torch.zeros(1)}))
