"""Teaching without the data: teacher metadata (records of known Gaussians come back), the data-free methods (the
shared contract over every registered one), `distillab metadata` / `distillab datafree` from the CLI and the API,
and their one-line errors."""

import json

import pytest
import torch
from torch import nn

from distillab import api, seeds
from distillab.datafree import DATAFREE, FrozenTeacher, TeacherRecords, model_digest, record
from distillab.datafree.method import balanced_labels
from distillab.datafree.methods.lopes import Lopes
from distillab.errors import DistillabError
from distillab.files import load_tensors, save_tensors
from distillab.models import load_model
from distillab.testing import check_datafree, contract_teacher

from conftest import assert_one_line_error


# ---- records: known Gaussians come back ----


def _gaussian_classes(means, chols, n, seed=0):
    """n draws per class from N(mean_c, L_c L_c^T), as (N, 1, 1, D) images, with their labels."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, (m, L) in enumerate(zip(means, chols)):
        z = torch.randn(n, len(m), generator=g, dtype=torch.float64)
        xs.append(m + z @ L.T)
        ys.append(torch.full((n,), c))
    x = torch.cat(xs).float()
    return x.view(len(x), 1, 1, -1), torch.cat(ys)


class Linear2(nn.Module):
    """x -> A x + b -> ReLU -> C (.) + d: a known hidden pre-activation and known logits."""

    def __init__(self, A, b, C, d):
        super().__init__()
        self.hidden, self.classifier = nn.Linear(A.shape[1], A.shape[0]), nn.Linear(C.shape[1], C.shape[0])
        with torch.no_grad():
            self.hidden.weight.copy_(A), self.hidden.bias.copy_(b)
            self.classifier.weight.copy_(C), self.classifier.bias.copy_(d)

    def forward(self, x):
        return self.classifier(torch.relu(self.hidden(x.flatten(1))))


MEANS = [torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), torch.tensor([-1.0, 0.0, 3.0], dtype=torch.float64)]
CHOLS = [torch.tensor([[1.0, 0, 0], [0.5, 0.8, 0], [-0.3, 0.2, 0.6]], dtype=torch.float64),
         torch.tensor([[0.7, 0, 0], [0.0, 1.2, 0], [0.4, -0.5, 0.3]], dtype=torch.float64)]


def _identity_logits_model():
    """A model whose 3 logits are its input's 3 coordinates (the hidden layer's bias keeps ReLU from clipping)."""
    eye = torch.eye(3)
    return Linear2(eye, torch.full((3,), 50.0), eye, torch.full((3,), -50.0))  # ReLU never clips: logits = x


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_top_records_recover_a_known_gaussian(temperature):
    x, y = _gaussian_classes(MEANS, CHOLS, 20_000)
    stats = record(_identity_logits_model(), x, y, 2, "top", temperature)["top"]
    for c in range(2):
        cov = CHOLS[c] @ CHOLS[c].T
        assert torch.allclose(stats["mean"][c].double(), MEANS[c] / temperature, atol=0.03)
        got = stats["chol"][c].double() @ stats["chol"][c].double().T
        assert torch.allclose(got, cov / temperature ** 2, atol=0.05), (got, cov / temperature ** 2)


def test_all_records_give_each_layers_pre_activations_and_fall_back_to_the_diagonal_when_singular():
    A = torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [1.0, 1.0, 0], [0, 0, 1.0]])  # 4 units from 3 inputs: singular
    model = Linear2(A, torch.full((4,), 40.0), torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]]), torch.zeros(2))
    x, y = _gaussian_classes(MEANS, CHOLS, 20_000, seed=1)
    stats = record(model, x, y, 2, "all")
    assert set(stats) == {"hidden", "top"}
    hidden = stats["hidden"]
    assert "chol" not in hidden and "var" in hidden  # rank 3 in 4 dimensions: the diagonal is kept
    for c in range(2):
        cov = A.double() @ (CHOLS[c] @ CHOLS[c].T) @ A.double().T
        assert torch.allclose(hidden["mean"][c].double(), A.double() @ MEANS[c] + 40, atol=0.05)
        assert torch.allclose(hidden["var"][c].double(), cov.diagonal(), rtol=0.05)
    assert "chol" in stats["top"]  # 2 logits of a full-rank map: the full covariance


def test_spectral_records_are_coordinates_on_orthonormal_modes():
    x, y = _gaussian_classes(MEANS, CHOLS, 5_000)
    stats = record(_identity_logits_model(), x, y, 2, "spectral", modes=2)["top"]
    basis, centre = stats["basis"].double(), stats["centre"].double()
    assert basis.shape == (3, 2)
    assert torch.allclose(basis.T @ basis, torch.eye(2, dtype=torch.float64), atol=1e-5)
    pooled = torch.cov(x.flatten(1).double().T)
    top = torch.linalg.eigh(pooled).eigenvectors[:, -1]  # the leading mode of the activation graph
    assert abs(float(top @ basis[:, 0])) > 0.999
    values = torch.linalg.eigvalsh(pooled).flip(0)[:2]  # the eigen-pairs' values: the variance along each mode
    assert torch.allclose(stats["eigenvalues"].double(), values, rtol=0.02)
    for c in range(2):
        assert torch.allclose(stats["mean"][c].double(), (MEANS[c] - centre) @ basis, atol=0.05)


def test_sampling_draws_the_recorded_gaussian():
    x, y = _gaussian_classes(MEANS, CHOLS, 20_000)
    rec = TeacherRecords("top", 1.0, ["a", "b"], (1, 1, 3), (0.0,), (1.0,), "x",
                         stats=record(_identity_logits_model(), x, y, 2, "top"))
    draws = rec.sample(torch.ones(40_000, dtype=torch.long), torch.Generator().manual_seed(0))["top"].double()
    assert torch.allclose(draws.mean(0), MEANS[1], atol=0.03)
    assert torch.allclose(torch.cov(draws.T), CHOLS[1] @ CHOLS[1].T, atol=0.05)


# ---- files ----


@pytest.fixture(scope="module")
def mlp_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("df") / "t"
    api.train("digits", "mlp:hidden=48-32", epochs=8, out=out, quiet=True)
    return out / "model.safetensors"


@pytest.fixture(scope="module")
def meta_all(mlp_teacher, tmp_path_factory):
    path = tmp_path_factory.mktemp("meta") / "all.safetensors"
    api.metadata(mlp_teacher, records="all", out=path, quiet=True)
    return path


def test_the_metadata_file_says_its_size_beside_the_training_sets(meta_all):
    rec = TeacherRecords.load(meta_all)
    assert rec.kind == "all" and rec.layers == ["features.1", "features.3"]
    assert rec.meta["size_bytes"] == rec.nbytes() > 0
    train = rec.meta["training_set"]
    assert train["bytes_uint8"] == train["images"] * 64 and train["bytes_float32"] == 4 * train["bytes_uint8"]


@pytest.mark.parametrize("forge", ["drop_layer", "bad_shape", "nan", "kind", "temperature_inf", "norm_text",
                                   "std_zero", "chol_flipped", "huge", "negative_var"])
def test_a_forged_metadata_file_is_refused_in_one_line(meta_all, tmp_path, forge):
    tensors, meta = load_tensors(meta_all, "distillab.teacher-records")
    if _forge_settings(tensors, meta, forge):
        pass
    elif forge == "huge":
        tensors["top/mean"] = tensors["top/mean"] * 1e20
    elif forge == "negative_var":
        tensors = {**tensors, "top/var": -torch.ones_like(tensors["top/mean"])}
        tensors.pop("top/chol", None)
    elif forge == "drop_layer":
        tensors = {k: v for k, v in tensors.items() if not k.startswith("features.3/")}
    elif forge == "bad_shape":
        tensors["top/mean"] = tensors["top/mean"][:, :3]
    elif forge == "nan":
        tensors["top/mean"][0, 0] = float("nan")
    else:
        meta["kind"] = "import:os:system"
    path = tmp_path / "forged.safetensors"
    save_tensors(path, tensors, meta)
    with pytest.raises(DistillabError) as e:
        TeacherRecords.load(path)
    assert "\n" not in str(e.value)


def test_lopes_refuses_metadata_of_another_teacher_or_kind(meta_all, tmp_path):
    other = tmp_path / "other"
    api.train("digits", "mlp:hidden=48-32", epochs=1, seed=5, out=other, quiet=True)
    model, meta = load_model(other / "model.safetensors")
    frozen = FrozenTeacher(model, meta["input_shape"], meta["classes"], meta["normalisation"]["mean"],
                           meta["normalisation"]["std"])
    with pytest.raises(DistillabError, match="another teacher"):
        Lopes(metadata=str(meta_all)).check_teacher(frozen)
    with pytest.raises(DistillabError, match="holds 'all' records"):
        Lopes(metadata=str(meta_all), records="top").check_teacher(frozen)


@pytest.mark.parametrize("records", ["all", "spectral"])
@pytest.mark.parametrize("forge", ["absent_layer", "other_width"])
def test_lopes_refuses_records_of_layers_the_teacher_lacks_or_of_other_widths(mlp_teacher, meta_all, tmp_path, forge,
                                                                             records):
    """A forged file may copy the teacher's digest: the layers it names must still be the teacher's own (its
    true records pass the same check)."""
    model, meta = load_model(mlp_teacher)
    frozen = FrozenTeacher(model, meta["input_shape"], meta["classes"], meta["normalisation"]["mean"],
                           meta["normalisation"]["std"])
    true = meta_all
    if records == "spectral":
        true = tmp_path / "spectral.safetensors"
        api.metadata(mlp_teacher, records="spectral", modes=4, out=true, quiet=True)
    Lopes(metadata=str(true)).check_teacher(frozen)
    tensors, info = load_tensors(true, "distillab.teacher-records")
    rename = {"features.1": "features.9"} if forge == "absent_layer" else {"features.1": "features.3",
                                                                          "features.3": "features.1"}
    tensors = {rename.get(k.split("/", 1)[0], k.split("/", 1)[0]) + "/" + k.split("/", 1)[1]: v
               for k, v in tensors.items()}
    info["layers"] = [rename.get(p, p) for p in info["layers"]]
    save_tensors(tmp_path / "forged.safetensors", tensors, info)
    with pytest.raises(DistillabError, match="does not have" if forge == "absent_layer" else "another width") as e:
        Lopes(metadata=str(tmp_path / "forged.safetensors")).check_teacher(frozen)
    assert "\n" not in str(e.value)


def _forge_settings(tensors: dict, meta: dict, forge: str) -> bool:
    """The forgeries of the records' settings and factors, in place; False for any other forgery."""
    if forge == "temperature_inf":
        meta["temperature"] = float("inf")
    elif forge == "norm_text":
        meta["normalisation"] = {"mean": ["0.5"], "std": ["0.2"]}
    elif forge == "std_zero":
        meta["normalisation"] = {**meta["normalisation"], "std": [0.0]}
    elif forge in ("chol_flipped", "chol_times_minus_1e30"):
        chol = next(k for k in tensors if k.endswith("/chol"))
        tensors[chol] = tensors[chol] * -1e30
    else:
        return False
    return True


def _forge_records(meta_all, path, forge):
    """A copy of the teacher's true 'all' records (its digest included) with one forgery."""
    tensors, meta = load_tensors(meta_all, "distillab.teacher-records")
    if _forge_settings(tensors, meta, forge):
        pass
    elif forge == "records_50mb":  # a layer the teacher has, recorded 1,150 wide with a full factor: 53 MB
        d, k = 1150, len(meta["classes"])
        tensors = {n: v for n, v in tensors.items() if not n.startswith("features.1/")}
        tensors["features.1/mean"] = torch.zeros(k, d)
        tensors["features.1/chol"] = 0.1 * torch.eye(d).expand(k, d, d).contiguous()
    else:
        rename = {"features.1": "features.9"} if forge == "absent_layer" else {"features.1": "features.3",
                                                                              "features.3": "features.1"}
        tensors = {rename.get(n.split("/", 1)[0], n.split("/", 1)[0]) + "/" + n.split("/", 1)[1]: v
                   for n, v in tensors.items()}
        meta["layers"] = [rename.get(p, p) for p in meta["layers"]]
    save_tensors(path, tensors, meta)
    return path


LOPES_FORGED = {  # forgery: fragment of the one line it ends in
    "temperature_inf": "'temperature' must be a finite number > 0",
    "norm_text": "'normalisation' must give a finite mean and a positive std",
    "std_zero": "'normalisation' must give a finite mean and a positive std",
    "chol_times_minus_1e30": "holds values beyond 1e+08",
    "records_50mb": "records layer(s) features.1 at another width",
    "absent_layer": "records layer(s) features.9 that the teacher does not have",
    "other_width": "at another width than the teacher's",
}


@pytest.mark.parametrize("forge, fragment", [pytest.param(k, v, id=k) for k, v in LOPES_FORGED.items()])
def test_datafree_lopes_from_forged_metadata_is_one_line_exit_2_and_writes_nothing(cli, mlp_teacher, meta_all,
                                                                                   tmp_path, forge, fragment):
    forged = _forge_records(meta_all, tmp_path / "forged.safetensors", forge)
    if forge == "records_50mb":
        assert forged.stat().st_size > 50_000_000
    r = cli("datafree", "--teacher", mlp_teacher, "--method", f"lopes:metadata={forged},batch=50", "--iterations", 5,
            "--samples", 100, "--student", "mlp:hidden=8", "--epochs", 1, "--out", tmp_path / "run")
    assert_one_line_error(r, fragment)
    assert "internal error" not in r.err and sorted(p.name for p in tmp_path.iterdir()) == ["forged.safetensors"]


# ---- the contract over every data-free method ----


@pytest.fixture(scope="module")
def bn_teacher():
    return contract_teacher("batch")


@pytest.mark.parametrize("name", DATAFREE.names())
def test_every_datafree_method_meets_the_contract(name, bn_teacher, tmp_path):
    teacher, splits = bn_teacher
    options = {}
    if name == "lopes":
        path = tmp_path / "meta.safetensors"
        stats = record(teacher.model, splits.train.x, splits.train.y, teacher.num_classes, "all")
        TeacherRecords("all", 1.0, teacher.classes, teacher.input_shape, teacher.mean, teacher.std, teacher.digest,
                       stats=stats).save(path, len(splits.train))
        options["metadata"] = str(path)
    check_datafree(DATAFREE.get(name), teacher, options)


def test_balanced_labels_are_as_even_as_the_count_allows():
    for k, n in ((10, 100), (10, 105), (3, 7)):
        counts = torch.bincount(balanced_labels(k, n), minlength=k)
        assert int(counts.sum()) == n and int(counts.max() - counts.min()) <= 1


def test_deepinversion_matches_the_batchnorm_statistics(bn_teacher):
    """With the BN term alone the optimised batch's statistics move to the running ones: the term does its job."""
    from distillab.datafree.methods.deepinversion import DeepInversion

    teacher, _ = bn_teacher
    bn = [m for m in teacher.model.modules() if isinstance(m, nn.BatchNorm2d)][0]
    seen = {}
    hook = bn.register_forward_hook(lambda m, i, o: seen.__setitem__("x", i[0].detach()))

    def gap(x):
        teacher(x)
        a = seen["x"]
        return float((a.mean((0, 2, 3)) - bn.running_mean).norm() + (a.var((0, 2, 3)) - bn.running_var).norm())

    start = torch.randn(64, *teacher.input_shape, generator=torch.Generator().manual_seed(0))
    x, _ = DeepInversion(samples=64, batch=64, iterations=60, tv=0, l2=0, jitter=0).run(
        teacher, 64, torch.Generator().manual_seed(0))
    hook_gap = gap(x)
    start_gap = gap(start)
    hook.remove()
    assert hook_gap < 0.5 * start_gap, (hook_gap, start_gap)


# ---- commands ----


def test_datafree_from_the_cli_writes_the_transfer_set_and_the_student(cli, mlp_teacher, tmp_path):
    out = tmp_path / "run"
    r = cli("datafree", "--teacher", mlp_teacher, "--method", "noise", "--samples", 400, "--student",
            "mlp:hidden=16", "--epochs", 2, "--out", out)
    assert r.code == 0, r.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"test_accuracy", "teacher_test_accuracy", "teacher_agreement_held_out"} <= set(metrics)
    assert metrics["teacher_mode"] == "cached"  # fixed transfer images: the teacher answers each once
    transfer = api.load(out / "transfer.safetensors")
    assert len(transfer.labels) == metrics["transfer_images"] == 400
    assert transfer.meta["budget"]["real_images_read"] == 0 and (out / "transfer.png").exists()
    student = api.load(out / "model.safetensors")
    assert student.distillab["recipe"]["method"]["name"] == "noise"
    # the student learned the teacher's answers on the transfer set, not labels from real data
    teacher = api.load(mlp_teacher)
    with torch.no_grad():
        assert torch.equal(transfer.labels, teacher(transfer.images).argmax(1))


def test_the_teacher_is_cached_on_fixed_transfer_images_and_live_under_augmentation(mlp_teacher, tmp_path):
    kwargs = dict(method="noise", samples=1000, student="mlp:hidden=32", epochs=10, quiet=True)
    cached = api.distill_datafree(mlp_teacher, out=tmp_path / "c", **kwargs)
    live = api.distill_datafree(mlp_teacher, out=tmp_path / "l", augment="shift:1", **kwargs)
    assert live.metrics["teacher_mode"] == "live" and cached.metrics["teacher_mode"] == "cached"
    assert cached.metrics["test_accuracy"] > 0.2 and 0 < live.metrics["test_accuracy"] <= 1


def test_dafl_terms_reward_even_classes_confidence_and_strong_features():
    """DAFL's generator loss (Chen et al. 2019): each term lower for what the generator should make."""
    from distillab.datafree.methods.dafl import DAFL, dafl_terms

    k = 10
    feats = torch.ones(k, 4)
    even = dafl_terms(30.0 * torch.eye(k), feats)             # confident, one image per class
    one_class = dafl_terms(30.0 * torch.eye(k)[[0] * k], feats)  # confident, every image class 0
    assert float(even["balance"]) == pytest.approx(-torch.log(torch.tensor(float(k))).item(), abs=1e-3)
    assert float(one_class["balance"]) == pytest.approx(0.0, abs=1e-3)
    assert float(even["one_hot"]) < float(dafl_terms(torch.zeros(k, k), feats)["one_hot"])  # unsure: higher
    assert float(dafl_terms(even["one_hot"].new_zeros(k, k), 3 * feats)["activation"]) == pytest.approx(-3.0)
    weighted = DAFL(oh=1.0, activation=0.1, balance=5.0).objective(30.0 * torch.eye(k), feats)
    assert float(weighted) == pytest.approx(float(even["one_hot"] - 0.1 * 1.0 + 5.0 * even["balance"]), rel=1e-5)


def test_the_same_seed_gives_the_same_student(mlp_teacher, tmp_path):
    runs = [api.distill_datafree(mlp_teacher, method="dafl:iterations=5,batch=16,width=4", samples=200,
                         student="mlp:hidden=8", epochs=1, out=tmp_path / f"r{i}", quiet=True) for i in range(2)]
    from safetensors.torch import load_file

    first, second = (load_file(str(r.out / "model.safetensors")) for r in runs)
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("args, fragment", [
    (["--method", "deepinversion"], "needs a teacher with BatchNorm"),
    (["--method", "lopes"], "lopes needs metadata=FILE"),
    (["--method", "noise", "--iterations", "5"], "--iterations does not apply to the noise method"),
    (["--method", "dafl:iterations=3", "--iterations", "5"], "both set iterations"),
    (["--method", "noise", "--samples", "3"], "--samples must be at least the number of classes"),
    (["--method", "nope"], "unknown data-free method 'nope'"),
])
def test_bad_datafree_calls_are_one_line_errors_and_write_nothing(cli, mlp_teacher, tmp_path, args, fragment):
    out = tmp_path / "run"
    r = cli("datafree", "--teacher", mlp_teacher, "--student", "mlp:hidden=8", "--epochs", 1, "--out", out, *args)
    assert_one_line_error(r, fragment)
    assert not out.exists() and not list(tmp_path.glob(".run*"))


def test_lopes_end_to_end_from_the_cli(cli, mlp_teacher, meta_all, tmp_path):
    r = cli("datafree", "--teacher", mlp_teacher, "--method", f"lopes:metadata={meta_all},batch=50",
            "--iterations", 5, "--samples", 100, "--student", "mlp:hidden=8", "--epochs", 1, "--out", tmp_path / "r")
    assert r.code == 0, r.err
    transfer = api.load(tmp_path / "r" / "transfer.safetensors")
    assert transfer.meta["made_as"] == balanced_labels(10, 100).tolist()


@pytest.mark.parametrize("args, fragment", [
    (["--records", "top", "--temperature", "0"], "--temperature must be a finite number > 0"),
    (["--records", "top", "--data", "npz:{npz}"], "takes inputs of shape"),
    (["--records", "all", "--out", "{tmp}/x.npz"], "must name a .safetensors file"),
    (["--records", "all", "--data", "npz:{unlabeled}"], "no labels"),
])
def test_bad_metadata_calls_are_one_line_errors(cli, mlp_teacher, tmp_path, args, fragment):
    import numpy as np

    from conftest import write_npz

    npz = write_npz(tmp_path / "d.npz", size=6)
    np.savez(tmp_path / "u.npz", x=np.random.default_rng(0).random((30, 8, 8)).astype(np.float32))
    args = [a.format(npz=npz, tmp=tmp_path, unlabeled=tmp_path / "u.npz") for a in args]
    out = tmp_path / "m.safetensors"
    r = cli("metadata", mlp_teacher, *args, *([] if "--out" in args else ["--out", out]))
    assert_one_line_error(r, fragment)
    assert not out.exists()


def test_lenet5_takes_batchnorm_and_keeps_its_plain_weights_names():
    from distillab.models import build_model

    plain = build_model("lenet5", (1, 28, 28), 10, seeds.generator(0))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    bn = build_model("lenet5:norm=batch", (1, 28, 28), 10, seeds.generator(0))
    assert sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in bn.modules()) == 4
    assert float(bn.features[1].running_mean.abs().sum()) == 0  # building it ran no batch through BatchNorm
    assert model_digest(plain) == model_digest(build_model("lenet5", (1, 28, 28), 10, seeds.generator(0)))


def test_the_student_never_sees_the_real_training_images(mlp_teacher, tmp_path, monkeypatch):
    """The real training and validation images are poisoned (NaN): a datafree run that touched them would train
    a NaN student; only the test split is read, to measure."""
    from distillab import data as data_mod

    real_split = data_mod.split

    def poisoned(*args, **kwargs):
        s = real_split(*args, **kwargs)
        s.train.x.fill_(float("nan"))
        s.val.x.fill_(float("nan"))
        return s

    monkeypatch.setattr(data_mod, "split", poisoned)
    r = api.distill_datafree(mlp_teacher, method="noise", samples=1000, student="mlp:hidden=32", epochs=10,
                     out=tmp_path / "r", quiet=True)
    assert r.metrics["test_accuracy"] > 0.5 and all(bool(torch.isfinite(p).all()) for p in r.model.parameters())
