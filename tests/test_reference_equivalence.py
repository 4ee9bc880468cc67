"""distillab equals the reference implementations on fixed inputs.

The expected tensors in tests/fixtures/reference/ come from running the reference code itself once, outside this
repository (tests/fixtures/README.md says exactly how): the inputs (images, a network's weights, the real batches,
every augmentation draw, every shuffle) and the reference's outputs. Each test feeds the same inputs to distillab's
own code and compares, to float32 precision (the tolerance of each comparison says how far float rounding alone
went: where the reference and distillab run the same ops in the same order they agree bit for bit).
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from distillab.augmentation import DCAugment
from distillab.dsa import DSA, FAMILIES, VICO_STRATEGY, DSAParams
from distillab.models import build_model

FIXTURES = Path(__file__).parent / "fixtures" / "reference"


def fixture(name: str) -> tuple[dict, dict]:
    """The tensors and the record of how they were made; real MNIST images are kept as their uint8 pixels
    (``KEY.u8``) and normalised back here bit for bit as the reference's loader normalises them."""
    path = FIXTURES / f"{name}.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["made"])
    tensors = load_file(str(path))
    for key in [k for k in tensors if k.endswith(".u8")]:
        pixels = tensors.pop(key).float().div(255.0)
        tensors[key[:-3]] = (pixels - torch.tensor([0.1307]).view(1, -1, 1, 1)) / torch.tensor([0.3081]).view(1, -1, 1, 1)
    return tensors, meta


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, what: str) -> None:
    """Equal to float32 precision: every element within ``atol``, but for ReLU kinks. A batch of another size runs
    other kernels, whose rounding can move a pre-activation that sits within rounding of zero to the kink's other
    side: that unit's gradient then switches, and with it a few pixels under its receptive field (one 3x3 patch of
    15,680 pixels, 1e-2 apart, in the dm fixture). So: all but one element in a thousand within ``atol``, and the
    whole difference under 1e-3 of the tensor's norm. A changed op moves far more (tests/fixtures/README.md)."""
    diff = (actual.detach() - expected).abs()
    off = int((diff > atol).sum())
    assert off <= diff.numel() // 1000, f"{what}: {off} of {diff.numel()} elements more than {atol} apart " \
                                        f"(largest {float(diff.max()):.3g})"
    assert float(diff.norm()) <= 1e-3 * float(expected.norm()), \
        f"{what}: {float(diff.norm()):.3g} apart in norm, of {float(expected.norm()):.3g}"


def params_at(t: dict, key: str, family: str | None = None) -> DSAParams:
    """The reference's DiffAugment draw recorded under ``key`` (its family recorded, or given), as distillab's DSA
    parameters."""
    family = family or FAMILIES[int(t[f"{key}.family"])]
    names = {"color": ("brightness", "saturation", "contrast"), "crop": ("pixels",), "cutout": ("offset",),
             "flip": ("flip",), "scale": ("scale",), "rotate": ("angle",)}[family]
    return DSAParams(family, {n: t[f"{key}.{n}"] for n in names})


def net_from(t: dict, prefix: str, spec: str = "convnet:width=32,depth=3"):
    """distillab's ConvNet with the reference network's weights (same state_dict keys and shapes)."""
    net = build_model(spec, (1, 28, 28), 10)
    net.load_state_dict({k[len(prefix):]: v for k, v in t.items() if k.startswith(prefix)})
    return net


# ---- augmentation ----------------------------------------------------------------------------------------


def test_dc_augmentation_equals_the_references_on_its_draws():
    """VICO's ``augment`` (crop, scale, rotate, noise, one per image) and DCAugment on the same draws."""
    t, meta = fixture("dc-augment")
    aug = DCAugment(strategy="_".join(meta["ops"]), input_shape=(1, 28, 28))
    out = aug.apply(t["x"], {k: t[k] for k in ("op", "offset", "size", "angle", "noise")})
    for k, op in enumerate(meta["ops"]):
        chosen = t["op"] == k
        assert bool(chosen.any()), f"the fixture has no {op}"
        # crop and rotate fill with the batch mean, taken in float64 by the reference: 3e-9 apart
        assert torch.allclose(out[chosen], t["out"][chosen], rtol=0, atol=1e-6), op


@pytest.mark.parametrize("mode", ["image", "shared"])
@pytest.mark.parametrize("family", FAMILIES)
def test_dsa_ops_of_style_vico_equal_the_references(family, mode):
    """Each DiffAugment op on the reference's draws: per image (evaluation) and shared (siamese)."""
    t, _ = fixture("dsa-ops")
    dsa = DSA(strategy=VICO_STRATEGY, style="vico", image_size=(28, 28))
    out = dsa.apply(t["x"], params_at(t, f"{mode}.{family}", family))
    expected = t[f"{mode}.{family}.out"]
    if family == "rotate":  # the angle goes degrees -> radians in another order of float operations
        assert torch.allclose(out, expected, rtol=0, atol=1e-5)
    else:
        assert torch.equal(out, expected)


def test_style_vico_draws_whole_pixels_where_distillabs_style_draws_fractions():
    """What separates the styles is the draw: on a whole-pixel shift distillab's bilinear crop gives the
    reference's image too (to 1e-5), but it draws shifts of any fraction of a pixel, where the reference draws
    whole pixels in -4..4 (28 * 0.125 + 0.5) and cutout centres in 0..28."""
    t, _ = fixture("dsa-ops")
    p = params_at(t, "image.crop", "crop")
    own = DSA(strategy=VICO_STRATEGY).apply(t["x"], DSAParams("crop", {"shift": -p.values["pixels"].flip(1) / 28}))
    assert torch.allclose(own, t["image.crop.out"], atol=1e-5)
    g = torch.Generator().manual_seed(0)
    vico, own = DSA(strategy="crop", style="vico", image_size=(28, 28)), DSA(strategy="crop")
    pixels = torch.cat([vico.sample(50, g).values["pixels"] for _ in range(20)])
    assert set(pixels.flatten().tolist()) == set(range(-4, 5))
    shifts = torch.cat([own.sample(50, g).values["shift"] for _ in range(20)]) * 28
    assert (shifts - shifts.round()).abs().max() > 0.4  # fractions of a pixel
    offsets = torch.cat([DSA(strategy="cutout", style="vico", image_size=(28, 28)).sample(50, g).values["offset"]
                         for _ in range(40)])
    assert set(offsets.flatten().tolist()) == set(range(0, 29))


# ---- gradient matching (gm, dsa) ---------------------------------------------------------------------------


def resume_sgd(opt, tensor: torch.Tensor, before: torch.Tensor, after: torch.Tensor, lr: float) -> None:
    """Put the reference's own state into a momentum SGD on ``tensor``: its value ``after`` the last step, and the
    momentum buffer that step left (what the step moved, over the rate)."""
    with torch.no_grad():
        tensor.copy_(after)
    opt.state[tensor]["momentum_buffer"] = (before - after) / lr


@pytest.mark.parametrize("name", ["gm-steps", "dsa-steps"])
def test_gradient_matching_steps_equal_the_references(name):
    """main.py's outer iteration: three matching steps with two epochs of network training between them, on its
    network, its real batches, its DSA draws and its shuffles. Each step starts from the reference's own state (its
    images, their momentum, its network): chaining distillab's own states instead would only add float rounding
    that the matching's cosines amplify (1e-7 in the network grew to 1e-4 in one class's images, measured)."""
    from distillab.condense.methods.gm import matching_step, network_steps

    t, meta = fixture(name)
    ipc, k, lr = meta["ipc"], 10, meta["lr_img"]
    augment = DSA.for_inputs((1, 28, 28), style="vico") if meta["method"] == "DSA" else None
    if augment is not None:
        assert augment.families == meta["strategy"].split("_")
    net = net_from(t, "net.").train()
    syn = t["syn0"].clone().requires_grad_(True)
    opt_img = torch.optim.SGD([syn], lr=lr, momentum=meta["momentum"])
    opt_net = torch.optim.SGD(net.parameters(), lr=meta["lr_net"])
    labels = torch.arange(k).repeat_interleave(ipc)
    before = [t["syn0"]] + [t[f"step{s}.syn"] for s in range(meta["outer"])]
    losses = []
    for step in range(meta["outer"]):
        if step:  # the reference's images, momentum and network at this point
            resume_sgd(opt_img, syn, before[step - 1], before[step], lr)
            with torch.no_grad():
                flat = t[f"step{step - 1}.net_after"]
                torch.nn.utils.vector_to_parameters(flat, net.parameters())
        reals = [t[f"step{step}.real{c}"] for c in range(k)]
        draws = [params_at(t, f"step{step}.aug{c}") for c in range(k)] if augment else None
        losses.append(matching_step(net, syn, ipc, reals, opt_img, augment, draws))
        assert_close(syn, t[f"step{step}.syn"], 1e-6, f"images after step {step}")
        if step == meta["outer"] - 1:
            break
        n = int(t[f"step{step}.inner_batches"])
        batches = [(t[f"step{step}.inner{b}.pick"], params_at(t, f"step{step}.inner{b}.aug") if augment else None)
                   for b in range(n)]
        network_steps(net, opt_net, t[f"step{step}.syn"].clone(), labels, batches, augment)
        assert_close(torch.nn.utils.parameters_to_vector(net.parameters()), t[f"step{step}.net_after"], 1e-6,
                     f"network after step {step}")
    assert torch.allclose(torch.tensor(losses, dtype=torch.float64), t["losses"], rtol=1e-5, atol=0)


# ---- distribution matching (dm) ---------------------------------------------------------------------------


def test_distribution_matching_iterations_equal_the_references():
    """main_DM.py's iterations: a fresh network each (its weights), the real batches, the siamese draws (flip
    kept: its default strategy); the images after every iteration, each from the reference's previous images and
    momentum."""
    from distillab.condense.methods.dm import matching_step

    t, meta = fixture("dm-steps")
    ipc, k, lr = meta["ipc"], 10, meta["lr_img"]
    augment = DSA.for_inputs((1, 28, 28), strategy=meta["strategy"], style="vico")
    syn = t["syn0"].clone().requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=lr, momentum=meta["momentum"])
    before = [t["syn0"]] + [t[f"it{i}.syn"] for i in range(meta["iterations"])]
    losses = []
    for it in range(meta["iterations"]):
        if it:
            resume_sgd(opt, syn, before[it - 1], before[it], lr)
        net = net_from(t, f"it{it}.net.").eval()
        for p in net.parameters():
            p.requires_grad_(False)
        reals = [t[f"it{it}.real{c}"] for c in range(k)]
        draws = [params_at(t, f"it{it}.aug{c}") for c in range(k)]
        losses.append(matching_step(net, syn, ipc, reals, opt, augment, draws))
        assert_close(syn, t[f"it{it}.syn"], 2e-5, f"images after iteration {it}")
    assert torch.allclose(torch.tensor(losses, dtype=torch.float64), t["losses"], rtol=1e-5, atol=0)


# ---- the reference protocols' training loop (vico-dc, vico-dsa) ------------------------------------------------


@pytest.mark.parametrize("kind", ["dc", "dsa"])
def test_the_vico_protocols_train_as_evaluate_synset_does(kind):
    """evaluate_synset on a 20-image set, E = 4 (5 passes; the rate x0.1 and the optimiser rebuilt after pass 3),
    batches of 8, its shuffles and augmentation draws: the trained weights and the test accuracy."""
    from distillab.data import ImageSet
    from distillab.evaluation import train_sequential
    from distillab.protocols import parse_protocol
    from distillab.training import accuracy

    t, meta = fixture(f"protocol-vico-{kind}")
    spec = "convnet:width=32,depth=3"
    strategy = meta["dc_aug_param"]["strategy"] if kind == "dc" else meta["dsa_strategy"]
    proto = parse_protocol(f"vico-{kind}:epochs={meta['epochs']},batch_size={meta['batch_size']},runs=1,"
                           f"strategy={strategy},models=[{spec}]")
    augment = proto.augmentation((1, 28, 28), spec)
    passes = []
    for p in range(proto.passes(spec)):
        order = t[f"pass{p}.order"]
        batches = []
        for b, idx in enumerate(order.split(meta["batch_size"])):
            key = f"pass{p}.batch{b}"
            draw = params_at(t, f"{key}.aug") if kind == "dsa" else \
                {"op": t[f"{key}.op"], "offset": t[f"{key}.offset"], "size": t[f"{key}.size"],
                 "angle": t[f"{key}.angle"]}
            batches.append((idx, draw))
        passes.append(batches)
    assert len(passes) == meta["epochs"] + 1
    net = net_from(t, "net.", spec)
    train_sequential([net], t["x"], t["y"], proto, torch.Generator(), augment, spec=spec, draws=[passes])
    trained = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    assert_close(trained, t["trained"], 2e-5, "the trained weights")
    assert accuracy(net, ImageSet(t["test_x"], t["test_y"]))[0] == pytest.approx(float(t["acc_test"]), abs=1e-9)


# ---- trajectory matching (mtt) ---------------------------------------------------------------------------


@pytest.mark.parametrize("unroll", ["full", "checkpointed"])
def test_trajectory_matching_iterations_equal_the_references(unroll):
    """distill.py's iterations: from a start vector, four student steps on its minibatches (a shuffle's chunks)
    with its per-image DiffAugment draws, the normalised distance to the target, back to the images and the
    learned rate (SGD with momentum on both): the gradients, the images and the rate after each iteration."""
    from distillab.condense.methods.mtt import Step, Student, unroll_gradient

    t, meta = fixture("mtt-steps")
    augment = DSA.for_inputs((1, 28, 28), strategy=meta["strategy"], style="vico")
    student = Student(net_from(t, "net.").train())
    syn = t["syn0"].clone().requires_grad_(True)
    syn_lr = torch.tensor(meta["lr_init"]).requires_grad_(True)
    opt_img = torch.optim.SGD([syn], lr=meta["lr_img"], momentum=0.5)
    opt_lr = torch.optim.SGD([syn_lr], lr=meta["lr_lr"], momentum=0.5)
    labels = torch.arange(10).repeat_interleave(meta["ipc"])
    losses = []
    for it in range(2):
        plan = [Step(t[f"it{it}.step{s}.index"], params_at(t, f"it{it}.step{s}.aug")) for s in range(meta["syn_steps"])]
        opt_img.zero_grad(set_to_none=True)
        opt_lr.zero_grad(set_to_none=True)
        losses.append(unroll_gradient(student, t["start"], t["target"], syn, labels, syn_lr, plan, augment,
                                      checkpointed=unroll == "checkpointed"))
        assert_close(syn.grad, t[f"it{it}.grad_syn"], 1e-4 * float(t[f"it{it}.grad_syn"].abs().max()),
                     f"image gradient, iteration {it}")
        assert float(syn_lr.grad) == pytest.approx(float(t[f"it{it}.grad_lr"]), rel=1e-4)
        opt_img.step()
        opt_lr.step()
        assert_close(syn, t[f"it{it}.syn"], 1e-5, f"images after iteration {it}")
        assert float(syn_lr.detach()) == pytest.approx(float(t[f"it{it}.syn_lr"]), rel=1e-6)
    assert torch.allclose(torch.tensor(losses, dtype=torch.float64), t["losses"], rtol=1e-5, atol=0)


# ---- back-propagation through training (bptt, Wang et al. 2018) -----------------------------------------------


def test_bptt_iterations_equal_the_references():
    """train_distilled_image.Trainer's iterations: 2 steps x 2 epochs unrolled from LeNet's known initialisation
    (twice) and from a fresh one (once), scored on a real batch; the gradients reach the images and the raw rates,
    then Adam steps them. Their step s of epoch e is distillab's image (class c, position s) at rate s + 2 e."""
    from distillab.condense.methods.bptt import unrolled_step

    t, meta = fixture("bptt-steps")
    model = build_model("lenet5", (1, 28, 28), 10)
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]

    def params_of(flat):
        return {n: v.view(s) for n, v, s in zip(names, flat.split(sizes), shapes)}

    def class_major(prefix):  # their step s holds one image per class; distillab's set is class-major
        return torch.stack([t[f"{prefix}{s}"] for s in range(2)], 1).reshape(20, 1, 28, 28)

    syn = class_major("data").clone().requires_grad_(True)
    raw_lrs = t["raw_lrs0"].clone().requires_grad_(True)
    opt = torch.optim.Adam([syn, raw_lrs], lr=0.01, betas=(0.5, 0.999))
    labels = torch.arange(10).repeat_interleave(2)
    losses = []
    for it in range(3):
        params0 = params_of(t["init2"] if it == 2 else t["init0"])
        losses.append(unrolled_step(model, params0, syn, labels, raw_lrs, 2, t["real_x"], t["real_y"], opt, 10))
        expected = class_major(f"it{it}.grad_data")
        assert_close(syn.grad, expected, 1e-4 * float(expected.abs().max()), f"image gradient, iteration {it}")
        assert torch.allclose(raw_lrs.grad, t[f"it{it}.grad_raw_lrs"], rtol=1e-4, atol=1e-9)
        # Adam divides by the root of the squared gradient plus 1e-8: where a gradient is ~1e-9 (one pixel of 15,680
        # here) its rounding moves that pixel's step by up to 2.4e-5 of the 0.01 every other pixel takes
        assert_close(syn, class_major(f"it{it}.data"), 1e-5, f"images after iteration {it}")
        assert torch.allclose(raw_lrs.detach(), t[f"it{it}.raw_lrs"], rtol=0, atol=1e-6)
    assert torch.allclose(torch.tensor(losses, dtype=torch.float64), t["losses"], rtol=1e-5, atol=0)
